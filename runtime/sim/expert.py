"""Pure-pursuit steering toward the lane centre: the training labels, and a reference driver."""

from __future__ import annotations

import math

from edgert.runtime.sim.road import Road
from edgert.runtime.sim.vehicle import VehicleState


def expert_steer(road: Road, state: VehicleState, wheelbase_m: float = 2.7, lookahead_s: float = 0.9,
                 min_lookahead_m: float = 8.0, s_hint: float | None = None) -> float:
    """Steering angle (rad, left positive, unclamped) that arcs the rear axle onto the lane-centre
    point one lookahead ahead (lookahead = max(min_lookahead_m, lookahead_s * speed), along the road).

    Pure pursuit has no steady-state error on a constant-curvature arc and converges smoothly
    from an offset, which makes it a clean label for a steering network. Pass s_hint (the car's
    arc length a moment ago) in a loop to keep the road search local.
    """
    ld = max(min_lookahead_m, lookahead_s * state.speed)
    s, _, _ = road.project(state.x, state.y, s_hint)
    tx, ty, _ = road.pose_at(s + ld)
    dx, dy = tx - state.x, ty - state.y
    c, sn = math.cos(state.yaw), math.sin(state.yaw)
    fx, fy = c * dx + sn * dy, -sn * dx + c * dy  # target in the vehicle frame
    dist2 = fx * fx + fy * fy
    if dist2 < 1e-12:
        return 0.0
    # the circle through the rear axle, tangent to the heading, through the target: k = 2 y / d^2
    return math.atan(wheelbase_m * 2.0 * fy / dist2)
