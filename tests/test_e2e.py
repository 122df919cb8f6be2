"""End-to-end protection of commands: loss, repetition, reordering, corruption and staleness detected."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import wire
from runtime.e2e import CommandChecker, Verdict
from runtime.wire import MsgType, Stamp

NOW = 10_000_000_000
DEADLINE = 66_000_000


def cmd(seq: int, age_ns: int = 5_000_000) -> bytes:
    r = wire.new_message(MsgType.COMMAND)
    r["seq"], r["steer"] = seq, 0.01
    r["stamps"][Stamp.CAPTURE] = NOW - age_ns
    return wire.encode(r)


def test_in_order_stream_accepted():
    ch = CommandChecker(DEADLINE)
    assert [ch.check(cmd(s), NOW)[1] for s in range(100, 110)] == [Verdict.OK] * 10
    assert ch.counters.lost == 0 and ch.counters.ok == 10


def test_loss_repetition_reordering_detected():
    ch = CommandChecker(DEADLINE)
    verdicts = [ch.check(cmd(s), NOW)[1] for s in (1, 2, 5, 5, 4, 6)]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.OK, Verdict.REPEATED, Verdict.REORDERED, Verdict.OK]
    c = ch.counters
    assert (c.lost, c.repeated, c.reordered) == (2, 1, 1)


def test_stale_refused_even_if_the_sender_thought_it_fresh():
    ch = CommandChecker(DEADLINE)
    rec, verdict = ch.check(cmd(1, age_ns=DEADLINE + 1), NOW)
    assert verdict is Verdict.STALE and int(rec["seq"]) == 1
    assert ch.check(cmd(2, age_ns=1_000), NOW)[1] is Verdict.OK


def test_failsafe_commands_carry_no_frame_and_are_never_stale():
    ch = CommandChecker(DEADLINE)
    r = wire.new_message(MsgType.COMMAND)
    r["seq"], r["flags"] = 1, 3
    assert ch.check(wire.encode(r), NOW)[1] is Verdict.OK


def test_sender_restart_is_a_resync_not_mass_loss():
    ch = CommandChecker(DEADLINE, resync_after=1000)
    ch.check(cmd(500), NOW)
    assert ch.check(cmd(90_000), NOW)[1] is Verdict.OK
    assert ch.counters.resyncs == 1 and ch.counters.lost == 0


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 119), xor=st.integers(1, 255))
def test_any_corruption_detected(pos, xor):
    ch = CommandChecker(DEADLINE)
    buf = bytearray(cmd(7))
    buf[pos] ^= xor
    rec, verdict = ch.check(bytes(buf), NOW)
    assert rec is None and verdict is Verdict.CORRUPTED and ch.counters.corrupted == 1


@settings(max_examples=200, deadline=None)
@given(seqs=st.lists(st.integers(1, 500), min_size=1, max_size=60))
def test_counts_add_up_for_any_arrival_order(seqs):
    ch = CommandChecker(DEADLINE, resync_after=10_000)
    for s in seqs:
        ch.check(cmd(s), NOW)
    c = ch.counters
    assert c.ok + c.repeated + c.reordered == len(seqs)
    accepted = [s for i, s in enumerate(seqs) if s > max(seqs[:i], default=0)]
    assert c.ok == len(accepted)
    assert c.lost == (accepted[-1] - accepted[0] + 1) - len(accepted)
    assert np.all(np.diff(accepted) > 0)
