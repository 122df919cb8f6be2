"""The closed loop as a test bench: scenarios through the real pipeline, camera health, the
simulated actuator's command timeout and delay line, drops, and `edgert sim` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import SHARED_MACHINE_CONTROL, StageHarness

from edgert.runtime import wire
from edgert.runtime.camhealth import CameraHealth
from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, from_dict, load
from edgert.runtime.framepool import FramePool
from edgert.runtime.sim import scenarios
from edgert.runtime.sim.actuator import Actuator
from edgert.runtime.stages.capture import CAMERA_STREAM, CaptureStage
from edgert.runtime.transport import publisher, subscriber
from edgert.runtime.wire import FrameFlags, MsgType, Stamp, VehicleFlags, WireError

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout: where the CLI runs from

MS = 1_000_000


# --- the scenario table and the config key ----------------------------------------------------

def test_scenario_table_and_config_key():
    scenarios.check_table()
    assert {"straight", "gentle_curve", "sharp_curve", "s_bend", "changing_light", "tunnel", "blackout", "frozen",
            "sensor_noise", "no_markings"} <= set(scenarios.names())
    with pytest.raises(ConfigError, match=r"sim.scenario: 'strait' is not one of '', 'straight', .*'no_markings' "
                                          r"\(did you mean 'straight'\?\)"):
        from_dict({"sim": {"scenario": "strait"}})
    assert from_dict({"sim": {"scenario": "blackout"}}).sim.scenario == "blackout"
    with pytest.raises(ConfigError, match=r"sim.drop_rate: 1.0 is outside its range 0 <= drop_rate < 1 \(1 would drop every frame\)"):
        from_dict({"sim": {"drop_rate": 1.0}})
    with pytest.raises(ConfigError, match="sim.actuator_timeout_ms: 20.0 ms is under two frame periods"):
        from_dict({"sim": {"actuator_timeout_ms": 20.0}})


def test_condition_windows():
    scn = scenarios.get("changing_light")
    c = scenarios.CameraCondition()
    assert scn.condition_at(0.5, c).gain == 1.0
    assert scn.condition_at(1.75, c).gain == pytest.approx(0.9)  # half-way down the ramp to 0.8
    assert scn.condition_at(3.0, c).gain == pytest.approx(0.8)
    assert scn.condition_at(5.5, c).gain == pytest.approx(1.2)
    b = scenarios.get("blackout")
    assert not b.condition_at(1.49, c).blackout and b.condition_at(1.5, c).blackout and not b.condition_at(2.5, c).blackout
    t = scenarios.get("tunnel")  # ground truth for the light check: the window is marked outside the domain
    assert t.condition_at(1.6, c).outside_odd and c.gain == pytest.approx(0.45)
    assert not t.condition_at(2.6, c).outside_odd and c.gain == 1.0
    assert not scn.condition_at(3.0, c).outside_odd  # changing_light stays inside it


# --- camera health: the sampled statistic preprocess runs on every frame ----------------------

def test_camera_health_flags_black_and_repeated_frames():
    rng = np.random.default_rng(0)
    shape = (108, 192, 3)
    h = CameraHealth(int(np.prod(shape)), dark_level=12.0, frozen_frames=2)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    assert [h.check(f) for f in frames] == [0, 0, 0]  # moving images: healthy
    dim = (frames[0] // 8).astype(np.uint8)  # mean ~16: a dark scene, not a blackout
    assert h.check(dim) == 0
    black = np.zeros(shape, np.uint8)
    assert h.check(black) == FrameFlags.CAMERA_DARK  # at once, on the first black frame
    # the same image again and again: flagged on the second repeat
    assert [h.check(frames[1]) for _ in range(4)] == [0, 0, FrameFlags.CAMERA_FROZEN, FrameFlags.CAMERA_FROZEN]
    assert h.check(frames[2]) == 0  # a new image clears it
    noisy = frames[2].copy()
    noisy.reshape(-1)[:: h.stride] ^= 1  # sensor noise in the lowest bit, where the sample looks
    assert h.check(noisy) == 0
    off = CameraHealth(int(np.prod(shape)), dark_level=0.0, frozen_frames=0)
    assert [off.check(black) for _ in range(4)] == [0, 0, 0, 0]  # both checks can be turned off


def test_camera_health_flags_light_outside_the_models_domain():
    """The manifest's [odd] mean_level: a frame lit outside it is flagged; black stays CAMERA_DARK."""
    shape = (108, 192, 3)
    h = CameraHealth(int(np.prod(shape)), dark_level=12.0, frozen_frames=0, light_range=(100.0, 175.0))
    rng = np.random.default_rng(1)
    base = rng.integers(110, 160, shape, dtype=np.uint8)  # mean ~135, as the simulator renders
    assert h.check(base) == 0
    for gain, expected in ((0.8, 0), (1.2, 0), (0.45, FrameFlags.LIGHT_OUTSIDE_ODD), (1.0, 0),
                           (0.7, FrameFlags.LIGHT_OUTSIDE_ODD), (1.0, 0), (1.5, FrameFlags.LIGHT_OUTSIDE_ODD)):
        frame = np.clip(base * gain, 0, 255).astype(np.uint8)
        assert h.check(frame) == expected, gain
    assert h.check(np.zeros(shape, np.uint8)) == FrameFlags.CAMERA_DARK  # the more specific verdict
    level = [np.full(shape, v, np.uint8) for v in range(256)]
    h = CameraHealth(int(np.prod(shape)), dark_level=12.0, frozen_frames=0, light_range=(100.0, 175.0))
    assert h.check(level[100]) == 0 and h.check(level[175]) == 0  # the bounds are inside
    # dusk hovering at the bound: once out, back only 4 levels inside (no hand-over/resume flicker)
    hover = [99, 100, 101, 103, 101, 104, 100, 99, 102]
    assert [h.check(level[v]) != 0 for v in hover] == [True, True, True, True, True, False, False, True, True]
    no_odd = CameraHealth(int(np.prod(shape)), dark_level=12.0, frozen_frames=0)
    assert no_odd.check(level[40]) == 0  # a model without [odd]: no light check


def test_camera_health_checks_each_camera_of_a_batch_and_status_names_the_fault():
    """Four cameras in one slot: one dark camera is not averaged away by three bright ones."""
    from edgert.runtime.camhealth import status_for

    shape = (72, 128, 3)
    # frozen off: cameras 0 and 3 keep one image through these checks, which would (rightly) flag them
    h = CameraHealth(int(np.prod(shape)), dark_level=12.0, frozen_frames=0, light_range=(100.0, 175.0), cameras=4)
    rng = np.random.default_rng(2)
    slot = rng.integers(110, 160, (4, *shape), dtype=np.uint8)
    assert h.check(slot) == 0
    slot[2] = 0  # the mean of the four is still ~100: only a per-camera check sees it
    assert h.check(slot) == FrameFlags.CAMERA_DARK
    slot[2] = rng.integers(110, 160, shape, dtype=np.uint8)
    slot[1] = (slot[1] * 0.45).astype(np.uint8)
    assert h.check(slot) == FrameFlags.LIGHT_OUTSIDE_ODD
    with pytest.raises(ValueError, match="a frame of 82944 bytes, expected 4 x 27648"):
        h.check(slot[:3])
    assert status_for(FrameFlags.CAMERA_DARK | FrameFlags.LIGHT_OUTSIDE_ODD) == wire.ResultStatus.CAMERA_BLACKOUT
    assert status_for(FrameFlags.CAMERA_FROZEN | FrameFlags.LIGHT_OUTSIDE_ODD) == wire.ResultStatus.CAMERA_FROZEN
    assert status_for(FrameFlags.CAMERA_DARK | FrameFlags.CAMERA_FROZEN) == wire.ResultStatus.CAMERA_BLACKOUT
    assert status_for(FrameFlags.LIGHT_OUTSIDE_ODD) == wire.ResultStatus.LIGHT_OUTSIDE_ODD


def test_wire_checks_the_camera_and_vehicle_flag_fields():
    f = wire.new_message(MsgType.FRAME)
    f["ndim"], f["dtype"], f["shape"][0], f["stamps"][Stamp.CAPTURE] = 1, 1, 4, 1
    f["flags"] = int(FrameFlags.CAMERA_DARK | FrameFlags.CAMERA_FROZEN)
    assert int(wire.decode(wire.encode(f))["flags"]) == 3
    f["flags"] = int(FrameFlags.LIGHT_OUTSIDE_ODD)
    assert int(wire.decode(wire.encode(f))["flags"]) == 4
    f["flags"] = 8
    with pytest.raises(WireError, match="FRAME flags 0x8 has unknown bits"):
        wire.decode(wire.encode(f))
    v = wire.new_message(MsgType.VEHICLE)
    v["flags"] = int(VehicleFlags.ACTUATOR_TIMEOUT | VehicleFlags.FRAME_DROPPED)
    assert wire.to_dict(wire.decode(wire.encode(v)))["flags"] == 9
    v["flags"] = int(VehicleFlags.LIGHT_OUTSIDE_ODD)
    assert wire.to_dict(wire.decode(wire.encode(v)))["flags"] == 0x10
    v["flags"] = 0x20
    with pytest.raises(WireError, match="VEHICLE flags 0x20 has unknown bits"):
        wire.decode(wire.encode(v))
    for status in (wire.ResultStatus.CAMERA_BLACKOUT, wire.ResultStatus.CAMERA_FROZEN,
                   wire.ResultStatus.LIGHT_OUTSIDE_ODD):
        r = wire.new_message(MsgType.RESULT)
        r["status"], r["stamps"][Stamp.CAPTURE] = int(status), 1
        assert int(wire.decode(wire.encode(r))["status"]) == status


# --- the simulated actuator -------------------------------------------------------------------

def test_actuator_times_out_and_ramps_to_neutral():
    a = Actuator(timeout_ns=200 * MS, ramp_rate_rad_s=2.0)
    dt, t = 1 / 30, 1_000 * MS
    assert not a.update(t, dt) and a.steer == 0.0 and not a.timed_out  # never engaged: nothing to time out
    a.receive(0.3, -2.0, t - 5 * MS, t)
    assert a.update(t, dt) and (a.steer, a.accel, a.capture_ns) == (0.3, -2.0, t - 5 * MS)
    steers = []
    for k in range(1, 20):  # commands stop
        a.update(t + int(k * dt * 1e9), dt)
        steers.append(a.steer)
    held = [s for s in steers if s == 0.3]
    assert len(held) == 6  # held while within the 200 ms timeout (6 periods)
    ramp = steers[len(held):]
    assert a.timed_out and a.timeouts == 1 and a.accel == 0.0
    assert np.allclose(np.diff([0.3] + ramp)[:4], -2.0 * dt)  # at the ramp rate
    assert ramp[-1] == 0.0 and min(ramp) == 0.0  # to neutral, never past it
    t2 = t + 2_000 * MS
    a.receive(-0.1, 0.0, t2, t2)  # a fresh valid command re-engages
    assert a.update(t2, dt) and a.steer == -0.1 and not a.timed_out and a.timeouts == 1


def test_actuator_delay_line_applies_commands_late_and_in_order():
    a = Actuator(timeout_ns=200 * MS, ramp_rate_rad_s=2.0, delay_ns=100 * MS, period_ns=33 * MS)
    t = 1_000 * MS
    for k in range(6):  # one command a period
        a.receive(0.01 * (k + 1), 0.0, t + k * 33 * MS, t + k * 33 * MS)
    assert not a.update(t + 99 * MS, 0.033) and a.steer == 0.0  # nothing is 100 ms old yet
    assert a.update(t + 100 * MS, 0.033) and a.steer == pytest.approx(0.01)
    assert a.update(t + 170 * MS, 0.033) and a.steer == pytest.approx(0.03)  # the newest due one
    assert not a.timed_out


def _command(seq: int, steer: float) -> bytes:
    c = wire.new_message(MsgType.COMMAND)
    now = time.monotonic_ns()
    c["seq"], c["frame_id"], c["steer"] = seq, seq, steer
    c["stamps"][Stamp.CAPTURE] = c["stamps"][Stamp.CTRL_SEND] = now
    return wire.encode(c)


def test_capture_stage_actuator_times_out_when_commands_stop():
    """The real capture stage on real sockets: commands flow, then stop; the car's actuator
    flags the timeout in the vehicle topic and ramps the steering to neutral by itself."""
    cfg = from_dict({"camera": {"width": 320, "height": 180},
                     "sim": {"scenario": "straight", "actuator_timeout_ms": 150.0}})
    h = StageHarness(cfg)
    pool = FramePool.create(h.run_id, CAMERA_STREAM, 3, 320 * 180 * 3)
    cmds = publisher(h.zmq, h.endpoints, "commands")
    try:
        h.start(CaptureStage)
        veh = subscriber(h.zmq, h.endpoints, "vehicle")
        deadline = time.monotonic() + 60
        while not hasattr(h.stage, "pub_vehicle") and time.monotonic() < deadline:
            time.sleep(0.05)  # setup (renderer warm-up) done: its sockets exist
        time.sleep(0.3)
        h.send_start()
        records = []
        seq = 1
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            if time.monotonic() < end - 1.0:  # commands for 0.5 s, then silence for 1 s
                cmds.send(_command(seq, 0.2))
                seq += 1
            if veh.poll(40):
                while True:
                    try:
                        records.append(wire.to_dict(wire.decode(veh.recv(zmq.NOBLOCK), MsgType.VEHICLE)))
                    except zmq.Again:
                        break
        veh.close(0)
    finally:
        cmds.close(0)
        h.close()
        pool.close()
        pool.unlink()
    assert h.code == 0
    steer = np.array([r["steer"] for r in records])
    timed = np.array([bool(r["flags"] & VehicleFlags.ACTUATOR_TIMEOUT) for r in records])
    assert len(records) >= 30 and steer.max() == pytest.approx(0.2, abs=1e-6)  # commands were applied
    first = int(np.argmax(timed))
    assert timed[first:].all() and not timed[:first].any()  # one timeout, held until the end
    assert steer[first - 1] == pytest.approx(0.2, abs=1e-6)
    ramp = steer[first:]
    assert np.all(np.diff(ramp) <= 1e-9) and ramp[-1] == 0.0  # ramped to neutral and stayed there
    assert np.diff(ramp[:3]).min() >= -2.0 / 30 - 1e-6  # at the control stage's rate limit
    assert h.stage.actuator.timeouts == 1


# --- every scenario through the real pipeline ---------------------------------------------------

def _check_run(s: dict) -> None:
    assert s["leaked_segments"] == []
    for name, st in s["stages"].items():
        assert st["rejected"] == 0 and st["errors"] == 0 and st["restarts"] == 0, (name, st)
    assert s["e2e"]["corrupted"] == s["e2e"]["lost"] == 0, s["e2e"]


def _run_scenario_to_its_end(name: str, **sections: dict) -> tuple[dict, scenarios.Outcome]:
    """edgert.runtime.cli.sim.run_scenario, ending once the camera has made the scenario's duration in
    frames rather than after that much wall-clock time: a loaded machine makes the camera skip
    ticks (sim time advances a frame period per frame made), so a wall-clock run may end before
    the road or the fault window does. 600 s only bounds a hung test. `sections`: more config
    (e.g. camera={"format": "nv12"})."""
    import threading

    from edgert.runtime.supervisor import Supervisor

    scn = scenarios.get(name)
    cfg = load(DEFAULT_CONFIG).replace(control=SHARED_MACHINE_CONTROL, sim={"scenario": name}, **sections)
    sup = Supervisor(cfg, duration_s=600.0, mode="threads")  # threads: the same stage code, a faster start
    frames = scn.duration_s * cfg.camera.fps

    def stop_at_the_end() -> None:
        while not sup.stop_requested.is_set():
            if (sup.status["capture"].counters or {}).get("frames", 0) >= frames:
                sup.stop_requested.set()
            time.sleep(0.05)
    threading.Thread(target=stop_at_the_end, daemon=True).start()
    s = sup.run()
    sup.stop_requested.set()
    return s, scenarios.judge(scn, s, cfg.camera.fps)


@pytest.mark.parametrize("name", scenarios.names())
def test_scenario_ends_as_expected(name):
    """Stays in lane with no takeover request, or hands over with the right reason within the
    scenario's bound in frames of the fault."""
    scn = scenarios.get(name)
    s, outcome = _run_scenario_to_its_end(name)
    _check_run(s)
    assert outcome.ok, (outcome, s["lane"], s["takeovers"])
    assert s["lane"]["frames"] >= scn.duration_s * 30 * 0.9
    if scn.expect != scenarios.IN_LANE:
        assert outcome.reaction_frames is not None and 0 <= outcome.reaction_frames <= scn.react_frames
        fault = s["injected_faults"][scn.expect]
        assert 25 <= fault["frames"] <= 31  # the 1 s window, at 30 fps
        assert s["takeovers"][0]["resumed_after_s"] is not None  # model commands came back after the fault
        # fail-safe commands carry no frame: the car's command age counts only commands made from one
        assert s["actuation_age"]["n"] > 0 and s["actuation_age"]["max_ms"] < 1000, s["actuation_age"]
    else:
        # every frame commanded, or (latest-only stages skip what a loaded machine cannot take) counted as dropped
        c, dropped = s["commands"], s["stages"]["control"]["dropped"]
        assert c["model_commands"] + dropped >= s["lane"]["frames"] - 5, (c, dropped, s["lane"])


def test_drop_rate_drops_frames_before_publishing():
    from edgert.runtime.cli.sim import run_scenario

    s, _ = run_scenario(load(DEFAULT_CONFIG), "straight", drop_rate=0.2, duration_s=3.0, mode="threads")
    _check_run(s)
    injected = s["injected_faults"]["FRAME_DROPPED"]["frames"]
    assert 0.08 * s["lane"]["frames"] <= injected <= 0.35 * s["lane"]["frames"]
    assert s["stages"]["capture"]["dropped"] >= injected
    assert s["stages"]["preprocess"]["dropped"] >= injected - 2  # the gaps they leave in the frame ids
    assert s["lane"]["departures"] == 0


# --- the CLI --------------------------------------------------------------------------------

def test_edgert_sim_scenario_cli_round_trip(tmp_path):
    """`edgert sim --scenario straight` in processes mode: exit 0, the summary, the verdict."""
    report = tmp_path / "r.json"
    cfg = tmp_path / "sim.toml"  # the default config with the shared machine's roomier deadline (conftest)
    text = DEFAULT_CONFIG.read_text()
    assert "\ndeadline_ms = 0 " in text
    cfg.write_text(text.replace("\ndeadline_ms = 0 ", f"\ndeadline_ms = {SHARED_MACHINE_CONTROL['deadline_ms']} ", 1))
    p = subprocess.run([sys.executable, "-m", "edgert.runtime.cli", "sim", "--config", str(cfg), "--scenario", "straight",
                        "--duration", "3", "--report", str(report)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "(processes)" in p.stdout and "scenario straight: a straight road" in p.stdout
    assert "lane-keeping error: mean" in p.stdout and "takeover requests: none" in p.stdout
    assert "latency: end-to-end (capture -> command) p50" in p.stdout and "\n  -> PASS\n" in p.stdout
    r = json.loads(report.read_text())
    assert r["outcome"]["ok"] and r["scenario"]["name"] == "straight" and r["lane"]["departures"] == 0
    bad = subprocess.run([sys.executable, "-m", "edgert.runtime.cli", "sim", "--scenario", "nope"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown scenario 'nope'; scenarios: straight" in bad.stderr


def test_edgert_sim_sweep_writes_json_and_plot(tmp_path):
    from edgert.runtime.cli import main

    assert main(["sim", "sweep", "--latencies", "0,150", "--scenario", "straight", "--duration", "2",
                 "--mode", "threads", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "sim_sweep.json").read_text())
    a, b = r["points"]
    assert (a["added_ms"], b["added_ms"]) == (0.0, 150.0)
    for p in (a, b):  # the total is the measured latency plus the added one (the two runs' own p50s may differ
        # by more than a few ms on a loaded machine, which is the machine, not the sweep)
        assert p["total_p50_ms"] == pytest.approx(p["end_to_end_p50_ms"] + p["added_ms"])
    # the delay is really applied: the car acts on each command ~150 ms later (the tolerance: a frame
    # period of sim-tick quantisation, plus what load adds to either run's p50)
    assert b["actuated_p50_ms"] - a["actuated_p50_ms"] == pytest.approx(150.0, abs=60.0)
    assert len(r["marginal_cost"]) == 1 and r["machine"]["cores"] >= 1
    png = (tmp_path / "sim_sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
