"""A camera that goes away mid-run, in the real pipeline: control hands over with CAMERA_LOST
within one deadline of the last good frame, the source reconnects in place (never restarted), and
model commands resume once frames flow again. Both execution modes; a reported loss and a stall."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MACHINE_CONTROL, run_scripted, wait_until

from edgert.runtime import wire
from edgert.runtime.config import DEFAULT_CONFIG, load
from edgert.runtime.stages.capture import CaptureStage
from edgert.runtime.supervisor import Supervisor, format_summary
from edgert.runtime.telemetry import LOSSES_KEPT, CameraLosses
from edgert.runtime.wire import CameraState, MsgType, StageState

GOOD_FRAMES = 45  # before the camera goes away: a second and a half of model commands
GONE_S = 1.0  # how long it stays away, longer than the deadline and the stall threshold


class LosesCamera(CaptureStage):
    """The simulator's camera, unplugged after GOOD_FRAMES frames for GONE_S: it says so
    (camera_lost), delivers nothing, then says it is back (camera_back) and frames flow again."""

    report = True  # False: it just stops delivering (a stall) and the base class must notice

    def still_gone(self, now_ns: int) -> bool:
        return now_ns < self.back_at_ns

    def setup(self) -> None:
        super().setup()
        self.back_at_ns = 0  # 0 = not gone yet

    def tick(self) -> None:
        if not self.back_at_ns and self.frames >= GOOD_FRAMES:
            self.back_at_ns = time.monotonic_ns() + int(GONE_S * 1e9)
            if self.report:
                self.camera_lost("test: /dev/video9 unplugged")
        if self.back_at_ns and self.back_at_ns > 0:
            if self.still_gone(time.monotonic_ns()):
                self.ctx.stop.wait(self.period_ns / 1e9)  # a reconnect attempt per frame period
                return
            self.back_at_ns = -1  # back for good
            if self.report:
                self.camera_back()
            self.next_tick = time.monotonic_ns()  # a reconnected camera starts afresh: no missed ticks
        super().tick()


class StallsCamera(LosesCamera):
    report = False


class LosesCameraUntilTold(LosesCamera):
    """Gone until the file named by $EDGERT_TEST_CAMERA_BACK exists (the test says when)."""

    def still_gone(self, now_ns: int) -> bool:
        return not Path(os.environ["EDGERT_TEST_CAMERA_BACK"]).exists()


def _run(mode: str, source: str, monkeypatch) -> tuple[dict, Supervisor]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    cfg = load(DEFAULT_CONFIG).replace(control=SHARED_MACHINE_CONTROL)
    # the run ends once model commands resumed after the camera came back (600 s: only a bound)
    sup = Supervisor(cfg, duration_s=600.0, mode=mode, stage_classes={"capture": f"{Path(__file__).stem}:{source}"})

    def stop_once_resumed() -> None:
        wait_until(sup, lambda: sup.running.is_set(), "the pipeline runs")
        tel = sup.telemetry
        wait_until(sup, lambda: tel.camera.losses and any(t["resumed_ns"] is not None for t in list(tel.takeovers)),
                   "the camera lost and model commands resumed", bound_s=180)
        time.sleep(0.3)  # a few model commands after the recovery
    return run_scripted(sup, stop_once_resumed), sup


def _check_recovered(s: dict) -> dict:
    assert s["stages"]["capture"]["restarts"] == 0, s["stages"]  # reconnected in place
    assert all(st["errors"] == 0 and st["restarts"] == 0 for st in s["stages"].values()), s["stages"]
    cam = s["camera"]
    assert cam["losses"] == 1 and not cam["lost_now"], cam
    loss = cam["events"][0]
    assert loss["lost_s"] is not None and 0 < loss["lost_s"] <= GONE_S + 5, loss  # ended, once
    assert loss["frame_id"] > 0 and loss["capture_ns"] > 0  # the last good frame, from the source's message
    takeovers = [x for x in s["takeovers"] if x["reason"] != "SHUTDOWN"]
    assert len(takeovers) == 1, s["takeovers"]
    first = takeovers[0]
    assert "CAMERA_LOST" in first["reasons"], first
    assert first["resumed_after_s"] is not None, "model commands never resumed after the camera came back"
    c = s["commands"]
    assert c["model_commands"] > GOOD_FRAMES // 2 and c["out_of_range"] == 0, c
    assert s["leaked_segments"] == []
    return first


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_a_lost_camera_is_a_camera_lost_takeover_within_a_deadline_and_recovers_in_place(mode, monkeypatch):
    s, sup = _run(mode, "LosesCamera", monkeypatch)
    first = _check_recovered(s)
    loss = s["camera"]["events"][0]
    assert loss["why"] == "test: /dev/video9 unplugged" and loss["lost_s"] >= GONE_S * 0.5, loss
    # reported as it happened: the takeover's own reason, and its first command (stamped by control)
    # within one deadline of the last good frame's capture (stamped by the source)
    assert first["reason"] == "CAMERA_LOST" and first["reasons"] == ["CAMERA_LOST"], first
    assert s["commands"]["takeover_reasons"].get("DEADLINE", 0) == 0, s["commands"]
    assert first["t_ns"] - loss["capture_ns"] <= sup.cfg.deadline_ns, (first, loss)
    print(f"{mode}: CAMERA_LOST {(first['t_ns'] - loss['capture_ns']) / 1e6:.0f} ms after the last good frame, "
          f"resumed after {first['resumed_after_s']:.2f} s")


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_a_stalled_camera_hands_over_within_a_deadline_and_ends_as_camera_lost(mode, monkeypatch):
    """No word from the source, no frames: the deadline hands over (never later), and the source's
    stall detection (no frame for one deadline) names it CAMERA_LOST; it ends by itself
    when frames flow again."""
    s, sup = _run(mode, "StallsCamera", monkeypatch)
    first = _check_recovered(s)
    loss = s["camera"]["events"][0]
    assert loss["why"].startswith("no frame for ") and loss["why"].endswith(" ms (stalled)"), loss
    assert first["reasons"][-1] == "CAMERA_LOST", first
    # a deadline after the last good frame (that frame's command, then one deadline, then the watchdog's
    # 10 ms poll; 0.1 s of slack for a shared 2-core machine, as the killed-stage tests allow)
    assert first["t_ns"] - loss["capture_ns"] <= sup.cfg.deadline_ns + 100_000_000, (first, loss)
    print(f"{mode}: takeover {first['reasons']} {(first['t_ns'] - loss['capture_ns']) / 1e6:.0f} ms after the last "
          f"good frame, resumed after {first['resumed_after_s']:.2f} s")


def _state(state: CameraState, since_ns: int, why: str = "", frame_id: int = 7) -> np.void:
    m = wire.new_message(MsgType.CAMERA)
    m["state"], m["since_ns"], m["t_ns"], m["frame_id"], m["capture_ns"] = int(state), since_ns, since_ns + 5, frame_id, 1
    m["why"] = wire.encode_why(why)
    return wire.decode(wire.encode(m), MsgType.CAMERA)


def test_telemetry_counts_each_loss_once_with_its_time_in_constant_memory():
    cam = CameraLosses()
    cam.add(_state(CameraState.OK, 100))  # the start: nothing lost
    assert cam.summary() == {"losses": 0, "lost_s": 0.0, "lost_now": False, "events": [], "rejected": 0}
    for t in (1_000, 1_000, 1_000):  # one loss, said again while it lasts
        cam.add(_state(CameraState.LOST, t, "/dev/video0: unplugged"))
    assert cam.summary()["losses"] == 1 and cam.summary()["lost_now"]
    cam.add(_state(CameraState.OK, 1_000 + 2_500_000_000))
    s = cam.summary()
    assert (s["losses"], s["lost_s"], s["lost_now"]) == (1, 2.5, False)
    assert s["events"] == [{"since_ns": 1_000, "why": "/dev/video0: unplugged", "frame_id": 7, "capture_ns": 1,
                            "lost_s": 2.5}]
    for i in range(3 * LOSSES_KEPT):  # hours of a flaky connector: counted, the first LOSSES_KEPT listed
        cam.add(_state(CameraState.LOST, 10**10 + 2 * i * 10**6))
        cam.add(_state(CameraState.OK, 10**10 + (2 * i + 1) * 10**6))
    s = cam.summary()
    assert s["losses"] == 1 + 3 * LOSSES_KEPT and len(s["events"]) == LOSSES_KEPT
    assert s["lost_s"] == pytest.approx(2.5 + 3 * LOSSES_KEPT * 1e-3)
    assert "camera lost 301 time(s), 2.8 s in all; first: /dev/video0: unplugged" in format_summary(
        {"run_id": "r", "mode": "threads", "exit_reason": "x", "ready_s": 0, "duration_s": 1, "frames": 0,
         "fps": 0, "stages": {}, "camera": s})


def test_a_control_restarted_while_the_camera_is_lost_hands_over_for_it_not_for_startup(monkeypatch, tmp_path):
    """The source says its state again 4 times a second while lost: a control that starts during
    the loss (killed and restarted) learns it from there, within its start-up grace period."""
    back = tmp_path / "camera-back"
    monkeypatch.setenv("EDGERT_TEST_CAMERA_BACK", str(back))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    cfg = load(DEFAULT_CONFIG).replace(control=SHARED_MACHINE_CONTROL)
    sup = Supervisor(cfg, duration_s=600.0, mode="processes",
                     stage_classes={"capture": f"{Path(__file__).stem}:LosesCameraUntilTold"})
    killed = {}

    def script() -> None:
        wait_until(sup, lambda: sup.running.is_set(), "the pipeline runs")
        tel = sup.telemetry
        wait_until(sup, lambda: tel.camera.losses == 1 and tel.checks.failsafe_commands >= 3, "the loss reaches control")
        killed["pid"] = sup.handles["control"].pid
        os.kill(killed["pid"], signal.SIGKILL)
        st = sup.status["control"]
        wait_until(sup, lambda: st.restarts == 1 and st.pid != killed["pid"] and st.state == StageState.RUNNING,
                   "control restarted")
        # the new control's start-up grace (1 s) has passed: without the resent state it would
        # have handed over for STARTUP by now
        time.sleep(1.5)
        back.touch()
        wait_until(sup, lambda: any(t["resumed_ns"] is not None for t in list(tel.takeovers)), "control resumes")
        time.sleep(0.3)
    s = run_scripted(sup, script)
    assert killed, "control was never killed"
    assert s["stages"]["control"]["restarts"] == 1 and s["stages"]["capture"]["restarts"] == 0, s["stages"]
    takeovers = [x for x in s["takeovers"] if x["reason"] != "SHUTDOWN"]
    assert len(takeovers) == 1 and takeovers[0]["reasons"] == ["CAMERA_LOST"], s["takeovers"]
    assert takeovers[0]["resumed_after_s"] is not None
    assert s["camera"]["losses"] == 1 and s["leaked_segments"] == []
