"""control: model output -> steering command, clamped and rate-limited, with a deadline watchdog.

A Level-2 assist must say the moment it cannot trust itself. Commands are computed only
from fresh, valid results: frame id moving forward, captured within the deadline (and not
after now: a capture stamp later than the clock, beyond `CLOCK_SKEW_NS`, is forged or broken),
status OK, the decoded value present and finite. The frame id moves on only with a result
acted on, so no single CRC-valid result (a huge id, a future stamp) can lock the stage out;
ids going back are followed once `recover_after` consecutive good results agree on them (a
restarted source, or a forged id ahead of the genuine ones). The watchdog times the age of the frame behind
the last command: once that frame is older than the deadline (or no valid result arrived
within a grace period after the pipeline started, or a result was invalid) the stage
publishes fail-safe commands (steering ramped to neutral at the rate limit, gentle
deceleration) flagged TAKEOVER|FAILSAFE with the reason, once per frame period, and
returns to normal only after `recover_after` consecutive good results. It never re-sends
an old command as new: every command has a new sequence number (unique across restarts of
this stage) and says which frame it came from and how old that frame was. On shutdown it
sends a last takeover request, so the car is never left holding a silent command.

The camera source says when its camera is lost (the `camera_state` topic): control then hands
over at once with CAMERA_LOST, and recovers only once the camera is back and `recover_after`
good results have followed.
"""

from __future__ import annotations

import math
import time

from edgert.runtime import wire
from edgert.runtime.e2e import CLOCK_SKEW_NS
from edgert.runtime.manifest import load_manifest
from edgert.runtime.node import Node
from edgert.runtime.stage import RateLimitedLog
from edgert.runtime.transport import latest_reader, publisher
from edgert.runtime.wire import CameraState, CommandFlags, MsgType, ResultStatus, Stamp, TakeoverReason

STARTUP_GRACE_NS = 1_000_000_000  # from the start signal to the first valid result
# A result made from a black, frozen or out-of-domain camera image hands over with the camera's own reason.
_CAMERA_REASONS: dict[int, TakeoverReason] = {ResultStatus.CAMERA_BLACKOUT: TakeoverReason.CAMERA_BLACKOUT,
                   ResultStatus.CAMERA_FROZEN: TakeoverReason.CAMERA_FROZEN,
                   ResultStatus.LIGHT_OUTSIDE_ODD: TakeoverReason.LIGHT_OUTSIDE_ODD}


class ControlStage(Node):
    name = "control"
    clock = staticmethod(time.monotonic_ns)  # every stamp and age; tests drive `tick` on a simulated one

    def setup(self) -> None:
        c = self.cfg.control
        # the manifest the supervisor approved at start (its pin), never one edited since
        self.decoder = load_manifest(self.cfg.model_dir(), pin=self.ctx.manifest_sha256).decoder
        self.deadline_ns = self.cfg.deadline_ns
        self.period_ns = int(1e9 / self.cfg.camera.fps)
        self.max_steer = c.max_steer_rad
        self.max_rate = c.max_steer_rate_rad_s
        self.results = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "results"))
        self.supervisor = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "supervisor"))
        # The steering the vehicle reports: a (re)started stage ramps from where the wheels are,
        # not from neutral, so its first command is never a step.
        self.vehicle = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "vehicle"))
        self.camera = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "camera_state"))
        self.camera_lost = ""  # why the source says its camera is lost; "" = frames flow
        self.pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "commands"))
        self.can = None
        if c.can_interface:  # the same commands on a CAN bus, E2E-protected (runtime/canbus.py)
            from edgert.runtime.canbus import CanSink

            self.can = self.own(CanSink(c.can_interface, c.can_channel, c.can_id))
        self.cmd = wire.new_message(MsgType.COMMAND)
        # Sequence numbers continue from the clock (in ms) so a restarted stage never repeats one.
        self.cmd["seq"] = time.monotonic_ns() // 1_000_000
        self.steer = 0.0
        self.last_cmd_ns = 0
        self.acted_capture_ns = 0  # capture stamp of the frame behind the last model command
        self.watch_from_ns = 0  # 0 = watchdog not armed yet (the pipeline has not started)
        self.failsafe: TakeoverReason = TakeoverReason.NONE
        self.good_streak = 0  # good results (fresh, valid, ids increasing) in a row, since the last acted on
        self._streak_id = 0  # frame id of the newest of them
        self._seen_since = 0  # stale or invalid results after the last acted-on frame id (not drops)
        self.resyncs = 0  # times the frame ids went back and were followed
        self.future = 0
        self.stale = 0
        self.invalid = 0
        self.takeovers = 0
        self._warn_stale = RateLimitedLog(self.log)

    # -- commands ---------------------------------------------------------------------
    def _rate_limited(self, target: float, now: int) -> float:
        target = min(max(target, -self.max_steer), self.max_steer)
        # The first command starts from neutral as if one frame period had passed.
        dt = min((now - self.last_cmd_ns) / 1e9, 0.2) if self.last_cmd_ns else self.period_ns / 1e9
        step = self.max_rate * dt
        return min(max(target, self.steer - step), self.steer + step)

    def _send(self, steer: float, now: int, stamps: object, frame_id: int) -> None:
        if not math.isfinite(steer):  # unreachable by construction; a NaN must never leave this stage
            raise AssertionError(f"non-finite steering command {steer}")
        self.steer = steer
        self.last_cmd_ns = now
        c = self.cmd
        c["seq"] += 1
        c["frame_id"] = frame_id
        c["steer"] = steer
        c["flags"] = int(CommandFlags.TAKEOVER | CommandFlags.FAILSAFE) if self.failsafe else 0
        c["reason"] = int(self.failsafe)
        c["accel"] = -self.cfg.control.failsafe_decel_mps2 if self.failsafe else 0.0
        c["stamps"][:] = stamps
        sent = self.clock()
        c["stamps"][Stamp.CTRL_SEND] = sent
        # never negative: a capture stamp up to CLOCK_SKEW_NS after the clock is accepted, and is age 0
        c["age_ns"] = max(0, sent - int(c["stamps"][Stamp.CAPTURE])) if c["stamps"][Stamp.CAPTURE] else 0
        self.pub.send(wire.encode(c))
        if self.can is not None:
            self.can.send(steer, float(c["accel"]), int(c["flags"]), int(c["reason"]), int(c["seq"]), int(c["age_ns"]))

    def _enter_failsafe(self, reason: TakeoverReason, detail: str) -> None:
        # The good-result streak holds only results not acted on (a bad one resets it): those came after
        # the frame that timed out, so on a DEADLINE they count toward recovery, as toward a resync.
        if not self.failsafe:
            self.takeovers += 1
            self.log.warning("FAIL-SAFE, takeover requested (%s): %s", reason.name.lower(), detail)
        elif self.failsafe == TakeoverReason.CAMERA_LOST and self.camera_lost:
            return  # the camera's loss is the reason until it is back, whatever its last frames' results say
        elif reason == TakeoverReason.CAMERA_LOST:  # in fail-safe already: the commands now say why
            self.log.warning("fail-safe, the camera is lost: %s", detail)
        self.failsafe = reason

    def _failsafe_command(self, now: int, force: bool = False) -> None:
        """A fresh fail-safe command (never a re-sent model command), at most once per frame period."""
        if force or now - self.last_cmd_ns >= self.period_ns:
            stamps = self.cmd["stamps"].copy()
            stamps[:] = 0
            stamps[Stamp.CTRL_RECV] = now
            self._send(self._rate_limited(0.0, now), now, stamps, 0)

    # -- loop -------------------------------------------------------------------------
    def step(self) -> None:
        if not self.watch_from_ns:
            self._watch_for_start()
        if not self.last_cmd_ns:
            self._follow_vehicle_steer()
        state = self.camera.drain()
        if state is not None:
            self.on_camera_state(state)
        self.tick(self.results.recv(10), self.clock())

    def on_camera_state(self, msg: bytes) -> None:
        """The source's word on its camera (runtime/stages/source.py): lost (and why), or back."""
        rec = self.decode(msg, MsgType.CAMERA)
        if rec is None:
            return
        if int(rec["state"]) == CameraState.LOST:
            if not self.camera_lost:
                self.good_streak = 0  # results in flight from before the loss do not count toward recovery
                self.camera_lost = (f"camera {int(rec['camera'])}: {bytes(rec['why']).decode('ascii')} "
                                    f"(last good frame {int(rec['frame_id'])})")
        elif self.camera_lost:
            self.log.warning("camera back: fail-safe until %d good results", self.cfg.control.recover_after)
            self.camera_lost = ""
            self.good_streak = 0  # recovery counts results from frames after the camera came back

    def tick(self, msg: bytes | None, now: int) -> None:
        """One result (or none) at `now`: act on it, watch the deadline, send a fail-safe command when due."""
        if self.camera_lost and self.watch_from_ns and self.failsafe != TakeoverReason.CAMERA_LOST:
            self._enter_failsafe(TakeoverReason.CAMERA_LOST, self.camera_lost)  # before a result is acted on
        if msg is not None:
            self._on_result(msg, now)
        if self.watch_from_ns and not self.failsafe:  # in fail-safe, only good results matter (recovery)
            if self.acted_capture_ns:
                age = now - self.acted_capture_ns
                if age > self.deadline_ns:
                    self._enter_failsafe(TakeoverReason.DEADLINE,
                                         f"the newest valid frame is {age / 1e6:.1f} ms old "
                                         f"(deadline {self.deadline_ns / 1e6:.1f} ms)")
            elif now > self.watch_from_ns:
                self._enter_failsafe(TakeoverReason.STARTUP,
                                     f"no valid result {STARTUP_GRACE_NS / 1e9:.1f} s after the pipeline "
                                     f"started ({self.stale} stale, {self.invalid} invalid)")
        if self.failsafe:
            self._failsafe_command(now)

    def _watch_for_start(self) -> None:
        """Arm the watchdog when the supervisor starts the camera, with a grace period for the first frame."""
        if self.is_start_signal(self.supervisor.drain()):
            self.watch_from_ns = self.clock() + STARTUP_GRACE_NS

    def _follow_vehicle_steer(self) -> None:
        """Until this stage has commanded anything, the rate limiter starts from the measured steer."""
        msg = self.vehicle.drain()
        if msg is not None:
            rec = self.decode(msg, MsgType.VEHICLE)
            if rec is not None and abs(float(rec["steer"])) <= self.max_steer:
                self.steer = float(rec["steer"])

    def _not_acted_on(self, frame_id: int = 0) -> None:
        self.good_streak = 0  # recovery needs *consecutive* good results
        if frame_id > self._last_frame_id:
            self._seen_since += 1

    def _advance_frame_id(self, frame_id: int) -> None:
        """Only a result acted on moves the frame id on; the gap, less the stale and invalid results
        seen in it, is frames this stage never got."""
        if self._last_frame_id:
            self.dropped += max(0, frame_id - self._last_frame_id - 1 - self._seen_since)
        self._last_frame_id, self._seen_since = frame_id, 0

    def _on_result(self, msg: bytes, now: int) -> None:
        rec = self.decode(msg, MsgType.RESULT)
        if rec is None:
            self._not_acted_on()
            return
        frame_id, capture_ns = int(rec["frame_id"]), int(rec["stamps"][Stamp.CAPTURE])
        if capture_ns - now > CLOCK_SKEW_NS:
            self.future += 1
            self.reject(f"result for frame {frame_id} was captured {(capture_ns - now) / 1e6:.1f} ms after now "
                        f"(clock skew allowed: {CLOCK_SKEW_NS / 1e6:.1f} ms): forged or a broken clock")
            self._not_acted_on()
            return
        if now - capture_ns > self.deadline_ns:
            self.stale += 1
            self.dropped += 1  # a frame never acted on
            self._warn_stale("result for frame %d is %.1f ms old (deadline %.1f ms): not acted on",
                             frame_id, (now - capture_ns) / 1e6, self.deadline_ns / 1e6)
            self._not_acted_on(frame_id)
            return
        index = self.decoder.index
        value = float(rec["values"][index]) * self.decoder.scale if index < int(rec["n_values"]) else math.nan
        plausible = math.isfinite(value) and abs(value) <= self.cfg.control.plausible_steer_rad
        if int(rec["status"]) != ResultStatus.OK or not plausible:
            if frame_id <= self._last_frame_id:  # an old result: nothing to act on, nor to hand over for
                self.reject(f"frame id {frame_id} not after {self._last_frame_id} (repeated or reordered)")
                self._not_acted_on()
                return
            self._not_acted_on(frame_id)
            self.invalid += 1
            why = (f"status {ResultStatus(int(rec['status'])).name}" if int(rec["status"]) != ResultStatus.OK
                   else f"decoded value {value} (index {index} of {int(rec['n_values'])} values; plausible "
                        f"|value| <= {self.cfg.control.plausible_steer_rad} rad)")
            reason = _CAMERA_REASONS.get(int(rec["status"]), TakeoverReason.INVALID_RESULT)
            self._enter_failsafe(reason, f"frame {frame_id}: {why}")
            return
        self.good_streak = self.good_streak + 1 if self.good_streak and frame_id > self._streak_id else 1
        self._streak_id = frame_id
        if frame_id <= self._last_frame_id:  # the frame acted on last is never acted on again
            if frame_id == self._last_frame_id or self.good_streak < self.cfg.control.recover_after:
                self.reject(f"frame id {frame_id} not after {self._last_frame_id} (repeated or reordered)")
                return
            self.resyncs += 1
            self.log.warning("frame ids went back from %d to %d over %d consecutive good results: following "
                             "them (the camera source restarted, or frame %d was forged)", self._last_frame_id,
                             frame_id, self.good_streak, self._last_frame_id)
            self._last_frame_id = 0
        self._advance_frame_id(frame_id)
        self.frames += 1
        if self.failsafe:
            if self.good_streak < self.cfg.control.recover_after or self.camera_lost:
                return
            self.log.warning("recovered after %d consecutive good results", self.good_streak)
            self.failsafe = TakeoverReason.NONE
        self.good_streak = 0  # acted on: after a takeover, recovery counts afresh
        self.acted_capture_ns = capture_ns
        stamps = rec["stamps"].copy()
        stamps[Stamp.CTRL_RECV] = now
        self._send(self._rate_limited(value, now), now, stamps, frame_id)

    def teardown(self) -> None:
        """Say so before going silent: a last fail-safe command with a SHUTDOWN takeover request."""
        if hasattr(self, "pub") and self.watch_from_ns:
            self.failsafe = TakeoverReason.SHUTDOWN
            self._failsafe_command(self.clock(), force=True)
        super().teardown()
