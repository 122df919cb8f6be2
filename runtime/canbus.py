"""Commands as CAN frames, protected end to end the way AUTOSAR E2E Profile 1 does it.

One classic CAN frame (8 bytes, standard id, default 0x2E4) per command:
    0-1  steering angle, int16 big-endian, 1 mrad per bit (saturated)
    2-3  acceleration, int16 big-endian, 1 mm/s^2 per bit (saturated)
    4    flags: bit0 TAKEOVER, bit1 FAILSAFE; bits 4-7 takeover reason
    5    alive counter in bits 0-3 (the command's sequence number mod 16)
    6    age of the frame behind the command at send, ms (saturated at 255; 0 = none)
    7    CRC-8 SAE J1850 over the data id (2 bytes, the CAN id) and bytes 0-6
The layout is also `edgert_command.dbc` beside this file (`DBC_PATH`), for CAN tools and ECU
suppliers; a test decodes real frames with cantools against it. `CanChecker` rejects a bad CRC
and detects lost, repeated and reordered frames from the alive counter. `CanReceiver` is the
whole receiver an EPS or brake ECU runs (docs/wire.md, "CAN command frame"): those checks, the
frame's age, resynchronisation after a counter jump, and its own timeout, so a control stage that
hangs (or a link that breaks) becomes a takeover at the actuator within one deadline of the last
valid frame, whatever the sender still believes. The bus is python-can's, so SocketCAN, vendor
adapters and the virtual bus of the tests all work the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import can
from crc import Calculator, Crc8

from edgert.runtime.config import CAN_AGE_SATURATED_MS
from edgert.runtime.e2e import Verdict
from edgert.runtime.errors import EdgertError
from edgert.runtime.paths import dbc_file
from edgert.runtime.wire import CommandFlags

DEFAULT_ID = 0x2E4
DBC_PATH = dbc_file()
MAX_DELTA_COUNTER = 3  # alive counter steps accepted as "in sequence" (2 frames lost at most), as in E2E Profile 1
SYNC_FRAMES = 2  # frames in sequence that re-establish the stream after a counter jump
AGE_SATURATED_MS = CAN_AGE_SATURATED_MS  # the age byte's ceiling: "255 ms or older", stale for any timeout
_CRC = Calculator(Crc8.SAEJ1850.value, optimized=True)
_I16 = (-32768, 32767)


def _sat16(v: float, per_bit: float) -> int:
    return int(min(max(round(v / per_bit), _I16[0]), _I16[1]))


def encode(steer_rad: float, accel_mps2: float, flags: int, reason: int, seq: int, age_ns: int,
           can_id: int = DEFAULT_ID) -> bytes:
    body = struct.pack(">hhBBB", _sat16(steer_rad, 1e-3), _sat16(accel_mps2, 1e-3),
                       (flags & 0x3) | ((reason & 0xF) << 4), seq & 0xF,
                       min(max(age_ns, 0) // 1_000_000, AGE_SATURATED_MS))
    return body + bytes([_CRC.checksum(can_id.to_bytes(2, "big") + body)])


@dataclass
class CanCommand:
    steer_rad: float
    accel_mps2: float
    flags: int
    reason: int
    counter: int
    age_ms: int


class CanError(EdgertError, ValueError):
    """A CAN command frame that failed its end-to-end check."""


def decode(data: bytes, can_id: int = DEFAULT_ID) -> CanCommand:
    if len(data) != 8:
        raise CanError(f"command frame has {len(data)} bytes, expected 8")
    if _CRC.checksum(can_id.to_bytes(2, "big") + data[:7]) != data[7]:
        raise CanError("command frame failed its CRC-8 (SAE J1850) check")
    steer, accel, fl, counter, age = struct.unpack(">hhBBB", data[:7])
    return CanCommand(steer * 1e-3, accel * 1e-3, fl & 0x3, fl >> 4, counter & 0xF, age)


class CanChecker:
    """Receiver side: CRC, and the 4-bit alive counter's continuity (loss, repetition, reordering)."""

    def __init__(self, can_id: int = DEFAULT_ID) -> None:
        self.can_id = can_id
        self.last: int | None = None
        self.ok = self.corrupted = self.repeated = self.lost = 0

    def check(self, data: bytes) -> CanCommand | None:
        try:
            cmd = decode(data, self.can_id)
        except CanError:
            self.corrupted += 1
            return None
        if self.last is not None:
            step = (cmd.counter - self.last) % 16
            if step == 0:
                self.repeated += 1
                return None
            self.lost += step - 1  # a step of 2..15: frames lost (or, past 8, a reordered stale one)
        self.last = cmd.counter
        self.ok += 1
        return cmd


@dataclass
class CanRxCounters:
    ok: int = 0
    corrupted: int = 0  # CRC failed (or a frame of the wrong length)
    repeated: int = 0  # alive counter did not move
    unsynced: int = 0  # after a counter jump, before SYNC_FRAMES frames in sequence re-established it
    stale: int = 0  # the frame behind the command was older than the timeout when it was sent
    lost: int = 0  # frames missing between two in-sequence ones
    resyncs: int = 0
    timeouts: int = 0  # times no valid frame came within the timeout: takeover by the receiver itself


class CanReceiver:
    """The actuator side of the command frame: what an EPS or brake ECU accepts, and when it takes over.

    A frame is valid when its CRC-8 (over the data id and bytes 0-6) holds, its alive counter moved
    on by 1..`max_delta` from the last valid frame, and the camera frame behind it was no older than
    `timeout_ns` when it was sent (a saturated age, 255 ms, never is; fail-safe frames carry age 0).
    After any other counter step it resynchronises: `sync_frames` frames in a row in sequence, the
    first of them included, before it acts again. A valid frame holds until the camera frame behind
    it is `timeout_ns` old (arrival + timeout - its age at send); after that, without a newer valid
    frame, the stream is lost and the receiver takes over by itself (`lost`, `takeover`) until a
    valid frame comes again. The clock is the receiver's own (`now_ns`): nothing here trusts the
    sender to still be running.
    """

    def __init__(self, timeout_ns: int, can_id: int = DEFAULT_ID, max_delta: int = MAX_DELTA_COUNTER,
                 sync_frames: int = SYNC_FRAMES) -> None:
        if timeout_ns <= 0 or not 1 <= max_delta <= 14 or sync_frames < 1:
            raise ValueError(f"CanReceiver: timeout_ns ({timeout_ns}) must be > 0, max_delta ({max_delta}) "
                             f"1..14, sync_frames ({sync_frames}) >= 1")
        self.timeout_ns, self.can_id = int(timeout_ns), can_id
        self.max_delta, self.sync_frames = max_delta, sync_frames
        self.last: int | None = None  # alive counter of the last valid frame
        self._cand: int | None = None  # resynchronisation candidate (counter of the newest out-of-sequence frame)
        self._cand_run = 0
        self.command: CanCommand | None = None  # the last valid command
        self.valid_until_ns = 0  # when it expires (0 = nothing received yet: not engaged)
        self.last_valid_ns = 0  # arrival of the last valid frame
        self.lost_since_ns = 0  # when the stream was declared lost (0 = it is not)
        self.counters = CanRxCounters()

    def _in_sequence(self, counter: int, after: int) -> bool:
        return 0 < (counter - after) % 16 <= self.max_delta

    def _sequence(self, counter: int) -> Verdict | None:
        c = self.counters
        if self.last is None or self._in_sequence(counter, self.last):
            if self.last is not None:
                c.lost += (counter - self.last) % 16 - 1
            self.last, self._cand_run = counter, 0
            return None
        if counter == self.last:
            c.repeated += 1
            return Verdict.REPEATED
        self._cand_run = self._cand_run + 1 if self._cand_run and self._cand is not None \
            and self._in_sequence(counter, self._cand) else 1
        self._cand = counter
        if self._cand_run >= self.sync_frames:
            c.resyncs += 1
            self.last, self._cand_run = counter, 0
            return None
        c.unsynced += 1
        return Verdict.SYNC

    def receive(self, data: bytes, now_ns: int) -> tuple[CanCommand | None, Verdict]:
        """Check one frame that arrived at now_ns: (the command, OK) if it may be acted on, else why not."""
        try:
            cmd = decode(data, self.can_id)
        except CanError:
            self.counters.corrupted += 1
            return None, Verdict.CORRUPTED
        why_not = self._sequence(cmd.counter)
        if why_not is not None:
            return cmd, why_not
        age_ns = cmd.age_ms * 1_000_000
        if age_ns > self.timeout_ns or cmd.age_ms == AGE_SATURATED_MS:
            self.counters.stale += 1
            return cmd, Verdict.STALE
        self.counters.ok += 1
        self.command = cmd
        self.last_valid_ns = now_ns
        self.valid_until_ns = now_ns + self.timeout_ns - age_ns
        self.lost_since_ns = 0
        return cmd, Verdict.OK

    def lost(self, now_ns: int) -> bool:
        """True once the last valid frame has expired with no newer one: the link or the sender is gone."""
        if not self.valid_until_ns or now_ns <= self.valid_until_ns:
            return False
        if not self.lost_since_ns:
            self.lost_since_ns = self.valid_until_ns
            self.counters.timeouts += 1
        return True

    def takeover(self, now_ns: int) -> bool:
        """True while the driver must take over: the stream is lost, or its last valid frame asks for it."""
        return self.lost(now_ns) or (self.command is not None and bool(self.command.flags & CommandFlags.TAKEOVER))


class CanSink:
    """Sends each command as one CAN frame on a python-can bus."""

    def __init__(self, interface: str, channel: str, can_id: int = DEFAULT_ID) -> None:
        try:
            self.bus = can.Bus(interface=interface, channel=channel)
        except (can.CanError, OSError, ValueError) as e:
            raise ValueError(f"control.can_interface/can_channel: cannot open {interface} bus {channel!r}: {e}. "
                             "On Linux: `ip link add dev vcan0 type vcan && ip link set up vcan0` for a virtual "
                             "SocketCAN bus, or use can_interface = \"virtual\"") from None
        self.can_id = can_id
        self.errors = 0

    def send(self, steer: float, accel: float, flags: int, reason: int, seq: int, age_ns: int) -> None:
        msg = can.Message(arbitration_id=self.can_id, is_extended_id=False,
                          data=encode(steer, accel, flags, reason, seq, age_ns, self.can_id))
        try:
            self.bus.send(msg, timeout=0.005)
        except can.CanError:
            self.errors += 1  # bus off or full: counted; the ZeroMQ command stream is unaffected

    def close(self) -> None:
        self.bus.shutdown()
