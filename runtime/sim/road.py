"""A procedural two-lane road, reproducible from a seed.

The car drives in the right lane. The road is stored as the right lane's centre line,
densely sampled (arc length, position, heading, curvature), built from straights and
constant-curvature arcs joined by linear curvature ramps (clothoid-like), so heading and
curvature are continuous as on a real road. Lane markings are parallel offsets of it:
right edge at -w/2, dashed centre line at +w/2, left edge at +3w/2 (w = lane width).
"""

from __future__ import annotations

import numpy as np


class Road:
    def __init__(self, seed: int = 7, length_m: float = 6000.0, lane_width_m: float = 3.6, ds_m: float = 0.25,
                 min_radius_m: float = 150.0, max_radius_m: float = 600.0) -> None:
        rng = np.random.default_rng(seed)
        self.seed, self.lane_width, self.ds = seed, lane_width_m, ds_m
        n = int(length_m / ds_m) + 1
        self.s = np.arange(n) * ds_m
        kappa = np.zeros(n)
        pos, k_prev = 60.0, 0.0  # the first 60 m are straight
        while pos < length_m:
            ramp = rng.uniform(30.0, 60.0)
            hold = rng.uniform(60.0, 250.0)
            if rng.random() < 0.35:
                k_new = 0.0
            else:
                k_new = rng.choice([-1.0, 1.0]) / rng.uniform(min_radius_m, max_radius_m)
            i0, i1 = int(pos / ds_m), min(n, int((pos + ramp) / ds_m))
            kappa[i0:i1] = np.linspace(k_prev, k_new, max(i1 - i0, 1), endpoint=False)[: i1 - i0]
            kappa[i1:] = k_new
            pos += ramp + hold
            k_prev = k_new
        self.curvature = kappa
        # heading and position by trapezoidal integration along the arc
        self.heading = np.concatenate([[0.0], np.cumsum((kappa[1:] + kappa[:-1]) * 0.5 * ds_m)])
        c, s_ = np.cos(self.heading), np.sin(self.heading)
        self.x = np.concatenate([[0.0], np.cumsum((c[1:] + c[:-1]) * 0.5 * ds_m)])
        self.y = np.concatenate([[0.0], np.cumsum((s_[1:] + s_[:-1]) * 0.5 * ds_m)])

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def pose_at(self, s: float) -> tuple[float, float, float]:
        """(x, y, heading) of the lane centre at arc length s."""
        s = min(max(s, 0.0), self.length)
        i = min(int(s / self.ds), len(self.s) - 2)
        f = (s - self.s[i]) / self.ds
        return (float(self.x[i] + f * (self.x[i + 1] - self.x[i])), float(self.y[i] + f * (self.y[i + 1] - self.y[i])),
                float(self.heading[i] + f * (self.heading[i + 1] - self.heading[i])))

    def project(self, x: float, y: float, s_hint: float | None = None) -> tuple[float, float, float]:
        """(s, lateral, heading) of the lane-centre point nearest to (x, y); lateral > 0 = left of it.

        With s_hint the search looks only near it (O(window)), as a moving car needs.
        """
        if s_hint is None:
            lo, hi = 0, len(self.s)
        else:
            lo = max(0, int((s_hint - 30.0) / self.ds))
            hi = min(len(self.s), int((s_hint + 60.0) / self.ds) + 1)
        dx, dy = self.x[lo:hi] - x, self.y[lo:hi] - y
        i = lo + int(np.argmin(dx * dx + dy * dy))
        h = self.heading[i]
        ex, ey = x - self.x[i], y - self.y[i]
        along = ex * np.cos(h) + ey * np.sin(h)
        lateral = -ex * np.sin(h) + ey * np.cos(h)
        s = min(max(self.s[i] + along, 0.0), self.length)
        return float(s), float(lateral), float(self.pose_at(s)[2])
