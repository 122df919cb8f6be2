"""Commands as CAN frames, protected end to end the way AUTOSAR E2E Profile 1 does it.

One classic CAN frame (8 bytes, standard id, default 0x2E4) per command:
    0-1  steering angle, int16 big-endian, 1 mrad per bit (saturated)
    2-3  acceleration, int16 big-endian, 1 mm/s^2 per bit (saturated)
    4    flags: bit0 TAKEOVER, bit1 FAILSAFE; bits 4-7 takeover reason
    5    alive counter in bits 0-3 (the command's sequence number mod 16)
    6    age of the frame behind the command at send, ms (saturated at 255; 0 = none)
    7    CRC-8 SAE J1850 over the data id (2 bytes, the CAN id) and bytes 0-6
A receiver (`CanChecker`) rejects a bad CRC and detects lost, repeated and reordered
frames from the alive counter, as an EPS or brake ECU would. The bus is python-can's, so
SocketCAN, vendor adapters and the virtual bus of the tests all work the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import can
from crc import Calculator, Crc8

DEFAULT_ID = 0x2E4
_CRC = Calculator(Crc8.SAEJ1850, optimized=True)
_I16 = (-32768, 32767)


def _sat16(v: float, per_bit: float) -> int:
    return int(min(max(round(v / per_bit), _I16[0]), _I16[1]))


def encode(steer_rad: float, accel_mps2: float, flags: int, reason: int, seq: int, age_ns: int,
           can_id: int = DEFAULT_ID) -> bytes:
    body = struct.pack(">hhBBB", _sat16(steer_rad, 1e-3), _sat16(accel_mps2, 1e-3),
                       (flags & 0x3) | ((reason & 0xF) << 4), seq & 0xF, min(age_ns // 1_000_000, 255))
    return body + bytes([_CRC.checksum(can_id.to_bytes(2, "big") + body)])


@dataclass
class CanCommand:
    steer_rad: float
    accel_mps2: float
    flags: int
    reason: int
    counter: int
    age_ms: int


class CanError(ValueError):
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
