"""End-to-end protection of commands: loss, repetition, reordering, corruption and staleness detected."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.runtime import wire
from edgert.runtime.e2e import CLOCK_SKEW_NS, CommandChecker, Verdict
from edgert.runtime.wire import MsgType, Stamp

NOW = 10_000_000_000
DEADLINE = 66_000_000


def cmd(seq: int, age_ns: int = 5_000_000) -> bytes:
    """A command with sequence number `seq` whose frame is `age_ns` old at NOW (negative: from the future)."""
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
    # The jump alone is not trusted (a forged counter looks the same); the next one in sequence confirms it.
    assert ch.check(cmd(90_000), NOW)[1] is Verdict.SYNC
    assert ch.check(cmd(90_001), NOW)[1] is Verdict.OK
    assert ch.counters.resyncs == 1 and ch.counters.lost == 0


def test_sender_restart_with_a_lower_counter_resynchronises():
    """A rebooted host restarts CLOCK_MONOTONIC, so a restarted sender's counter may be far behind:
    the receiver must follow it after `sync_after` commands, not call it reordered forever."""
    ch = CommandChecker(DEADLINE)
    for s in range(5_000_000, 5_000_010):
        ch.check(cmd(s), NOW)
    verdicts = [ch.check(cmd(s), NOW)[1] for s in range(1_000, 1_005)]
    assert verdicts == [Verdict.REORDERED] + [Verdict.OK] * 4
    assert ch.counters.resyncs == 1


def test_one_forged_counter_far_ahead_is_never_acted_on_and_costs_nothing():
    ch = CommandChecker(DEADLINE)
    assert [ch.check(cmd(s), NOW)[1] for s in (100, 101)] == [Verdict.OK] * 2
    assert ch.check(cmd(2**63), NOW)[1] is Verdict.SYNC  # CRC-valid, but far out of sequence
    assert [ch.check(cmd(s), NOW)[1] for s in (102, 103, 104)] == [Verdict.OK] * 3
    assert ch.counters.resyncs == 0 and ch.counters.unsynced == 1


def test_one_forged_counter_just_ahead_locks_out_at_most_sync_after_minus_one():
    ch = CommandChecker(DEADLINE, sync_after=2)
    ch.check(cmd(100), NOW)
    assert ch.check(cmd(150), NOW)[1] is Verdict.OK  # in the window: indistinguishable from loss
    # The genuine stream carries on from 101: one command refused, then followed again.
    assert [ch.check(cmd(s), NOW)[1] for s in (101, 102, 103)] == [Verdict.REORDERED, Verdict.OK, Verdict.OK]


def test_capture_stamp_from_the_future_refused():
    ch = CommandChecker(DEADLINE)
    assert ch.check(cmd(1, age_ns=-(CLOCK_SKEW_NS + 1)), NOW)[1] is Verdict.FUTURE
    assert ch.check(cmd(2, age_ns=-10**15), NOW)[1] is Verdict.FUTURE  # far in the future: never "fresh"
    assert ch.check(cmd(3, age_ns=-CLOCK_SKEW_NS), NOW)[1] is Verdict.OK  # within the documented skew
    assert ch.counters.future == 2


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
    verdicts = [ch.check(cmd(s), NOW)[1] for s in seqs]
    c = ch.counters
    assert c.ok + c.repeated + c.reordered + c.unsynced == len(seqs) and c.unsynced == 0  # no jump that large
    accepted = [s for s, v in zip(seqs, verdicts) if v is Verdict.OK]
    assert c.ok == len(accepted) and accepted[0] == seqs[0]
    # Each accepted command follows the one accepted before it, or was confirmed by the one before it
    # in the arrival order, repeats aside (sync_after = 2): never one out-of-sequence command on its own.
    prev_ok, prev = None, None
    for s, v in zip(seqs, verdicts):
        if v is Verdict.OK and prev_ok is not None and s <= prev_ok:
            assert prev is not None and 0 < s - prev < 10_000
        if v is Verdict.OK:
            prev_ok = s
        if v is not Verdict.REPEATED:
            prev = s


@settings(max_examples=300, deadline=None)
@given(junk=st.lists(st.integers(1, 2**64 - 1), max_size=20), start=st.integers(1, 2**62),
       sync_after=st.integers(1, 4))
def test_a_genuine_stream_is_followed_within_sync_after_commands_whatever_came_before(junk, start, sync_after):
    """Any CRC-valid counters (forged, replayed, from a restarted sender), then a genuine in-order stream:
    the receiver acts on the genuine stream from its `sync_after`-th command on (one later where the last
    accepted counter equals a genuine one: that one is a repeat), and on every one after."""
    ch = CommandChecker(DEADLINE, sync_after=sync_after)
    for s in junk:
        ch.check(cmd(s), NOW)
    verdicts = [ch.check(cmd(s), NOW)[1] for s in range(start, start + sync_after + 5)]
    first_ok = verdicts.index(Verdict.OK)
    assert first_ok <= sync_after and verdicts[first_ok:] == [Verdict.OK] * (len(verdicts) - first_ok)
