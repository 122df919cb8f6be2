"""Kinematic bicycle model (rear-axle reference): how the simulated car moves under a steering command."""

from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.sim.road import Road


@dataclass(frozen=True)
class VehicleState:
    x: float
    y: float
    yaw: float
    speed: float


@dataclass(frozen=True)
class BicycleModel:
    wheelbase_m: float = 2.7
    max_steer_rad: float = 0.5

    def step(self, st: VehicleState, steer_rad: float, dt: float) -> VehicleState:
        """Advance by dt with the steering angle held (exact arc, so no integration drift)."""
        d = min(max(steer_rad, -self.max_steer_rad), self.max_steer_rad)
        dist = st.speed * dt
        k = math.tan(d) / self.wheelbase_m  # path curvature
        if abs(k) < 1e-9:
            return VehicleState(st.x + dist * math.cos(st.yaw), st.y + dist * math.sin(st.yaw), st.yaw, st.speed)
        yaw = st.yaw + dist * k
        return VehicleState(st.x + (math.sin(yaw) - math.sin(st.yaw)) / k,
                            st.y - (math.cos(yaw) - math.cos(st.yaw)) / k, yaw, st.speed)


def initial_state(road: Road, s: float = 0.0, lateral_m: float = 0.0, heading_err: float = 0.0,
                  speed: float = 15.0) -> VehicleState:
    """A car at arc length s, lateral_m left of the lane centre, heading_err off the road's heading."""
    x, y, h = road.pose_at(s)
    return VehicleState(x - lateral_m * math.sin(h), y + lateral_m * math.cos(h), h + heading_err, speed)
