"""Control stage on real sockets: clamping, rate limits, the deadline watchdog and takeover reasons."""

from __future__ import annotations

import time

import pytest
from conftest import StageHarness

from edgert.runtime import wire
from edgert.runtime.config import from_dict
from edgert.runtime.stages.control import ControlStage
from edgert.runtime.transport import publisher, subscriber
from edgert.runtime.wire import CameraState, CommandFlags, MsgType, ResultStatus, Stamp, TakeoverReason

PERIOD_S = 1 / 30


@pytest.fixture
def control(tiny_model):
    # A roomier deadline than the default two frame periods: the tests share 2 busy cores.
    cfg = from_dict({"infer": {"model": str(tiny_model)}, "control": {"deadline_ms": 250.0}})
    h = StageHarness(cfg)
    pub = publisher(h.zmq, h.endpoints, "results")
    h.camera_pub = publisher(h.zmq, h.endpoints, "camera_state")  # the camera source's word on its camera
    h.start(ControlStage)
    time.sleep(0.3)  # setup done and sockets connected
    cmds = subscriber(h.zmq, h.endpoints, "commands")
    time.sleep(0.2)  # subscription propagated
    h.send_start()  # the supervisor's start signal arms the watchdog
    rec = wire.new_message(MsgType.RESULT)
    rec["n_values"] = 1
    state = {"fid": 0}

    def send(value: float = 0.2, status: ResultStatus = ResultStatus.OK, age_s: float = 0.0,
             fid: int | None = None, raw: bytes | None = None) -> None:
        if raw is not None:
            pub.send(raw)
            return
        state["fid"] = fid if fid is not None else state["fid"] + 1
        rec["frame_id"], rec["status"] = state["fid"], int(status)
        rec["values"][0] = value
        rec["stamps"][:] = 0
        rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns() - int(age_s * 1e9)
        pub.send(wire.encode(rec))

    def recv(timeout_s: float = 1.0) -> list:
        out, end = [], time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cmds.poll(10):
                out.append(wire.decode(cmds.recv(), MsgType.COMMAND))
        return out

    yield h, send, recv
    h.camera_pub.close(0)
    pub.close(0)
    cmds.close(0)
    h.close()
    assert h.code == 0


def _drive(send, n: int, value: float = 0.2, **kw) -> None:
    for _ in range(n):
        send(value, **kw)
        time.sleep(PERIOD_S)


def test_commands_clamped_rate_limited_and_traceable(control):
    h, send, recv = control
    _drive(send, 15, value=0.9)  # beyond max_steer but plausible: clamped and ramped
    cmds = recv(0.1)
    assert len(cmds) >= 12
    steers = [float(c["steer"]) for c in cmds]
    assert max(steers) <= h.cfg.control.max_steer_rad + 1e-6
    assert all(b >= a - 1e-6 for a, b in zip(steers, steers[1:]))  # ramps up, never jumps
    rate = h.cfg.control.max_steer_rate_rad_s
    sent = [int(c["stamps"][Stamp.CTRL_SEND]) / 1e9 for c in cmds]
    for (a, b), (ta, tb) in zip(zip(steers, steers[1:]), zip(sent, sent[1:])):
        assert b - a <= rate * (tb - ta) + 1e-3  # never faster than the rate limit allows
    assert steers[0] <= rate / 30 + 1e-6  # the first command: one frame period's worth from neutral
    seqs = [int(c["seq"]) for c in cmds]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for c in cmds:
        assert int(c["flags"]) == 0 and int(c["frame_id"]) > 0
        st = c["stamps"]
        assert st[Stamp.CAPTURE] <= st[Stamp.CTRL_RECV] <= st[Stamp.CTRL_SEND]
        assert int(c["age_ns"]) == int(st[Stamp.CTRL_SEND] - st[Stamp.CAPTURE])


def test_deadline_watchdog_fails_safe_then_recovers(control):
    h, send, recv = control
    _drive(send, 10)
    cmds = recv(1.0)  # results stopped after the 10th
    t_last = max(int(c["stamps"][Stamp.CTRL_RECV]) for c in cmds if int(c["flags"]) == 0) / 1e9
    fs = [c for c in cmds if int(c["flags"]) & CommandFlags.FAILSAFE]
    assert fs, "no fail-safe command after results stopped"
    first = fs[0]
    assert int(first["flags"]) == int(CommandFlags.TAKEOVER | CommandFlags.FAILSAFE)
    assert int(first["reason"]) == TakeoverReason.DEADLINE
    assert float(first["accel"]) < 0
    # Within the deadline (+ one 10 ms poll and scheduling slack on a shared machine).
    t_first = first["stamps"][Stamp.CTRL_SEND] / 1e9
    assert h.cfg.deadline_ns / 1e9 <= t_first - t_last <= h.cfg.deadline_ns / 1e9 + 0.1
    # Fail-safe commands keep coming once per frame period, steering ramps toward neutral, never a re-send.
    assert len(fs) >= 8
    steers = [abs(float(c["steer"])) for c in fs]
    assert all(b <= a + 1e-6 for a, b in zip(steers, steers[1:]))
    assert len({int(c["seq"]) for c in fs}) == len(fs)
    assert all(int(c["frame_id"]) == 0 for c in fs)  # not computed from any frame
    # Recovery only after `recover_after` consecutive good results.
    _drive(send, 6)
    after = recv(0.2)
    normal = [c for c in after if int(c["flags"]) == 0]
    assert normal, "did not recover after good results"
    good_before_recovery = int(normal[0]["frame_id"]) - 10  # frames 11.. were sent after the gap
    assert good_before_recovery >= h.cfg.control.recover_after


def test_nonfinite_model_output_is_a_takeover(control):
    h, send, recv = control
    _drive(send, 5)
    send(0.0, status=ResultStatus.NONFINITE)
    cmds = recv(0.2)
    fs = [c for c in cmds if int(c["flags"]) & CommandFlags.FAILSAFE]
    assert fs and int(fs[0]["reason"]) == TakeoverReason.INVALID_RESULT
    assert h.stage.invalid == 1


@pytest.mark.parametrize("status, reason", [(ResultStatus.CAMERA_BLACKOUT, TakeoverReason.CAMERA_BLACKOUT),
                                            (ResultStatus.CAMERA_FROZEN, TakeoverReason.CAMERA_FROZEN),
                                            (ResultStatus.LIGHT_OUTSIDE_ODD, TakeoverReason.LIGHT_OUTSIDE_ODD)])
def test_a_camera_fault_hands_over_with_its_own_reason_and_recovers(control, status, reason):
    h, send, recv = control
    _drive(send, 5)
    send(0.0, status=status)
    fs = [c for c in recv(0.2) if int(c["flags"]) & CommandFlags.FAILSAFE]
    assert fs and int(fs[0]["reason"]) == reason and int(fs[0]["flags"]) & CommandFlags.TAKEOVER
    assert h.stage.failsafe == reason
    _drive(send, 3)  # good results again: model commands resume after control.recover_after (3) of them
    assert [c for c in recv(0.1) if int(c["flags"]) == 0], "3 consecutive good results must recover"


def test_stale_and_backwards_frames_never_commanded(control):
    h, send, recv = control
    _drive(send, 5)
    recv(0.05)
    send(0.4, age_s=1.0)  # captured a second ago: far beyond the deadline
    stale_id = 6
    time.sleep(0.05)
    send(0.4, fid=2)  # frame id going backwards
    time.sleep(0.05)
    cmds = recv(0.05)
    assert not [c for c in cmds if int(c["frame_id"]) in (stale_id, 2)]  # neither was acted on
    assert h.stage.stale == 1
    assert h.stage.rejected >= 1


def test_malformed_results_rejected_and_counted(control):
    h, send, recv = control
    send(raw=b"garbage")
    time.sleep(0.05)  # latest-only: a message still queued behind a newer one is skipped, never decoded
    good = wire.new_message(MsgType.RESULT)
    bad = bytearray(wire.encode(good))
    bad[30] ^= 0x55
    send(raw=bytes(bad))
    time.sleep(0.1)
    assert h.stage.rejected == 2
    assert recv(0.05) == []  # nothing commanded from garbage, and no watchdog before a first result


def test_only_stale_results_after_start_is_a_startup_takeover(control):
    """A pipeline too slow to ever meet the deadline must say so, not steer silently or stay mute."""
    h, send, recv = control
    for _ in range(40):
        send(0.1, age_s=1.0)
        time.sleep(PERIOD_S)
    cmds = recv(0.3)
    assert cmds and all(int(c["flags"]) & CommandFlags.TAKEOVER for c in cmds)
    assert int(cmds[0]["reason"]) == TakeoverReason.STARTUP
    assert h.stage.stale >= 30 and h.stage.dropped >= 30


def test_decoder_index_beyond_the_values_is_invalid(control):
    h, send, recv = control
    rec = wire.new_message(MsgType.RESULT)  # status OK but no values at all
    rec["frame_id"], rec["n_values"] = 100, 0
    rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
    send(raw=wire.encode(rec))
    cmds = recv(0.2)
    assert cmds and int(cmds[0]["reason"]) == TakeoverReason.INVALID_RESULT
    assert all(int(c["flags"]) & CommandFlags.FAILSAFE for c in cmds)


def test_recovery_needs_consecutive_good_results(control):
    h, send, recv = control
    _drive(send, 3)
    send(0.0, status=ResultStatus.NONFINITE)
    time.sleep(0.05)
    for kind in ("good", "stale", "good", "good"):  # the stale one breaks the streak
        send(0.2, age_s=1.0 if kind == "stale" else 0.0)
        time.sleep(0.05)
    cmds = recv(0.1)
    assert cmds and all(int(c["flags"]) & CommandFlags.FAILSAFE for c in cmds[-3:])
    assert h.stage.failsafe == TakeoverReason.INVALID_RESULT
    _drive(send, 3)
    assert [c for c in recv(0.1) if int(c["flags"]) == 0], "3 consecutive good results must recover"


def test_shutdown_sends_a_last_takeover_and_seq_survives_restart(tiny_model):
    cfg = from_dict({"infer": {"model": str(tiny_model)}})
    seqs = []
    for _ in range(2):  # the same stage twice, as after a restart
        h = StageHarness(cfg)
        h.start(ControlStage)
        time.sleep(0.3)
        cmds = subscriber(h.zmq, h.endpoints, "commands")
        time.sleep(0.2)
        h.send_start()
        time.sleep(0.1)
        h.stop.set()
        h.thread.join(10)
        assert cmds.poll(1000), "no command on shutdown"
        last = wire.decode(cmds.recv(), MsgType.COMMAND)
        assert int(last["reason"]) == TakeoverReason.SHUTDOWN and int(last["flags"]) & CommandFlags.TAKEOVER
        seqs.append(int(last["seq"]))
        cmds.close(0)
        h.close()
    assert seqs[1] > seqs[0]  # a restarted stage never reuses a sequence number


def test_implausible_model_output_is_a_takeover_not_a_clamp(control):
    h, send, recv = control
    _drive(send, 3)
    send(5.0)  # 5 rad of steering: no model output means that
    cmds = recv(0.2)
    fs = [c for c in cmds if int(c["flags"]) & CommandFlags.FAILSAFE]
    assert fs and int(fs[0]["reason"]) == TakeoverReason.INVALID_RESULT
    assert not [c for c in cmds if int(c["frame_id"]) == 4]


def test_first_command_ramps_from_the_measured_steer_not_from_neutral(tiny_model):
    """A restarted control stage finds the wheels at 0.3 rad: its first command must not step to 0."""
    cfg = from_dict({"infer": {"model": str(tiny_model)}, "control": {"deadline_ms": 250.0}})
    h = StageHarness(cfg)
    results = publisher(h.zmq, h.endpoints, "results")
    vehicle = publisher(h.zmq, h.endpoints, "vehicle")
    h.start(ControlStage)
    time.sleep(0.3)
    cmds = subscriber(h.zmq, h.endpoints, "commands")
    time.sleep(0.2)
    v = wire.new_message(MsgType.VEHICLE)
    v["steer"] = 0.3
    for _ in range(3):
        vehicle.send(wire.encode(v))
        time.sleep(0.02)
    r = wire.new_message(MsgType.RESULT)
    r["frame_id"], r["n_values"], r["values"][0] = 1, 1, 0.3
    r["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
    results.send(wire.encode(r))
    assert cmds.poll(1000)
    first = wire.decode(cmds.recv(), MsgType.COMMAND)
    for s in (results, vehicle, cmds):
        s.close(0)
    h.close()
    assert float(first["steer"]) == pytest.approx(0.3, abs=1e-6)  # no step: it starts where the wheels are


# -- one crafted but CRC-valid result cannot crash or lock out control (issue 17, point 4) ---------

def _result(fid: int, capture_ns: int, value: float = 0.2, status: ResultStatus = ResultStatus.OK) -> bytes:
    rec = wire.new_message(MsgType.RESULT)
    rec["frame_id"], rec["status"], rec["n_values"] = fid, int(status), 1
    rec["values"][0] = value
    rec["stamps"][Stamp.CAPTURE] = capture_ns
    return wire.encode(rec)


def _model_commands_resume(send, recv, first_fid: int) -> list:
    """Good results from first_fid on, one a frame period; the model commands they bring."""
    for fid in range(first_fid, first_fid + 6):
        send(0.2, fid=fid)
        time.sleep(PERIOD_S)
    return [c for c in recv(0.2) if int(c["flags"]) == 0]


def test_a_capture_stamp_from_the_future_is_rejected_not_a_crash(control):
    """A result stamped 10 s ahead used to be 'fresh' (negative age) and crash the stage on the
    negative command age; it must be rejected, and control must carry on."""
    h, send, recv = control
    _drive(send, 3)
    send(raw=_result(4, time.monotonic_ns() + 10**10))
    time.sleep(0.05)
    assert h.thread.is_alive(), "the control stage died on a result from the future"
    assert h.stage.future == 1 and h.stage.rejected == 1
    normal = _model_commands_resume(send, recv, 4)  # frame 4 again: the rejected one did not take its id
    assert [int(c["frame_id"]) for c in normal][-1] == 9 and 4 in [int(c["frame_id"]) for c in normal]
    assert all(int(c["age_ns"]) < h.cfg.deadline_ns for c in normal)


@pytest.mark.parametrize("kind", ["stale", "invalid", "future"])
def test_a_result_never_acted_on_does_not_move_the_frame_id(control, kind):
    """A stale, invalid or future-stamped result with a huge frame id used to advance the id, so
    every genuine result after it was 'going backwards': control locked out for good."""
    h, send, recv = control
    _drive(send, 3)
    now = time.monotonic_ns()
    capture = {"stale": now - 10**9, "invalid": now, "future": now + 10**10}[kind]
    status = ResultStatus.NONFINITE if kind == "invalid" else ResultStatus.OK
    send(raw=_result(2**62, capture, value=0.0, status=status))
    time.sleep(0.05)
    normal = _model_commands_resume(send, recv, 4)
    assert normal, f"no model command after one {kind} result with frame id 2**62"
    # The genuine ids carry on from 4, no resync needed: at once, or (an invalid result is a takeover)
    # from the recover_after-th good result on.
    first = 4 if kind != "invalid" else 4 + h.cfg.control.recover_after - 1
    assert [int(c["frame_id"]) for c in normal if int(c["frame_id"]) >= 4] == list(range(first, 10))
    assert h.stage.resyncs == 0


def test_one_forged_valid_result_far_ahead_costs_at_most_recover_after_results(control):
    """A fresh, valid result with frame id 2**62 is acted on (nothing tells it from a real one), but
    the genuine ids behind it are followed again after `recover_after` consecutive good results."""
    h, send, recv = control
    _drive(send, 3)
    send(raw=_result(2**62, time.monotonic_ns()))
    time.sleep(0.05)
    normal = _model_commands_resume(send, recv, 4)
    ids = [int(c["frame_id"]) for c in normal]
    assert 2**62 in ids  # the forged one
    genuine = [i for i in ids if i < 2**62]
    assert genuine and genuine[0] <= 4 + h.cfg.control.recover_after - 1 and genuine[-1] == 9
    assert h.stage.resyncs == 1


def _camera_state(h, state: CameraState, why: str = "/dev/video0: unplugged", frame_id: int = 0) -> None:
    m = wire.new_message(MsgType.CAMERA)
    now = time.monotonic_ns()
    m["state"], m["frame_id"], m["since_ns"], m["t_ns"], m["why"] = int(state), frame_id, now, now, wire.encode_why(why)
    h.camera_pub.send(wire.encode(m))


def test_a_lost_camera_hands_over_at_once_and_recovers_only_once_it_is_back(control):
    h, send, recv = control
    _drive(send, 5)
    last_capture = int(recv(0.1)[-1]["stamps"][Stamp.CAPTURE])  # the last good frame's
    _camera_state(h, CameraState.LOST, frame_id=5)
    cmds = recv(0.3)
    fs = [c for c in cmds if int(c["flags"]) & CommandFlags.FAILSAFE]
    assert fs and int(fs[0]["reason"]) == TakeoverReason.CAMERA_LOST, [int(c["reason"]) for c in cmds]
    assert int(fs[0]["flags"]) == int(CommandFlags.TAKEOVER | CommandFlags.FAILSAFE)
    # at once, not at the deadline: well within one deadline of the last good frame's capture
    assert int(fs[0]["stamps"][Stamp.CTRL_SEND]) - last_capture < h.cfg.deadline_ns
    assert h.stage.camera_lost.startswith("camera 0: /dev/video0: unplugged (last good frame 5)")
    # good results while the camera is lost (in flight from before) never end the takeover
    _drive(send, h.cfg.control.recover_after + 3)
    during = recv(0.1)
    assert during and all(int(c["reason"]) == TakeoverReason.CAMERA_LOST for c in during)
    assert h.stage.takeovers == 1
    _camera_state(h, CameraState.OK, frame_id=5)
    time.sleep(0.1)  # taken before the next results
    _drive(send, h.cfg.control.recover_after + 2)
    after = recv(0.2)
    normal = [c for c in after if int(c["flags"]) == 0]
    assert normal, "did not recover once the camera was back"
    back_after = 5 + h.cfg.control.recover_after + 3  # the last frame id sent while the camera was lost
    assert int(normal[0]["frame_id"]) - back_after >= h.cfg.control.recover_after  # good results after it only
    assert h.stage.failsafe == TakeoverReason.NONE and not h.stage.camera_lost


def test_a_deadline_takeover_says_camera_lost_once_the_source_says_so(control):
    """A source that notices its loss late (a read timeout longer than the deadline): control has
    handed over with DEADLINE already; the commands then carry CAMERA_LOST."""
    h, send, recv = control
    _drive(send, 5)
    time.sleep(h.cfg.deadline_ns / 1e9 + 0.1)
    assert h.stage.failsafe == TakeoverReason.DEADLINE
    _camera_state(h, CameraState.LOST, "video: rtsp://cam/1: no packet for 2 s")
    cmds = recv(0.3)
    assert cmds and int(cmds[-1]["reason"]) == TakeoverReason.CAMERA_LOST
    assert h.stage.takeovers == 1  # the same takeover, its reason made specific


def test_a_malformed_camera_state_is_rejected_and_changes_nothing(control):
    h, send, recv = control
    _drive(send, 3)
    m = wire.new_message(MsgType.CAMERA)
    m["state"], m["since_ns"], m["t_ns"] = int(CameraState.LOST), 1, 0  # never sent: t_ns 0
    h.camera_pub.send(wire.encode(m))
    _drive(send, 3)
    assert [c for c in recv(0.1) if int(c["flags"]) == 0]
    assert h.stage.rejected == 1 and not h.stage.camera_lost and h.stage.failsafe == TakeoverReason.NONE
