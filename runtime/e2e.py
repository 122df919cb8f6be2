"""Receiver-side end-to-end protection of the command stream (in the spirit of AUTOSAR E2E).

Every command carries a CRC-32 over its fixed layout, a sequence counter, the frame it was
computed from and that frame's capture stamp. A receiver (an actuator, the simulator, the
telemetry) runs each message through `CommandChecker` and acts only on what it accepts:
corruption, repetition and reordering are rejected, loss is counted, and a command whose
frame is older than the receiver's own limit is refused as stale, whatever the sender
thought. A capture stamp later than the receiver's clock (beyond `CLOCK_SKEW_NS`) is refused
too: every stage stamps with the host's CLOCK_MONOTONIC, so no genuine frame comes from the
future, and an age computed from one would be negative.

Sequence checking follows the AUTOSAR profiles' state machine: a counter that moves on by 1 to
`resync_after` - 1 is in sequence (the gap is counted as loss). Anything else (a jump of
`resync_after` or more, or a counter behind the last accepted one) is not acted on, but the
receiver keeps it as a candidate and resynchronises to it once `sync_after` commands in a row
are in sequence from it: a restarted sender (its sequence restarts from the clock) costs
`sync_after` - 1 commands, and one forged or corrupted-but-CRC-valid counter far ahead cannot
lock the receiver out of the genuine stream for longer than that.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np

from edgert.runtime import wire
from edgert.runtime.wire import MsgType, Stamp, WireError

# How far a capture stamp may lie after the receiver's clock. Stages stamp with one host clock,
# so a genuine stamp is never later than `now`; 1 ms covers a camera driver that stamps the end of
# its exposure from an estimate. A stamp later than that is forged or broken: never acted on.
CLOCK_SKEW_NS = 1_000_000


class Verdict(enum.Enum):
    OK = "ok"
    CORRUPTED = "corrupted"  # failed wire validation (CRC, length, magic, values)
    REPEATED = "repeated"  # same sequence number as the last accepted command
    REORDERED = "reordered"  # older sequence number than the last accepted command
    SYNC = "resync"  # a sequence jump, not (yet) confirmed by `sync_after` commands in sequence
    STALE = "stale"  # its frame is older than this receiver accepts
    FUTURE = "future"  # its capture stamp is later than this receiver's clock (beyond CLOCK_SKEW_NS)


@dataclass
class E2ECounters:
    ok: int = 0
    corrupted: int = 0
    repeated: int = 0
    reordered: int = 0
    unsynced: int = 0  # commands received while resynchronising (not acted on)
    stale: int = 0
    future: int = 0
    lost: int = 0  # sequence numbers never received
    resyncs: int = 0  # sender restarts (or forged counters) resynchronised to


class CommandChecker:
    def __init__(self, max_age_ns: int, resync_after: int = 1000, sync_after: int = 2) -> None:
        if resync_after < 2 or sync_after < 1:
            raise ValueError(f"CommandChecker: resync_after ({resync_after}) must be >= 2, "
                             f"sync_after ({sync_after}) >= 1")
        self.max_age_ns = max_age_ns
        self.resync_after = resync_after
        self.sync_after = sync_after
        self.last_seq = 0
        self._cand_seq = 0  # resynchronisation candidate: the newest out-of-sequence counter
        self._cand_run = 0  # commands in sequence from the candidate so far (0 = no candidate)
        self.counters = E2ECounters()

    def _in_sequence(self, seq: int, after: int) -> bool:
        return 0 < seq - after < self.resync_after

    def _sequence(self, seq: int) -> Verdict | None:
        """None if `seq` may be acted on (and becomes the last accepted), else why not."""
        c = self.counters
        if not self.last_seq or self._in_sequence(seq, self.last_seq):
            if self.last_seq:
                c.lost += seq - self.last_seq - 1
            self.last_seq, self._cand_run = seq, 0
            return None
        if seq == self.last_seq:
            c.repeated += 1
            return Verdict.REPEATED
        if self._cand_run and self._in_sequence(seq, self._cand_seq):
            self._cand_run += 1
        else:
            self._cand_run = 1
        self._cand_seq = seq
        if self._cand_run >= self.sync_after:  # confirmed: the sender restarted, or the last counter was forged
            c.resyncs += 1
            self.last_seq, self._cand_run = seq, 0
            return None
        if seq < self.last_seq:
            c.reordered += 1
            return Verdict.REORDERED
        c.unsynced += 1
        return Verdict.SYNC

    def check(self, buf: bytes, now_ns: int | None = None) -> tuple[np.void | None, Verdict]:
        """(the command, OK) if it may be acted on; else (None or the command, why not)."""
        c = self.counters
        try:
            rec = wire.decode(buf, MsgType.COMMAND)
        except WireError:
            c.corrupted += 1
            return None, Verdict.CORRUPTED
        why_not = self._sequence(int(rec["seq"]))
        if why_not is not None:
            return rec, why_not
        capture = int(rec["stamps"][Stamp.CAPTURE])
        now = time.monotonic_ns() if now_ns is None else now_ns
        if capture and capture - now > CLOCK_SKEW_NS:
            c.future += 1
            return rec, Verdict.FUTURE
        if capture and now - capture > self.max_age_ns:
            c.stale += 1
            return rec, Verdict.STALE
        c.ok += 1
        return rec, Verdict.OK
