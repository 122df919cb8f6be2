"""Receiver-side end-to-end protection of the command stream (in the spirit of AUTOSAR E2E).

Every command carries a CRC-32 over its fixed layout, a sequence counter, the frame it was
computed from and that frame's capture stamp. A receiver (an actuator, the simulator, the
telemetry) runs each message through `CommandChecker` and acts only on what it accepts:
corruption, repetition and reordering are rejected, loss is counted, and a command whose
frame is older than the receiver's own limit is refused as stale, whatever the sender
thought. A sequence jump larger than `resync_after` is a restarted sender (its sequence
restarts from the clock): counted as a resync, not as thousands of lost commands.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np

from runtime import wire
from runtime.wire import MsgType, Stamp, WireError


class Verdict(enum.Enum):
    OK = "ok"
    CORRUPTED = "corrupted"  # failed wire validation (CRC, length, magic, values)
    REPEATED = "repeated"  # same sequence number as the last accepted command
    REORDERED = "reordered"  # older sequence number than the last accepted command
    STALE = "stale"  # its frame is older than this receiver accepts


@dataclass
class E2ECounters:
    ok: int = 0
    corrupted: int = 0
    repeated: int = 0
    reordered: int = 0
    stale: int = 0
    lost: int = 0  # sequence numbers never received
    resyncs: int = 0  # sender restarts seen


class CommandChecker:
    def __init__(self, max_age_ns: int, resync_after: int = 1000) -> None:
        self.max_age_ns = max_age_ns
        self.resync_after = resync_after
        self.last_seq = 0
        self.counters = E2ECounters()

    def check(self, buf: bytes, now_ns: int | None = None) -> tuple[np.void | None, Verdict]:
        """(the command, OK) if it may be acted on; else (None or the command, why not)."""
        c = self.counters
        try:
            rec = wire.decode(buf, MsgType.COMMAND)
        except WireError:
            c.corrupted += 1
            return None, Verdict.CORRUPTED
        seq = int(rec["seq"])
        if self.last_seq:
            if seq == self.last_seq:
                c.repeated += 1
                return rec, Verdict.REPEATED
            if seq < self.last_seq:
                c.reordered += 1
                return rec, Verdict.REORDERED
            gap = seq - self.last_seq - 1
            if gap >= self.resync_after:
                c.resyncs += 1
            else:
                c.lost += gap
        self.last_seq = seq
        capture = int(rec["stamps"][Stamp.CAPTURE])
        now = time.monotonic_ns() if now_ns is None else now_ns
        if capture and now - capture > self.max_age_ns:
            c.stale += 1
            return rec, Verdict.STALE
        c.ok += 1
        return rec, Verdict.OK
