"""Pure-pursuit steering toward the lane centre: the training labels, and a reference driver."""

from __future__ import annotations

import math

from runtime.sim.road import Road
from runtime.sim.vehicle import VehicleState


def expert_steer(road: Road, state: VehicleState, wheelbase_m: float = 2.7, lookahead_s: float = 0.9,
                 min_lookahead_m: float = 8.0, s_hint: float | None = None) -> float:
    """Steering angle (rad, left positive) that arcs the rear axle onto the lane centre one lookahead ahead."""
    ld = max(min_lookahead_m, lookahead_s * state.speed)
    s, _, _ = road.project(state.x, state.y, s_hint)
    tx, ty, _ = road.pose_at(s + ld)
    dx, dy = tx - state.x, ty - state.y
    c, sn = math.cos(state.yaw), math.sin(state.yaw)
    fx, fy = c * dx + sn * dy, -sn * dx + c * dy
    alpha = math.atan2(fy, fx)
    return math.atan2(2.0 * wheelbase_m * math.sin(alpha), math.hypot(fx, fy))
