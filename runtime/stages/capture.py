"""capture: the road-camera simulator, closing the loop through the vehicle model.

Each tick it hands the newest valid command to the simulated steering actuator (which may
lag it by `sim.added_latency_ms`, and ramps to neutral by itself when commands stop for
`sim.actuator_timeout_ms`), moves a kinematic bicycle model by the actuator's steering
(zero-order hold, sim time advances exactly one frame period), renders the camera image at
the new pose straight into a frame-pool slot, and publishes the slot's descriptor and the
vehicle's ground truth (lane error, actuator and injected-fault flags) for telemetry. With
`sim.scenario` the road and the camera's conditions over time (light, noise, blackout,
frozen frames) come from runtime/sim/scenarios.py; `sim.drop_rate` drops a fraction of
frames before publishing. Ticks are paced in real time at camera.fps. The image is rendered in
BGR; with another camera.format it is rendered into a preallocated BGR image and converted into
the slot as a camera would deliver it (runtime/pixconvert.py), so the loop runs in every format.
"""

from __future__ import annotations

import random
import time

import numpy as np

from edgert.runtime import wire
from edgert.runtime.e2e import CommandChecker, Verdict
from edgert.runtime.pixconvert import BgrTo
from edgert.runtime.sim import BicycleModel, PinholeCamera, Renderer, Road, VehicleState, initial_state, scenarios
from edgert.runtime.sim.actuator import Actuator
from edgert.runtime.sim.effects import FrameEffects
from edgert.runtime.stages.source import CameraSource
from edgert.runtime.topics import CAMERA_STREAM, STREAM_IDS  # noqa: F401  (re-exported for older imports)
from edgert.runtime.transport import latest_reader, publisher
from edgert.runtime.wire import CommandFlags, MsgType, Stamp, VehicleFlags

ACTUATOR_TIMEOUT_PERIODS = 6  # sim.actuator_timeout_ms = 0: six frame periods (200 ms at 30 fps)


class CaptureStage(CameraSource):
    """camera.source = "sim" (runtime/sources.py)."""

    def setup(self) -> None:
        cam, sim = self.cfg.camera, self.cfg.sim
        self.period_ns = int(1e9 / cam.fps)
        self.dt = 1.0 / cam.fps
        self.open_camera()
        self.shape = self.layout.shape
        # the render's BGR image: the slot itself, or (another camera.format) a buffer converted into it
        self.to_format = BgrTo(cam.format, cam.height, cam.width) if cam.format != "bgr" else None
        self.bgr = np.zeros((cam.height, cam.width, 3), np.uint8) if self.to_format is not None else None
        self.scenario = scenarios.get(sim.scenario) if sim.scenario else None
        if self.scenario is None:
            self.road = Road(seed=sim.road_seed, length_m=sim.road_length_m, lane_width_m=sim.lane_width_m)
        else:
            scn = self.scenario
            self.road = Road(length_m=scn.road_length(sim.speed_mps, sim.start_s_m), lane_width_m=sim.lane_width_m,
                             segments=scn.segments, unmarked=scn.unmarked)
        self.condition = scenarios.CameraCondition()
        needs_fx = self.scenario is not None and any(e.kind in ("gain", "noise") for e in self.scenario.effects)
        self.effects = FrameEffects(seed=0) if needs_fx else None
        self.drop_rng = random.Random(0)  # sim.drop_rate: the same frames drop in every run
        self.camera = PinholeCamera(width=cam.width, height=cam.height, hfov_deg=sim.hfov_deg,
                                    height_m=sim.camera_height_m, pitch_deg=sim.camera_pitch_deg)
        self.renderer = Renderer(self.road, self.camera)  # compiles and warms the render kernel
        self.vehicle = BicycleModel(wheelbase_m=sim.wheelbase_m, max_steer_rad=self.cfg.control.max_steer_rad)
        self.state: VehicleState = initial_state(self.road, s=sim.start_s_m, lateral_m=sim.start_lateral_m,
                                                 heading_err=sim.start_heading_rad, speed=sim.speed_mps)
        self.s_hint = sim.start_s_m
        timeout_ms = sim.actuator_timeout_ms or ACTUATOR_TIMEOUT_PERIODS * 1000.0 / cam.fps
        self.actuator = Actuator(int(timeout_ms * 1e6), self.cfg.control.max_steer_rate_rad_s,
                                 delay_ns=int(sim.added_latency_ms * 1e6), period_ns=self.period_ns)
        self.last_slot = -1
        self.produced = 0  # frames made, published or (sim.drop_rate) dropped: frame ids count these
        ctx, ep = self.ctx.zmq, self.ctx.endpoints
        self.pub_vehicle = self.own(publisher(ctx, ep, "vehicle"))
        self.commands = self.own(latest_reader(ctx, ep, "commands"))
        self.e2e = CommandChecker(max_age_ns=self.cfg.deadline_ns)
        self.veh = wire.new_message(MsgType.VEHICLE)

    def on_start(self) -> None:
        cam = self.cfg.camera
        self.log.info("started: %dx%d %s at %.1f fps", cam.width, cam.height, cam.format, cam.fps)

    def _receive_command(self) -> None:
        msg = self.commands.drain()
        if msg is None:
            return
        rec, verdict = self.e2e.check(msg)
        if verdict is not Verdict.OK or rec is None:  # corrupted, repeated, reordered or stale: never acted on
            self.reject(f"command {verdict.value}")
            return
        accel = float(rec["accel"]) if int(rec["flags"]) & CommandFlags.FAILSAFE else 0.0
        self.actuator.receive(float(rec["steer"]), accel, int(rec["stamps"][Stamp.CAPTURE]), time.monotonic_ns())

    def _draw(self, slot: int, st: VehicleState, s: float) -> int:
        """Render (or black out, or repeat) the camera image into the slot; VehicleFlags of what was injected."""
        view = self.output.views[slot]
        cond = self.condition
        if self.scenario is not None:
            self.scenario.condition_at(self.produced / self.cfg.camera.fps, cond)
        flags = 0
        img = view if self.bgr is None else self.bgr
        if cond.frozen and self.last_slot >= 0 and not cond.blackout:
            np.copyto(view, self.output.views[self.last_slot])  # the last frame, in the slot's format
            flags |= VehicleFlags.CAMERA_FROZEN
            if self.effects is not None and self.bgr is None:
                self.effects.apply(view, cond.gain, cond.sigma, cond.salt)
        else:
            if cond.blackout:
                img.fill(0)
                flags |= VehicleFlags.CAMERA_BLACKOUT
            else:
                self.renderer.render(st.x, st.y, st.yaw, img, s_hint=s)
            if self.effects is not None:
                self.effects.apply(img, cond.gain, cond.sigma, cond.salt)
            if self.to_format is not None:
                self.to_format(img, view)
        if cond.outside_odd:
            flags |= VehicleFlags.LIGHT_OUTSIDE_ODD
        return flags

    def tick(self) -> None:
        if not self.wait_until(self.next_tick):
            return
        self.next_tick += self.period_ns
        self.skip_missed(time.monotonic_ns())  # a whole period late: skip the missed ticks rather than catch up
        frame_id = self.id_base + self.produced + 1

        self._receive_command()
        act_ns = time.monotonic_ns()
        act = self.actuator
        timeouts = act.timeouts
        new_command = act.update(act_ns, self.dt)
        if act.timeouts != timeouts:
            self.log.warning("actuator timeout: no valid command for %.0f ms; ramping the steering to neutral",
                             (act_ns - act.last_rx_ns) / 1e6)
        st = self.vehicle.step(self.state, act.steer, self.dt)
        if act.accel:
            st = VehicleState(st.x, st.y, st.yaw, max(0.0, st.speed + act.accel * self.dt))
        self.state = st

        s, lateral, road_heading = self.road.project(st.x, st.y, self.s_hint)
        heading_err = (st.yaw - road_heading + np.pi) % (2 * np.pi) - np.pi
        if s > self.road.length - self.renderer.max_range - 50.0:
            self.log.warning("end of the simulated road (%.0f m): carrying the car back to the start", s)
            st = self.state = initial_state(self.road, 0.0, lateral, heading_err, st.speed)
            s = 0.0
        self.s_hint = s

        slot, _ = self.output.acquire()
        flags = self._draw(slot, st, s)
        gen = self.output.commit(slot)
        self.last_slot = slot
        self.produced += 1
        if self.cfg.sim.drop_rate and self.drop_rng.random() < self.cfg.sim.drop_rate:
            flags |= VehicleFlags.FRAME_DROPPED  # rendered, never published: a lossy camera link
            self.dropped += 1
            t_ns = time.monotonic_ns()
        else:
            self.frames += 1
            self.output.send(slot, gen, frame_id)
            t_ns = int(self.output.msg["stamps"][Stamp.CAPTURE])
        if act.timed_out:
            flags |= VehicleFlags.ACTUATOR_TIMEOUT

        v = self.veh
        # the car's state when its frame was captured, not when this message went out: a stage
        # preempted here must not make a takeover for the frame look earlier than the frame's fault
        v["frame_id"], v["t_ns"] = frame_id, t_ns
        v["x"], v["y"], v["yaw"], v["speed"] = st.x, st.y, st.yaw, st.speed
        v["s"], v["lateral"] = s, lateral
        v["heading_err"] = heading_err
        v["steer"] = act.steer
        # a held command is no new sample, and a fail-safe command has no frame behind it (capture stamp 0)
        v["cmd_age_ns"] = act_ns - act.capture_ns if new_command and act.capture_ns else 0
        v["flags"] = flags
        self.pub_vehicle.send(wire.encode(v))
