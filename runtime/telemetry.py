"""Run telemetry: end-to-end and per-stage latency, command checks and lane error.

Every command carries the `monotonic_ns` stamps of all stages that touched its frame
(CLOCK_MONOTONIC is shared by all processes on the host), so one subscriber to the
command topic sees the whole pipeline's timing without asking any stage. Lane error
comes from the simulator's ground-truth topic, camera losses from the source's `camera_state`.
Counters come from stage heartbeats.

Memory is bounded whatever the run's length (a car runs with duration_s = 0 for hours): the
latencies go into fixed-size log histograms (runtime/stats.LatencyStats: percentiles within
1.2 %, mean and max exact), lane error into running sums, the raw stamps of only the newest
STAMP_WINDOW commands are kept (benchmarks read them), and the first TAKEOVERS_KEPT takeovers and
LOSSES_KEPT camera losses.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from edgert.runtime import wire
from edgert.runtime.e2e import CommandChecker, Verdict
from edgert.runtime.stats import LatencyStats, Samples
from edgert.runtime.transport import Endpoints, subscriber
from edgert.runtime.wire import CameraState, CommandFlags, MsgType, Stamp, TakeoverReason, VehicleFlags, WireError

# (name, from stamp, to stamp): the hops and stages a frame passes, in order.
SEGMENTS = (
    ("capture->preprocess", Stamp.CAPTURE, Stamp.PRE_RECV),
    ("preprocess", Stamp.PRE_RECV, Stamp.PRE_DONE),
    ("preprocess->infer", Stamp.PRE_DONE, Stamp.INFER_RECV),
    ("infer", Stamp.INFER_RECV, Stamp.INFER_DONE),
    ("infer->control", Stamp.INFER_DONE, Stamp.CTRL_RECV),
    ("control", Stamp.CTRL_RECV, Stamp.CTRL_SEND),
)
_ORDER = [Stamp.CAPTURE, Stamp.PRE_RECV, Stamp.PRE_DONE, Stamp.INFER_RECV, Stamp.INFER_DONE,
          Stamp.CTRL_RECV, Stamp.CTRL_SEND]
STAMP_WINDOW = 1 << 16  # newest commands whose raw stamps are kept: 4 MiB, minutes at any camera rate
TAKEOVERS_KEPT = 100  # takeovers listed in the summary (all are counted)
REASON_CHANGES_KEPT = 8  # reasons listed per takeover, in order
LOSSES_KEPT = 100  # camera losses listed in the summary (all are counted)


@dataclass
class CommandChecks:
    commands: int = 0
    model_commands: int = 0
    failsafe_commands: int = 0
    takeover_events: int = 0  # transitions into fail-safe
    takeover_reasons: dict[str, int] = field(default_factory=dict)  # takeover events by reason
    out_of_range: int = 0
    non_monotone_stamps: int = 0


_FAULTS = (VehicleFlags.CAMERA_BLACKOUT, VehicleFlags.CAMERA_FROZEN, VehicleFlags.FRAME_DROPPED,
           VehicleFlags.LIGHT_OUTSIDE_ODD)


@dataclass
class VehicleFlagCounts:
    """From the simulator's VEHICLE flags: actuator timeouts, and the faults it injected (ground truth
    to hold the takeover requests against: which fault, from when, for how many frames)."""

    actuator_timeouts: dict[str, int] = field(default_factory=lambda: {"events": 0, "frames": 0})
    faults: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> first_t_ns, frames
    _timed_out: bool = False

    def add(self, flags: int, t_ns: int) -> None:
        timed_out = bool(flags & VehicleFlags.ACTUATOR_TIMEOUT)
        if timed_out:
            self.actuator_timeouts["frames"] += 1
            self.actuator_timeouts["events"] += not self._timed_out
        self._timed_out = timed_out
        for f in _FAULTS:
            if flags & f:
                rec = self.faults.setdefault(str(f.name), {"first_t_ns": t_ns, "frames": 0})
                rec["frames"] += 1


@dataclass
class CameraLosses:
    """From the source's `camera_state`: how often the camera was lost, for how long, and the first
    LOSSES_KEPT losses (when, why, the last good frame before, how long); constant memory."""

    losses: int = 0
    lost_ns: int = 0  # ended losses only; one still going is `lost_now`
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    _current: dict[str, Any] | None = None

    def add(self, rec: np.void) -> None:
        since = int(rec["since_ns"])
        cur = self._current
        if int(rec["state"]) == CameraState.LOST:
            if cur is not None and cur["since_ns"] == since:
                return  # the same loss, said again
            self.losses += 1
            cur = self._current = {"since_ns": since, "why": bytes(rec["why"]).decode("ascii"),
                                   "frame_id": int(rec["frame_id"]), "capture_ns": int(rec["capture_ns"]),
                                   "lost_s": None}
            if len(self.events) < LOSSES_KEPT:
                self.events.append(cur)
        elif cur is not None:  # back
            self.lost_ns += max(0, since - cur["since_ns"])
            cur["lost_s"] = max(0, since - cur["since_ns"]) / 1e9
            self._current = None

    def summary(self) -> dict[str, Any]:
        return {"losses": self.losses, "lost_s": self.lost_ns / 1e9, "lost_now": self._current is not None,
                "events": [dict(e) for e in self.events], "rejected": self.rejected}


@dataclass
class _LaneError:
    """Running sums of the lane error: its mean, RMS and maximum in constant memory."""

    n: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    max_abs: float = 0.0

    def add(self, lateral_m: float) -> None:
        a = abs(lateral_m)
        self.n += 1
        self.sum_abs += a
        self.sum_sq += a * a
        self.max_abs = max(self.max_abs, a)


class Telemetry:
    """Subscribes to `commands` and `vehicle` on a thread of its own until `stop()`."""

    def __init__(self, ctx: zmq.Context, endpoints: Endpoints, max_steer: float, lane_half_margin_m: float,
                 deadline_ns: int, stamp_window: int = STAMP_WINDOW) -> None:
        self.ctx, self.endpoints = ctx, endpoints
        self.max_steer = max_steer
        self.departure_m = lane_half_margin_m
        self.stamps = Samples(width=wire.N_STAMPS, limit=stamp_window)  # the newest only; `n` counts all
        self.end_to_end = LatencyStats()
        self.stage_latency = {name: LatencyStats() for name, _, _ in SEGMENTS}
        self.actuation_age = LatencyStats()
        self.lane = _LaneError()
        self.checks = CommandChecks()
        self.e2e = CommandChecker(max_age_ns=deadline_ns)  # sees every command: loss here is real loss
        self.takeovers: list[dict[str, Any]] = []  # the first TAKEOVERS_KEPT: when each began, why, when it ended
        self._takeover: dict[str, Any] | None = None  # the one in progress (listed or not)
        self.vehicle_rejected = 0
        self.departures = 0
        self.departure_t_ns: list[int] = []  # when each departure began (first 100)
        self.vehicle_flags = VehicleFlagCounts()
        self.camera = CameraLosses()
        self._out_of_lane = False
        self._in_failsafe = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        cmds = subscriber(self.ctx, self.endpoints, "commands")
        veh = subscriber(self.ctx, self.endpoints, "vehicle")
        cam = subscriber(self.ctx, self.endpoints, "camera_state")
        poller = zmq.Poller()
        poller.register(cmds, zmq.POLLIN)
        poller.register(veh, zmq.POLLIN)
        poller.register(cam, zmq.POLLIN)
        self._ready.set()
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(50):
                    while True:
                        try:
                            msg = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if sock is cmds:
                            self._on_command(msg)
                        elif sock is veh:
                            self._on_vehicle(msg)
                        else:
                            self._on_camera(msg)
        finally:
            cmds.close(linger=0)
            veh.close(linger=0)
            cam.close(linger=0)

    def _on_command(self, msg: bytes) -> None:
        c = self.checks
        rec, verdict = self.e2e.check(msg)
        if rec is None or verdict in (Verdict.REPEATED, Verdict.REORDERED):
            return
        c.commands += 1
        if abs(float(rec["steer"])) > self.max_steer + 1e-6:
            c.out_of_range += 1
        sent = int(rec["stamps"][Stamp.CTRL_SEND])
        failsafe = bool(int(rec["flags"]) & CommandFlags.FAILSAFE)
        if failsafe and not self._in_failsafe:  # a takeover request begins: count it by its reason
            c.takeover_events += 1
            reason = TakeoverReason(int(rec["reason"])).name
            c.takeover_reasons[reason] = c.takeover_reasons.get(reason, 0) + 1
            self._takeover = {"t_ns": sent, "reason": reason, "reasons": [reason], "resumed_ns": None}
            if len(self.takeovers) < TAKEOVERS_KEPT:
                self.takeovers.append(self._takeover)
        elif failsafe and self._takeover is not None:
            # the reason may change within one takeover (a DEADLINE the source then says is CAMERA_LOST):
            # each change is listed, at most REASON_CHANGES_KEPT of them
            reasons, reason = self._takeover["reasons"], TakeoverReason(int(rec["reason"])).name
            if reason != reasons[-1] and len(reasons) < REASON_CHANGES_KEPT:
                reasons.append(reason)
        if not failsafe and self._in_failsafe and self._takeover is not None:
            self._takeover["resumed_ns"] = sent
        self._in_failsafe = failsafe
        if failsafe:
            c.failsafe_commands += 1
            return
        c.model_commands += 1
        st = rec["stamps"]
        ordered = st[_ORDER]
        if (ordered == 0).any() or (np.diff(ordered.astype(np.int64)) < 0).any():
            c.non_monotone_stamps += 1
        self.stamps.append(st)
        t = st.tolist()
        self.end_to_end.record(t[Stamp.CTRL_SEND] - t[Stamp.CAPTURE])
        for name, a, b in SEGMENTS:
            self.stage_latency[name].record(t[b] - t[a])

    def _on_vehicle(self, msg: bytes) -> None:
        try:
            rec = wire.decode(msg, MsgType.VEHICLE)
        except WireError:
            self.vehicle_rejected += 1
            return
        lat = float(rec["lateral"])
        self.lane.add(lat)
        out = abs(lat) > self.departure_m
        if out and not self._out_of_lane:
            self.departures += 1
            if len(self.departure_t_ns) < 100:
                self.departure_t_ns.append(int(rec["t_ns"]))
        self._out_of_lane = out
        if int(rec["cmd_age_ns"]):
            self.actuation_age.record(float(rec["cmd_age_ns"]))
        self.vehicle_flags.add(int(rec["flags"]), int(rec["t_ns"]))

    def _on_camera(self, msg: bytes) -> None:
        try:
            rec = wire.decode(msg, MsgType.CAMERA)
        except WireError:
            self.camera.rejected += 1
            return
        self.camera.add(rec)

    def summary(self) -> dict[str, Any]:
        lane = self.lane
        out: dict[str, Any] = {
            "end_to_end": self.end_to_end.summary(),
            "stage_latency": {name: s.summary() for name, s in self.stage_latency.items()} if self.end_to_end.n else {},
            "actuation_age": self.actuation_age.summary(),
            "commands": vars(self.checks),
            "e2e": vars(self.e2e.counters),
            "takeovers": [{"t_ns": t["t_ns"], "reason": t["reason"], "reasons": list(t["reasons"]),
                           "resumed_after_s": None if t["resumed_ns"] is None else (t["resumed_ns"] - t["t_ns"]) / 1e9}
                          for t in self.takeovers],
            "lane": {
                "frames": lane.n,
                "mean_abs_m": lane.sum_abs / lane.n if lane.n else float("nan"),
                "rms_m": math.sqrt(lane.sum_sq / lane.n) if lane.n else float("nan"),
                "max_abs_m": lane.max_abs if lane.n else float("nan"),
                "departures": self.departures,
                "departure_t_ns": self.departure_t_ns,
                "departure_threshold_m": self.departure_m,
            },
            "actuator_timeouts": self.vehicle_flags.actuator_timeouts,
            "injected_faults": self.vehicle_flags.faults,
            "camera": self.camera.summary(),
        }
        return out
