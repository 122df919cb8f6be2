"""The car-mounted pinhole camera over flat ground: where each image row looks.

Vehicle frame: X forward, Y left, ground at Z = -height_m below the camera. The camera is
pitched down by pitch_deg, with no roll or yaw, so every image row below the horizon sees the
ground at one forward distance X(v), and across a row the lateral position is linear in u:
    lateral_left(u, v) = scale(v) * (cx - u).
Derivation: the pixel ray (a, b, 1) with a = (u - cx)/f, b = (v - cy)/f has forward component
F = cos(p) - b sin(p) and downward component D = sin(p) + b cos(p); it meets the ground at
t = h / D, so X = t F and Y_left = -t a = (t / f) (cx - u). Pixel centres are at integer
(u, v); cx, cy are the image centre in that convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """A forward-looking camera with square pixels, pitched down by pitch_deg."""

    width: int = 1920
    height: int = 1080
    hfov_deg: float = 60.0
    height_m: float = 1.3
    pitch_deg: float = 4.0  # looking down

    def __post_init__(self) -> None:
        if self.width < 2 or self.height < 2 or not 0 < self.hfov_deg < 180 or self.height_m <= 0:
            raise ValueError(f"PinholeCamera: bad parameters {self}")
        if not -45 < self.pitch_deg < 89:
            raise ValueError(f"PinholeCamera: pitch_deg must be in (-45, 89), got {self.pitch_deg}")

    @property
    def fx(self) -> float:
        """Focal length in pixels (fy is the same: square pixels)."""
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2

    @property
    def horizon_row(self) -> float:
        """Image row (fractional) of the horizon: rows below it see the ground."""
        return self.cy - self.fx * math.tan(math.radians(self.pitch_deg))

    def ground_at(self, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(X, scale) at image rows v (fractional allowed): forward ground distance and lateral
        metres per pixel; inf where the row is at or above the horizon."""
        p = math.radians(self.pitch_deg)
        b = (np.asarray(v, dtype=np.float64) - self.cy) / self.fx
        down = math.sin(p) + b * math.cos(p)
        below = down > 1e-12
        t = self.height_m / np.where(below, down, 1.0)
        forward = np.where(below, t * (math.cos(p) - b * math.sin(p)), np.inf)
        return forward, np.where(below, t / self.fx, np.inf)

    def ground_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Per image row v = 0..height-1: forward ground distance X[v] (inf at and above the
        horizon) and the lateral scale k[v], so pixel (u, v) sees lateral_left = k[v] * (cx - u)."""
        return self.ground_at(np.arange(self.height, dtype=np.float64))

    def project(self, forward: float, left: float) -> tuple[float, float]:
        """Pixel (u, v) of the ground point `forward` metres ahead and `left` metres to the left."""
        p = math.radians(self.pitch_deg)
        zc = forward * math.cos(p) + self.height_m * math.sin(p)  # along the optical axis
        yc = -forward * math.sin(p) + self.height_m * math.cos(p)  # image down
        if zc <= 0:
            raise ValueError(f"ground point ({forward}, {left}) is behind the camera")
        return self.cx - self.fx * left / zc, self.cy + self.fx * yc / zc

    def unproject(self, u: float, v: float) -> tuple[float, float]:
        """Ground point (forward, left) seen at pixel (u, v); v must be below the horizon."""
        forward, k = self.ground_at(float(v))
        if not np.isfinite(forward):
            raise ValueError(f"row {v} is at or above the horizon ({self.horizon_row:.2f})")
        return float(forward), float(k) * (self.cx - u)
