"""The car-mounted pinhole camera over flat ground: where each image row looks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    width: int = 1920
    height: int = 1080
    hfov_deg: float = 60.0
    height_m: float = 1.3
    pitch_deg: float = 4.0  # looking down

    @property
    def fx(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2

    @property
    def horizon_row(self) -> float:
        return self.cy - self.fx * math.tan(math.radians(self.pitch_deg))

    def ground_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Per image row: forward ground distance X (inf at and above the horizon) and the lateral
        scale k such that a pixel (u, v) sees the ground point lateral_left = k[v] * (cx - u).

        Pitch only, flat ground: the ray (a, b, 1) with a = (u-cx)/f, b = (v-cy)/f has forward
        component cos(p) - b sin(p) and downward component sin(p) + b cos(p); it meets the ground
        at t = h / down.
        """
        p = math.radians(self.pitch_deg)
        b = (np.arange(self.height) - self.cy) / self.fx
        down = math.sin(p) + b * math.cos(p)
        with np.errstate(divide="ignore"):
            t = np.where(down > 1e-9, self.height_m / np.maximum(down, 1e-9), np.inf)
        forward = t * (math.cos(p) - b * math.sin(p))
        return forward, t / self.fx

    def project(self, forward: float, left: float) -> tuple[float, float]:
        """Pixel (u, v) of a ground point in the vehicle frame (tests use it to check the renderer)."""
        p = math.radians(self.pitch_deg)
        # camera frame: z along the optical axis, y down, x right
        zc = forward * math.cos(p) + self.height_m * math.sin(p)
        yc = -forward * math.sin(p) + self.height_m * math.cos(p)
        return self.cx + self.fx * (-left) / zc, self.cy + self.fx * yc / zc
