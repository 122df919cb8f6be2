"""The control stage fed streams of valid and adversarial results on a simulated clock.

Every command must be either a fresh model command (from the result just received, which was
fresh, valid and plausible) or a flagged fail-safe; nothing crashes the stage; and after any
such stream, `recover_after` good results bring model commands back. The stage is the real one
(its setup, decoding, watchdog and publisher on a real inproc socket); only the clock is
simulated (`ControlStage.clock`, `tick(msg, now)`), so the properties do not depend on timing.
"""

from __future__ import annotations

import pytest
import zmq
from conftest import StageHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgert.runtime import wire
from edgert.runtime.config import from_dict
from edgert.runtime.e2e import CLOCK_SKEW_NS
from edgert.runtime.stage import StageContext
from edgert.runtime.stages.control import STARTUP_GRACE_NS, ControlStage
from edgert.runtime.transport import subscriber
from edgert.runtime.wire import CameraState, CommandFlags, MsgType, ResultStatus, Stamp, TakeoverReason

MS = 1_000_000
T0 = 10**15  # the simulated clock's start (a host up for ~12 days)
U64 = 2**64 - 1
BAD_STATUSES = [s for s in ResultStatus if s != ResultStatus.OK]

# One event: (kind, frame-id choice, a number whose meaning depends on the kind, ms since the last event).
_EVENT = st.one_of(
    st.tuples(st.just("good"), st.just("next"), st.floats(0.0, 1.0)),  # fresh, valid: age as a fraction of the deadline
    st.tuples(st.just("skewed"), st.just("next"), st.integers(0, CLOCK_SKEW_NS)),  # valid, stamped just after now
    st.tuples(st.just("stale"), st.sampled_from(["next", "huge"]), st.integers(1, 10**10)),  # ns beyond the deadline
    st.tuples(st.just("future"), st.sampled_from(["next", "huge"]), st.integers(1, 2**62)),  # ns beyond the skew
    st.tuples(st.just("invalid"), st.sampled_from(["next", "huge"]), st.sampled_from(BAD_STATUSES)),
    st.tuples(st.just("implausible"), st.sampled_from(["next", "huge"]), st.floats(1.01, 100.0)),
    st.tuples(st.just("forged"), st.sampled_from(["huge", "ahead"]), st.integers(1, U64)),  # fresh and valid
    st.tuples(st.just("replayed"), st.just("behind"), st.integers(0, 50)),  # fresh and valid, an old id
    st.tuples(st.just("garbage"), st.just("-"), st.binary(max_size=200)),
    st.tuples(st.just("quiet"), st.just("-"), st.just(0)),  # no result this tick
    st.tuples(st.just("camera"), st.just("-"), st.sampled_from([CameraState.LOST, CameraState.OK])),  # source's word
)
EVENTS = st.lists(st.tuples(_EVENT, st.integers(0, 120)), max_size=30)


class SimControl:
    """A real ControlStage, stepped by hand on a simulated clock; its commands read from a real socket."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.h = StageHarness(cfg)
        self.now = T0
        ctx = StageContext(ControlStage.name, cfg, self.h.run_id, self.h.endpoints, self.h.zmq, self.h.stop)
        self.stage = ControlStage(ctx)
        self.stage.clock = lambda: self.now
        self.stage.setup()
        self.cmds = subscriber(self.h.zmq, self.h.endpoints, "commands")
        self.stage.watch_from_ns = T0 + STARTUP_GRACE_NS  # the supervisor's start signal, at T0
        self.rec = wire.new_message(MsgType.RESULT)

    def result(self, fid: int, capture_ns: int, value: float, status: ResultStatus = ResultStatus.OK,
               n_values: int = 1) -> bytes:
        r = self.rec
        r["frame_id"], r["status"], r["n_values"] = fid, int(status), n_values
        r["values"][:] = 0.0
        r["values"][self.stage.decoder.index] = value / self.stage.decoder.scale
        r["stamps"][:] = 0
        r["stamps"][Stamp.CAPTURE] = capture_ns
        return wire.encode(r)

    def camera(self, state: CameraState) -> None:
        """The source's `camera_state` message, as control's step hands it over before a tick."""
        m = wire.new_message(MsgType.CAMERA)
        m["state"], m["since_ns"], m["t_ns"], m["why"] = int(state), self.now, self.now, b"test: unplugged"
        self.stage.on_camera_state(wire.encode(m))

    def tick(self, msg: bytes | None) -> list:
        self.stage.tick(msg, self.now)
        out = []
        while self.cmds.poll(0):
            out.append(wire.decode(self.cmds.recv(zmq.NOBLOCK), MsgType.COMMAND))
        return out

    def close(self) -> None:
        self.cmds.close(0)
        self.stage.teardown()
        self.h.close()


@pytest.fixture
def cfg(tiny_model):
    return from_dict({"infer": {"model": str(tiny_model)}})  # the default deadline: two frame periods


def test_the_socket_sees_every_command(cfg):
    """The harness itself: a command sent right after subscribing arrives (inproc), so no property
    below passes because commands went missing."""
    sim = SimControl(cfg)
    try:
        got = sim.tick(sim.result(1, T0 - 5 * MS, 0.01))
        assert len(got) == 1 and int(got[0]["frame_id"]) == 1 and int(got[0]["flags"]) == 0
    finally:
        sim.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS)
def test_every_command_is_fresh_or_a_flagged_failsafe_and_control_recovers(cfg, events):
    sim = SimControl(cfg)
    deadline, recover_after = cfg.deadline_ns, cfg.control.recover_after
    max_steer = cfg.control.max_steer_rad
    genuine = 1000  # the camera's frame ids; adversarial ones are drawn around them
    last_seq = 0
    max_acted = last_acted = 0  # the highest frame id a model command came from, and the newest
    camera_lost = False  # what the source said last

    def check(cmds: list, fed: tuple | None) -> None:
        nonlocal last_seq, max_acted, last_acted
        assert len(cmds) <= 1  # at most one command per tick
        for c in cmds:
            assert int(c["seq"]) > last_seq
            last_seq = int(c["seq"])
            flags = int(c["flags"])
            if flags == 0:  # a model command: from the result of this very tick, which was fresh and valid
                assert fed is not None, "a model command without a result"
                assert not camera_lost, "a model command while the camera is lost"
                fid, capture, good = fed
                assert good, f"a model command from a result that was not fresh and valid: {fed}"
                assert int(c["frame_id"]) == fid and int(c["reason"]) == TakeoverReason.NONE
                assert fid != last_acted, "the same frame acted on twice in a row"
                assert 0 <= int(c["age_ns"]) <= deadline
                assert int(c["age_ns"]) == max(0, sim.now - capture)
                assert abs(float(c["steer"])) <= max_steer + 1e-6 and float(c["accel"]) == 0.0
                max_acted, last_acted = max(max_acted, fid), fid
            else:
                assert flags == int(CommandFlags.TAKEOVER | CommandFlags.FAILSAFE)
                assert int(c["reason"]) != TakeoverReason.NONE and int(c["frame_id"]) == 0
                assert float(c["accel"]) == -cfg.control.failsafe_decel_mps2

    try:
        for (kind, which, x), dt_ms in events:
            sim.now += dt_ms * MS
            now = sim.now
            if which == "next":
                genuine += 1
            fid = {"next": genuine, "huge": U64 - (x if isinstance(x, int) else 0) % 2**32,
                   "ahead": genuine + 1 + (x if isinstance(x, int) else 0) % 100,
                   "behind": max(1, genuine - (x if isinstance(x, int) else 0)), "-": 0}[which]
            msg, good = None, False
            if kind == "good":
                capture, good = now - int(x * deadline), True
                msg = sim.result(fid, capture, 0.1)
            elif kind == "skewed":
                capture, good = now + x, True
                msg = sim.result(fid, capture, 0.1)
            elif kind == "stale":
                capture = now - deadline - x
                msg = sim.result(fid, capture, 0.1)
            elif kind == "future":
                capture = now + CLOCK_SKEW_NS + x
                msg = sim.result(fid, capture, 0.1)
            elif kind == "invalid":
                capture = now - MS
                msg = sim.result(fid, capture, 0.0, status=x)
            elif kind == "implausible":
                capture = now - MS
                msg = sim.result(fid, capture, x)
            elif kind in ("forged", "replayed"):
                capture, good = now - MS, True
                msg = sim.result(fid if kind == "replayed" else (x if which == "huge" else fid), capture, -0.3)
                fid = int(wire.decode(msg, MsgType.RESULT)["frame_id"])
            elif kind == "garbage":
                msg, capture = x, 0
            elif kind == "camera":
                sim.camera(x)
                camera_lost, capture = x == CameraState.LOST, 0
            in_failsafe, above = bool(sim.stage.failsafe), fid > max_acted
            cmds = sim.tick(msg)
            check(cmds, (fid, capture, good) if msg is not None else None)
            if camera_lost:  # in fail-safe for the camera, whatever the results say, until it is back
                assert sim.stage.failsafe == TakeoverReason.CAMERA_LOST
            # nothing not acted on may have moved the frame id past it
            if good and above and not in_failsafe and not camera_lost:
                assert cmds and int(cmds[0]["flags"]) == 0 and int(cmds[0]["frame_id"]) == fid
        # Then the camera's genuine stream again: recover_after good results, one a frame period. A
        # genuine result whose id is the frame acted on last (a forged result took the id the camera
        # reaches now) is never acted on twice, so it costs the recovery one more result.
        if camera_lost:  # it comes back first
            sim.camera(CameraState.OK)
            camera_lost = False
        fed, needed = 0, recover_after
        while fed < needed:
            sim.now += sim.stage.period_ns
            genuine += 1
            if genuine == last_acted:
                needed += 1
            capture = sim.now - 5 * MS
            cmds = sim.tick(sim.result(genuine, capture, 0.1))
            check(cmds, (genuine, capture, True))
            fed += 1
        assert cmds and int(cmds[-1]["flags"]) == 0 and int(cmds[-1]["frame_id"]) == genuine, \
            f"no model command after {needed} good results (fail-safe {sim.stage.failsafe.name})"
    finally:
        sim.close()


def test_watchdog_on_the_simulated_clock_hands_over_one_deadline_after_the_last_fresh_frame(cfg):
    """The deadline, exactly: a frame captured at t is acted on until t + deadline, a takeover just after."""
    sim = SimControl(cfg)
    try:
        sim.now = T0 + 10 * MS
        capture = sim.now - 5 * MS
        assert int(sim.tick(sim.result(1, capture, 0.1))[0]["flags"]) == 0
        sim.now = capture + cfg.deadline_ns
        assert sim.tick(None) == []
        sim.now += 1
        fs = sim.tick(None)
        assert len(fs) == 1 and int(fs[0]["reason"]) == TakeoverReason.DEADLINE
    finally:
        sim.close()


def test_replayed_results_never_bring_the_last_frame_back(cfg):
    """recover_after fresh replays ending at the frame acted on last are not a resync onto it: that
    frame's command would go out twice. Older ids replayed that way are followed (they are fresh)."""
    sim = SimControl(cfg)
    try:
        for fid in (10, 11, 12):
            sim.now += sim.stage.period_ns
            assert int(sim.tick(sim.result(fid, sim.now - MS, 0.1))[0]["frame_id"]) == fid
        for fid in (10, 11, 12):
            sim.now += MS
            assert sim.tick(sim.result(fid, sim.now - MS, 0.1)) == []
        assert sim.stage.resyncs == 0
    finally:
        sim.close()
