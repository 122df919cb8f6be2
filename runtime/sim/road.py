"""A procedural two-lane road, reproducible from a seed.

The car drives in the right lane. The road is stored as the right lane's centre line, densely
sampled (arc length, position, heading, curvature). It is a seeded sequence of straights and
constant-curvature arcs (radius 150-600 m, either direction) joined by linear curvature ramps
(clothoids), so heading and curvature are continuous, as on a real road. The first 60 m are
straight. The road's heading stays within +-HEADING_LIMIT of its start, so x grows with arc
length: the road never crosses itself, and the nearest lane-centre point is unambiguous.

A road can also be built from explicit curvature holds (`segments`: (length, curvature) pairs,
e.g. a straight, then a 150 m-radius bend), joined by the same clothoid ramps: the test roads of
the scenarios in runtime/sim/scenarios.py. After the last hold the road goes on straight.

Lane markings are parallel offsets of the lane centre (`line_offsets`): the right edge at -w/2,
the dashed centre line at +w/2 and the left edge at +3w/2 (w = lane width, left positive).
Stretches listed in `unmarked` ((s0, s1) arc-length intervals) have no markings painted at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

START_STRAIGHT_M = 60.0
MIN_RADIUS_M, MAX_RADIUS_M = 150.0, 600.0
HEADING_LIMIT = 1.0  # rad, for a planned segment end; ramps may add ~0.4 rad, still < pi/2
SEARCH_BACK_M, SEARCH_AHEAD_M = 30.0, 60.0  # project()'s window around s_hint
MAX_CURVATURE = 1 / 30.0  # explicit segments: tighter than a 30 m radius is not a road a lane-keeper drives


class Road:
    """The lane-centre line of a procedural road, with nearest-point queries for a moving car."""

    def __init__(self, seed: int = 7, length_m: float = 6000.0, lane_width_m: float = 3.6,
                 ds_m: float = 0.25, segments: Sequence[tuple[float, float]] | None = None,
                 unmarked: Sequence[tuple[float, float]] = ()) -> None:
        """The seeded random road, or with `segments` ((length m, curvature 1/m, left positive)
        holds, ramped between) an explicit one, of length_m either way."""
        if length_m <= START_STRAIGHT_M or ds_m <= 0 or lane_width_m <= 0:
            raise ValueError(f"Road: need length_m > {START_STRAIGHT_M}, ds_m > 0, lane_width_m > 0")
        self.seed = seed
        self.lane_width = float(lane_width_m)
        self.ds = float(ds_m)
        n = round(length_m / ds_m) + 1
        self.s = np.arange(n, dtype=np.float64) * ds_m
        if segments is None:
            knots_s, knots_k = _curvature_knots(np.random.default_rng(seed), float(self.s[-1]))
        else:
            knots_s, knots_k = _segment_knots(segments)
        self.curvature = np.interp(self.s, knots_s, knots_k)
        self.unmarked = _intervals(unmarked)
        # heading: exact integral of the piecewise-linear curvature (trapezoid); position:
        # midpoint heading per step, exact to O(ds^3) on arcs
        dh = 0.5 * (self.curvature[1:] + self.curvature[:-1]) * ds_m
        self.heading = np.concatenate([[0.0], np.cumsum(dh)])
        mid = self.heading[:-1] + 0.5 * dh
        self.x = np.concatenate([[0.0], np.cumsum(np.cos(mid) * ds_m)])
        self.y = np.concatenate([[0.0], np.cumsum(np.sin(mid) * ds_m)])
        for a in (self.s, self.x, self.y, self.heading, self.curvature, self.unmarked):
            a.flags.writeable = False  # shared by renderers and controllers: never edited

    def is_marked(self, s: float) -> bool:
        """Whether the lane markings are painted at arc length s."""
        return not any(s0 <= s < s1 for s0, s1 in self.unmarked)

    @property
    def length(self) -> float:
        """Arc length of the lane centre, metres."""
        return float(self.s[-1])

    @property
    def line_offsets(self) -> tuple[float, float, float]:
        """Lateral offsets (left positive) of the right edge, dashed centre and left edge lines."""
        w = self.lane_width
        return (-0.5 * w, 0.5 * w, 1.5 * w)

    def _index(self, s: float) -> tuple[int, float]:
        s = min(max(s, 0.0), self.length)
        i = min(int(s / self.ds), len(self.s) - 2)
        return i, (s - self.s[i]) / self.ds

    def pose_at(self, s: float) -> tuple[float, float, float]:
        """(x, y, heading) of the lane centre at arc length s (clamped to the road)."""
        i, f = self._index(float(s))
        x, y, h = self.x, self.y, self.heading
        return (float(x[i] + f * (x[i + 1] - x[i])), float(y[i] + f * (y[i + 1] - y[i])),
                float(h[i] + f * (h[i + 1] - h[i])))

    def curvature_at(self, s: float) -> float:
        """Curvature (1/m, left positive) of the lane centre at arc length s."""
        i, f = self._index(float(s))
        k = self.curvature
        return float(k[i] + f * (k[i + 1] - k[i]))

    def project(self, x: float, y: float, s_hint: float | None = None) -> tuple[float, float, float]:
        """(s, lateral, heading) of the lane-centre point nearest to (x, y); lateral > 0 = left.

        With s_hint (the car's s a moment ago) only a window of SEARCH_BACK_M..SEARCH_AHEAD_M
        around it is searched, O(window) per call as a moving car needs; if the nearest point
        is at the window's edge (the car jumped), the whole road is searched.
        """
        n = len(self.s)
        lo, hi = 0, n
        if s_hint is not None:
            lo = max(0, int((s_hint - SEARCH_BACK_M) / self.ds))
            hi = min(n, int((s_hint + SEARCH_AHEAD_M) / self.ds) + 2)
            if hi - lo < 2:
                lo, hi = 0, n
        i = _nearest(self.x, self.y, x, y, lo, hi)
        if (i == lo and lo > 0) or (i == hi - 1 and hi < n):
            i = _nearest(self.x, self.y, x, y, 0, n)
        # refine on the interpolated centre line: Newton steps on the along-track offset
        s = float(self.s[i])
        for _ in range(3):
            cx, cy, h = self.pose_at(s)
            along = (x - cx) * math.cos(h) + (y - cy) * math.sin(h)
            if abs(along) < 1e-9:
                break
            lat = -(x - cx) * math.sin(h) + (y - cy) * math.cos(h)
            s = min(max(s + along / max(1.0 - self.curvature_at(s) * lat, 0.2), 0.0), self.length)
        cx, cy, h = self.pose_at(s)
        lateral = -(x - cx) * math.sin(h) + (y - cy) * math.cos(h)
        return s, float(lateral), h


def _nearest(xs: np.ndarray, ys: np.ndarray, x: float, y: float, lo: int, hi: int) -> int:
    dx = xs[lo:hi] - x
    dy = ys[lo:hi] - y
    return lo + int(np.argmin(dx * dx + dy * dy))


def _curvature_knots(rng: np.random.Generator, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Knots (s, curvature) of a piecewise-linear curvature profile: ramps between holds.

    A hold is a straight (30 %) or an arc turning 0.15-1.0 rad; its direction is random,
    flipped when the road's heading would leave +-HEADING_LIMIT.
    """
    ks, kk = [0.0, START_STRAIGHT_M], [0.0, 0.0]
    pos, k_prev, heading = START_STRAIGHT_M, 0.0, 0.0
    while pos < length:
        if rng.random() < 0.3:
            k_new, hold = 0.0, float(rng.uniform(40.0, 200.0))
        else:
            radius = float(rng.uniform(MIN_RADIUS_M, MAX_RADIUS_M))
            turn = float(rng.uniform(0.15, 1.0))
            k_new = (1.0 if rng.random() < 0.5 else -1.0) / radius
            hold = float(np.clip(radius * turn, 30.0, 400.0))
        ramp, turned = _ramp_and_turn(k_prev, k_new, hold)
        if abs(heading + turned) > HEADING_LIMIT:
            k_new = -k_new
            ramp, turned = _ramp_and_turn(k_prev, k_new, hold)
        ks += [pos + ramp, pos + ramp + hold]
        kk += [k_new, k_new]
        pos += ramp + hold
        heading += turned
        k_prev = k_new
    return np.asarray(ks), np.asarray(kk)


def _segment_knots(segments: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Knots of explicit holds: each (length, curvature) hold is entered by a clothoid ramp
    (the random road's rule), so curvature never jumps; the ramps add to the holds' lengths.
    After the last hold the curvature ramps back to 0 and stays there."""
    if not segments:
        raise ValueError("Road segments: empty; give (length_m, curvature) holds, e.g. [(200, 0.0), (300, 1/400)]")
    ks, kk, pos, k_prev = [0.0], [0.0], 0.0, 0.0
    for i, seg in enumerate(segments):
        try:
            length, k = (float(v) for v in seg)
        except (TypeError, ValueError):
            raise ValueError(f"Road segment {i}: {seg!r} is not a (length_m, curvature) pair") from None
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"Road segment {i}: length {length} m must be > 0")
        if not (math.isfinite(k) and abs(k) <= MAX_CURVATURE):
            raise ValueError(f"Road segment {i}: curvature {k} 1/m outside +-{MAX_CURVATURE:.4f} "
                             f"(radius >= {1 / MAX_CURVATURE:.0f} m); curvature is 1/radius, left positive")
        ramp = 0.0 if k == k_prev else _ramp_and_turn(k_prev, k, length)[0]
        ks += [pos + ramp, pos + ramp + length]
        kk += [k, k]
        pos += ramp + length
        k_prev = k
    if k_prev:  # then ramp out: the road goes on straight
        ks.append(pos + _ramp_and_turn(k_prev, 0.0, 0.0)[0])
        kk.append(0.0)
    return np.asarray(ks), np.asarray(kk)


def _intervals(pairs: Sequence[tuple[float, float]]) -> np.ndarray:
    """(n, 2) float64 array of (s0, s1) arc-length intervals, checked."""
    out = np.zeros((len(pairs), 2), np.float64)
    for i, pair in enumerate(pairs):
        s0, s1 = (float(v) for v in pair)
        if not (math.isfinite(s0) and math.isfinite(s1) and 0 <= s0 < s1):
            raise ValueError(f"Road unmarked stretch {i}: ({s0}, {s1}) must satisfy 0 <= s0 < s1 (metres of road)")
        out[i] = s0, s1
    return out


def _ramp_and_turn(k_prev: float, k_new: float, hold: float) -> tuple[float, float]:
    """Ramp length (gentle: curvature changes at most ~1/(150 m * 40 m)) and the heading change
    of ramp + hold."""
    ramp = float(np.clip(abs(k_new - k_prev) * 6000.0, 20.0, 60.0))
    return ramp, ramp * 0.5 * (k_prev + k_new) + hold * k_new
