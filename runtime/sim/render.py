"""Renders the road a car-mounted camera sees, straight into a caller's frame buffer.

Per frame, the lane-centre polyline ahead is put in the vehicle's frame once per image row
(rows map to fixed ground distances on flat ground); a Numba kernel then colours each pixel
by its signed distance across the road: grass, asphalt, and the three lane lines, with
coverage-based anti-aliasing so thin far lines do not flicker, a dashed centre line
(3 m dash, 9 m gap), a sky gradient and distance haze. Everything per-frame is preallocated;
the kernel is compiled and warmed in __init__.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from runtime.sim.camera import PinholeCamera
from runtime.sim.road import Road

LINE_W = 0.15
SHOULDER = 0.5
DASH, GAP = 3.0, 9.0
SKY_TOP = np.array([200.0, 150.0, 110.0])  # BGR
SKY_HORIZON = np.array([235.0, 215.0, 200.0])
HAZE = np.array([200.0, 195.0, 190.0])
ASPHALT = np.array([92.0, 90.0, 88.0])
GRASS = np.array([60.0, 120.0, 75.0])
LINE = np.array([235.0, 235.0, 235.0])


@njit(cache=True, nogil=True, inline="always")
def _cover(lo: float, hi: float, a: float, b: float) -> float:
    """Fraction of the pixel footprint [lo, hi] inside [a, b]."""
    o = min(hi, b) - max(lo, a)
    return 0.0 if o <= 0.0 else o / (hi - lo)


@njit(cache=True, nogil=True)
def _hash(i: int, j: int) -> float:
    h = (i * 374761393 + j * 668265263) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h >> 8) & 0xFFFF) / 65535.0 - 0.5


@njit(cache=True, nogil=True)
def _render(out, forward, kscale, cx, horizon, max_range, lane_w, rx, ry, rh, rs, i0, i1, px, py, yaw,
            sky_top, sky_hor, haze, asphalt, grass, line):
    h, w, _ = out.shape
    c, sn = math.cos(yaw), math.sin(yaw)
    j = i0
    lines = (-0.5 * lane_w, 0.5 * lane_w, 1.5 * lane_w)
    edge_lo, edge_hi = -0.5 * lane_w - SHOULDER, 1.5 * lane_w + SHOULDER
    for v in range(h - 1, -1, -1):  # bottom (near) to top (far): forward distance grows
        X = forward[v]
        if not X < max_range:
            # sky above the horizon; haze between the render range and the horizon
            if v < horizon:
                f = max(0.0, min(1.0, v / max(horizon, 1.0)))
                for ch in range(3):
                    val = sky_top[ch] + (sky_hor[ch] - sky_top[ch]) * f
                    for u in range(w):
                        out[v, u, ch] = np.uint8(val)
            else:
                for u in range(w):
                    for ch in range(3):
                        out[v, u, ch] = np.uint8(haze[ch])
            continue
        # march along the polyline to the point whose forward distance is X
        while j < i1 - 1:
            fx1 = c * (rx[j + 1] - px) + sn * (ry[j + 1] - py)
            if fx1 >= X:
                break
            j += 1
        fx0 = c * (rx[j] - px) + sn * (ry[j] - py)
        fx1 = c * (rx[j + 1] - px) + sn * (ry[j + 1] - py)
        t = 0.0 if fx1 == fx0 else min(max((X - fx0) / (fx1 - fx0), 0.0), 1.0)
        wx = rx[j] + t * (rx[j + 1] - rx[j])
        wy = ry[j] + t * (ry[j + 1] - ry[j])
        yc = -sn * (wx - px) + c * (wy - py)  # lane centre's lateral position at this row
        phi = rh[j] + t * (rh[j + 1] - rh[j]) - yaw
        sc = rs[j] + t * (rs[j + 1] - rs[j])
        cphi = math.cos(phi)
        k = kscale[v]
        pix = abs(k * cphi)  # across-road metres per pixel
        fog = min(max((X - 0.4 * max_range) / (0.6 * max_range), 0.0), 1.0) * 0.85
        dashed_on = (sc % (DASH + GAP)) < DASH
        dash_row = int(sc * 2.0)
        # per-row colours with the haze folded in, so a pixel is a few multiply-adds
        g0, g1, g2 = grass[0] * (1.0 - fog), grass[1] * (1.0 - fog), grass[2] * (1.0 - fog)
        a0, a1, a2 = asphalt[0] * (1.0 - fog), asphalt[1] * (1.0 - fog), asphalt[2] * (1.0 - fog)
        l0, l1, l2 = line[0] * (1.0 - fog), line[1] * (1.0 - fog), line[2] * (1.0 - fog)
        h0, h1, h2 = haze[0] * fog, haze[1] * fog, haze[2] * fog
        tex_amp = 1.0 - fog
        reach = 0.5 * LINE_W + pix  # a pixel farther than this from a line's centre has no paint
        dd = -k * cphi  # d(u + 1) - d(u)
        d = (k * cx - yc) * cphi  # signed distance across the road at u = 0, left positive
        for u in range(w):
            lo, hi = d - 0.5 * pix, d + 0.5 * pix
            tex = _hash(dash_row, int(d * 4.0 + 1000.0)) * tex_amp
            if hi <= edge_lo or lo >= edge_hi:  # grass
                gt = 1.0 + 0.25 * tex
                out[v, u, 0] = np.uint8(min(g0 * gt + h0, 255.0))
                out[v, u, 1] = np.uint8(min(g1 * gt + h1, 255.0))
                out[v, u, 2] = np.uint8(min(g2 * gt + h2, 255.0))
                d += dd
                continue
            road = 1.0 if (lo >= edge_lo and hi <= edge_hi) else _cover(lo, hi, edge_lo, edge_hi)
            paint = 0.0
            for li in range(3):
                if abs(d - lines[li]) < reach and (li != 1 or dashed_on):
                    paint += _cover(lo, hi, lines[li] - 0.5 * LINE_W, lines[li] + 0.5 * LINE_W)
            paint = min(paint, 1.0)
            gt = (1.0 + 0.25 * tex) * (1.0 - road)
            at = (1.0 + 0.08 * tex) * road
            keep = 1.0 - paint
            out[v, u, 0] = np.uint8(min((g0 * gt + a0 * at) * keep + l0 * paint + h0, 255.0))
            out[v, u, 1] = np.uint8(min((g1 * gt + a1 * at) * keep + l1 * paint + h1, 255.0))
            out[v, u, 2] = np.uint8(min((g2 * gt + a2 * at) * keep + l2 * paint + h2, 255.0))
            d += dd


class Renderer:
    def __init__(self, road: Road, camera: PinholeCamera, max_range_m: float = 150.0) -> None:
        self.road, self.camera, self.max_range = road, camera, max_range_m
        fwd, k = camera.ground_rows()
        self._forward = np.ascontiguousarray(fwd)
        self._k = np.ascontiguousarray(k)
        self._s_hint = 0.0
        self._shape = (camera.height, camera.width, 3)
        warm = np.empty(self._shape, np.uint8)
        x, y, h = road.pose_at(0.0)
        self.render(x, y, h, warm)  # compile (or load the cached kernel) now, not on the first frame
        self._s_hint = 0.0

    def render(self, x: float, y: float, yaw: float, out: np.ndarray) -> None:
        if out.shape != self._shape or out.dtype != np.uint8:
            raise ValueError(f"render target must be uint8 {self._shape}, got {out.dtype} {out.shape}")
        r = self.road
        s, _, _ = r.project(x, y, self._s_hint)
        self._s_hint = s
        i0 = max(0, int((s - 5.0) / r.ds))
        i1 = min(len(r.s), int((s + self.max_range + 30.0) / r.ds) + 2)
        cam = self.camera
        _render(out, self._forward, self._k, cam.cx, cam.horizon_row, self.max_range, r.lane_width,
                r.x, r.y, r.heading, r.s, i0, i1, x, y, yaw, SKY_TOP, SKY_HORIZON, HAZE, ASPHALT, GRASS, LINE)
