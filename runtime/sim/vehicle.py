"""Kinematic bicycle model (rear-axle reference): how the simulated car moves under a steering command."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgert.runtime.sim.road import Road


@dataclass(frozen=True)
class VehicleState:
    """Rear-axle pose in the world frame (m, m, rad counter-clockwise from +x) and speed (m/s)."""

    x: float
    y: float
    yaw: float
    speed: float


@dataclass(frozen=True)
class BicycleModel:
    """Kinematic bicycle: no slip, so the rear axle moves on an arc of curvature tan(steer)/L."""

    wheelbase_m: float = 2.7
    max_steer_rad: float = 0.5

    def step(self, state: VehicleState, steer_rad: float, dt: float) -> VehicleState:
        """Advance by dt with the steering angle (left positive, clamped) held: the exact arc,
        so a constant command traces a true circle with no integration drift."""
        d = min(max(float(steer_rad), -self.max_steer_rad), self.max_steer_rad)
        dist = state.speed * dt
        k = math.tan(d) / self.wheelbase_m
        if abs(k * dist) < 1e-12:
            return VehicleState(state.x + dist * math.cos(state.yaw), state.y + dist * math.sin(state.yaw),
                                state.yaw, state.speed)
        yaw = state.yaw + k * dist
        return VehicleState(state.x + (math.sin(yaw) - math.sin(state.yaw)) / k,
                            state.y - (math.cos(yaw) - math.cos(state.yaw)) / k, yaw, state.speed)


def initial_state(road: Road, s: float = 0.0, lateral_m: float = 0.0, heading_err: float = 0.0,
                  speed: float = 15.0) -> VehicleState:
    """A car at arc length s, lateral_m left of the lane centre, heading_err (rad) off the road's heading."""
    x, y, h = road.pose_at(s)
    return VehicleState(x - lateral_m * math.sin(h), y + lateral_m * math.cos(h), h + heading_err, speed)
