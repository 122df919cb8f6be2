"""control: model output -> steering command, clamped and rate-limited, with a deadline watchdog.

A Level-2 assist must say the moment it cannot trust itself. Commands are computed
only from fresh, valid results (frame id moving forward, captured within the deadline,
finite). When none has arrived within the deadline, or a result is invalid, the stage
publishes fail-safe commands (steering ramped to neutral at the rate limit, gentle
deceleration) flagged TAKEOVER|FAILSAFE with the reason, once per frame period, and
returns to normal only after `recover_after` consecutive good results. It never
re-sends an old command as new: every command has a new sequence number and says
which frame it came from and how old that frame was.
"""

from __future__ import annotations

import time

from runtime import wire
from runtime.manifest import load_manifest
from runtime.stage import Stage
from runtime.transport import LatestReader, publisher, subscriber
from runtime.wire import CommandFlags, MsgType, ResultStatus, Stamp, TakeoverReason


class ControlStage(Stage):
    name = "control"

    def setup(self) -> None:
        c = self.cfg.control
        self.decoder = load_manifest(self.cfg.model_dir()).decoder
        self.deadline_ns = self.cfg.deadline_ns
        self.period_ns = int(1e9 / self.cfg.camera.fps)
        self.max_steer = c.max_steer_rad
        self.max_rate = c.max_steer_rate_rad_s
        self.results = self.own(LatestReader(subscriber(self.ctx.zmq, self.ctx.endpoints, "results")))
        self.pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "commands"))
        self.cmd = wire.new_message(MsgType.COMMAND)
        self.steer = 0.0
        self.last_cmd_ns = 0
        self.last_valid_ns = 0  # 0 = watchdog not armed: no result yet since start
        self.failsafe: TakeoverReason = TakeoverReason.NONE
        self.good_streak = 0
        self.stale = 0
        self.invalid = 0
        self.takeovers = 0

    def _rate_limited(self, target: float, now: int) -> float:
        target = min(max(target, -self.max_steer), self.max_steer)
        # The first command starts from neutral as if one frame period had passed.
        dt = min((now - self.last_cmd_ns) / 1e9, 0.2) if self.last_cmd_ns else self.period_ns / 1e9
        step = self.max_rate * dt
        return min(max(target, self.steer - step), self.steer + step)

    def _send(self, steer: float, now: int, stamps: object, frame_id: int) -> None:
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
        sent = time.monotonic_ns()
        c["stamps"][Stamp.CTRL_SEND] = sent
        c["age_ns"] = sent - int(c["stamps"][Stamp.CAPTURE]) if c["stamps"][Stamp.CAPTURE] else 0
        self.pub.send(wire.encode(c))

    def _enter_failsafe(self, reason: TakeoverReason, detail: str) -> None:
        self.good_streak = 0
        if not self.failsafe:
            self.takeovers += 1
            self.log.warning("FAIL-SAFE, takeover requested: %s", detail)
        self.failsafe = reason

    def _failsafe_command(self, now: int) -> None:
        """A fresh fail-safe command (never a re-sent model command), at most once per frame period."""
        if now - self.last_cmd_ns >= self.period_ns:
            stamps = self.cmd["stamps"].copy()
            stamps[:] = 0
            stamps[Stamp.CTRL_RECV] = now
            self._send(self._rate_limited(0.0, now), now, stamps, 0)

    def step(self) -> None:
        msg = self.results.recv(10)
        now = time.monotonic_ns()
        if msg is not None:
            self._on_result(msg, now)
        if self.last_valid_ns and now - self.last_valid_ns > self.deadline_ns:
            self._enter_failsafe(TakeoverReason.DEADLINE,
                                 f"no valid result for {(now - self.last_valid_ns) / 1e6:.1f} ms "
                                 f"(deadline {self.deadline_ns / 1e6:.1f} ms)")
        if self.failsafe:
            self._failsafe_command(now)

    def _on_result(self, msg: bytes, now: int) -> None:
        rec = self.decode(msg, MsgType.RESULT)
        if rec is None or not self.accept_frame_id(int(rec["frame_id"])):
            return
        age = now - int(rec["stamps"][Stamp.CAPTURE])
        if age > self.deadline_ns:
            self.stale += 1  # too old to act on; the watchdog decides if this becomes a takeover
            return
        value = float(rec["values"][self.decoder.index]) * self.decoder.scale
        if int(rec["status"]) != ResultStatus.OK:
            self.invalid += 1
            self._enter_failsafe(TakeoverReason.INVALID_RESULT,
                                 f"frame {int(rec['frame_id'])}: model output status "
                                 f"{ResultStatus(int(rec['status'])).name}")
            return
        self.frames += 1
        self.last_valid_ns = now
        if self.failsafe:
            self.good_streak += 1
            if self.good_streak < self.cfg.control.recover_after:
                return
            self.log.warning("recovered after %d consecutive good results", self.good_streak)
            self.failsafe = TakeoverReason.NONE
        stamps = rec["stamps"].copy()
        stamps[Stamp.CTRL_RECV] = now
        self._send(self._rate_limited(value, now), now, stamps, int(rec["frame_id"]))
