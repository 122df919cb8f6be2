"""Renders the road a car-mounted camera sees, straight into a caller's frame buffer.

With a pitch-only camera over flat ground each image row below the horizon sees one forward
distance X(v), and across a row the ground's lateral position is linear in u (camera.py).
So a frame is drawn row by row:
  1. the rows that do not depend on the pose (sky gradient, the horizon, and the fog beyond
     max_range) are copied from a block precomputed in __init__;
  2. the lane-centre polyline from just behind the car to well past max_range is put in the
     camera's frame (the car's pose is the camera's pose), and for every ground row the
     lane centre's lateral position, relative heading and arc length at X(v) are
     interpolated from it, walking rows and polyline together (one pass);
  3. each ground row is filled span by span in its signed distance across the road
     d(u) = d0 + du * u: grass, asphalt (shoulder 0.3 m beyond the edge lines), then the
     three 0.15 m lane lines painted on top. Lines are area-filtered across the row (the
     pixel's footprint in d, the line smeared by how far it slants across the pixel's height),
     so a line thinner than a pixel is drawn faint, with the same total paint wherever it
     falls, instead of flickering in and out; the centre line's 3 m dash /
     9 m gap is box-filtered along the road over the row's footprint in X; on the road's
     unmarked stretches (`Road.unmarked`, worn-away paint) no line is painted. Grass and asphalt
     carry a mild noise texture in road coordinates (arc length, d), so motion shows; it is
     mip-mapped by the row's ground footprint, so it fades with distance instead of
     shimmering. Distance haze is folded into each row's colours.
Every per-frame array (row tables, polyline, texture) is allocated in __init__; render()
allocates nothing frame-sized. The kernel is `@njit(cache=True, nogil=True)` and __init__
runs one warm-up render, so no frame ever waits for compilation.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from edgert.kernels.jitcache import njit  # cached under the user cache, never beside the installed sources
from edgert.runtime.sim.camera import PinholeCamera
from edgert.runtime.sim.road import Road

# --- look ------------------------------------------------------------------------------------
LINE_WIDTH_M = 0.15
SHOULDER_M = 0.3  # asphalt beyond the edge lines
DASH_M, GAP_M = 3.0, 9.0
BEHIND_M = 5.0  # polyline starts this far behind the car's nearest point
# colours, BGR
SKY_TOP = np.array([205.0, 160.0, 115.0])
SKY_HORIZON = np.array([232.0, 216.0, 200.0])
FOG = np.array([214.0, 208.0, 200.0])  # the ground at and beyond max_range
ASPHALT = np.array([92.0, 90.0, 88.0])
GRASS = np.array([58.0, 124.0, 80.0])
LINE = np.array([236.0, 236.0, 236.0])
GRASS_TEX = (0.02, 16.0)  # (texel m, amplitude in 8-bit steps per unit noise)
ASPHALT_TEX = (0.012, 7.0)
MIP_FADE = 0.7  # texture amplitude factor per mip level
HAZE_POWER = 1.5  # haze(X) = (X / max_range) ** HAZE_POWER

# --- texture: one noise image, mip-mapped ----------------------------------------------------
TEX_N = 512
TEX_OFFSET = float(1 << 24)  # keeps texture coordinates positive; a multiple of every level's size


@functools.lru_cache(maxsize=1)
def _noise_pyramid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A periodic noise texture (fine grain + soft blotches, std ~1) and its 2x2-box mip levels,
    packed in one flat float32 array: (flat, level offsets, level sizes). Fixed seed."""
    rng = np.random.default_rng(20240607)
    white = rng.standard_normal((TEX_N, TEX_N))
    f = np.fft.fftfreq(TEX_N)
    r2 = f[:, None] ** 2 + f[None, :] ** 2
    gauss = np.exp(-r2 * (2 * np.pi * 3.0) ** 2 / 2)  # a periodic blur of 3 texels
    blotch = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((TEX_N, TEX_N))) * gauss))
    blotch /= blotch.std()
    base = np.clip(0.6 * white + 0.8 * blotch, -3.0, 3.0)
    levels = [base]
    while levels[-1].shape[0] > 1:
        a = levels[-1]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    sizes = np.array([lv.shape[0] for lv in levels], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes * sizes)[:-1]]).astype(np.int64)
    flat = np.concatenate([lv.ravel() for lv in levels]).astype(np.float32)
    flat.flags.writeable = False
    return flat, offsets, sizes


# --- row tables: column indices --------------------------------------------------------------
# pose-independent floats (rows_f)
F_X, F_SCALE, F_FOOT, F_GINV, F_GAMP, F_AINV, F_AAMP = range(7)
F_GCOL, F_ACOL, F_LCOL = 7, 10, 13  # 3 each (BGR)
N_F = 16
# pose-independent ints (rows_i): texture row offset and size of the chosen mip level
I_GOFF, I_GN, I_AOFF, I_AN = range(4)
N_I = 4
# per-frame (pose): lane-centre lateral position, relative heading, arc length, valid flag
P_YC, P_PSI, P_S, P_VALID = range(4)
N_P = 4
PSI_LIMIT = 1.3  # rad; the polyline is cut before the road turns away more than ~90 degrees


@njit(cache=True, nogil=True, inline="always")
def _u8(val: float) -> np.uint8:
    return np.uint8(min(max(val, 0.0), 255.0) + 0.5)


@njit(cache=True, nogil=True, inline="always")
def _dash_integral(s: float) -> float:
    """Painted length of the dash pattern on [0, s] (negative s allowed)."""
    period = DASH_M + GAP_M
    k = math.floor(s / period)
    return k * DASH_M + min(s - k * period, DASH_M)


@njit(cache=True, nogil=True, inline="always")
def _ramp_integral(y: float, a: float, b: float) -> float:
    """Integral of (clamp(t, a, b) - a) dt from -inf to y."""
    if y <= a:
        return 0.0
    if y <= b:
        return 0.5 * (y - a) * (y - a)
    return (b - a) * (0.5 * (b - a) + y - b)


@njit(cache=True, nogil=True, inline="always")
def _line_cover(d: float, pixel: float, sweep: float, a: float, b: float) -> float:
    """Share of the pixel [d - pixel/2, d + pixel/2] covered by the line [a, b] smeared over
    `sweep` (how far the line moves across the row within the pixel's height), all in metres
    across the road. The line is convolved with a box of width `sweep`, then integrated over
    the pixel: a partition of unity, so the line's total paint in a row is its width whatever
    its sub-pixel position (a box of width pixel*max(1, slope) would not be)."""
    lo, hi = d - 0.5 * pixel, d + 0.5 * pixel
    if sweep < 1e-3 * pixel:
        return max(min(hi, b) - max(lo, a), 0.0) / pixel
    h = 0.5 * sweep
    return ((_ramp_integral(hi + h, a, b) - _ramp_integral(lo + h, a, b))
            - (_ramp_integral(hi - h, a, b) - _ramp_integral(lo - h, a, b))) / (sweep * pixel)


@njit(cache=True, nogil=True)
def _nearest(rx, ry, x, y, lo, hi):
    best, bd = lo, np.inf
    for i in range(lo, hi):
        dx = rx[i] - x
        dy = ry[i] - y
        d = dx * dx + dy * dy
        if d < bd:
            bd, best = d, i
    return best


@njit(cache=True, nogil=True, inline="always")
def _fill(orow, u0, u1, d0, du, tex, row, mask, inv, cb, cg, cr, amp, scratch):
    """Textured span [u0, u1) of a row (flat BGR bytes): colour + amp * noise(d(u)).

    Two loops, so that each vectorises: the texture gather into a float32 scratch row, then
    the colour math and the stride-3 byte stores. The colours leave room for the texture
    (base +- 3 amp stays in [0, 255]), so no clamping here.
    """
    b, g, r = np.float32(cb + 0.5), np.float32(cg + 0.5), np.float32(cr + 0.5)
    if amp == 0.0:
        ub, ug, ur = np.uint8(b), np.uint8(g), np.uint8(r)
        for u in range(u0, u1):
            orow[3 * u] = ub
            orow[3 * u + 1] = ug
            orow[3 * u + 2] = ur
        return
    for u in range(u0, u1):
        scratch[u] = tex[row + (np.int64((d0 + du * u) * inv + TEX_OFFSET) & mask)]
    a = np.float32(amp)
    for u in range(u0, u1):
        t = scratch[u] * a
        orow[3 * u] = np.uint8(np.int32(b + t))
        orow[3 * u + 1] = np.uint8(np.int32(g + t))
        orow[3 * u + 2] = np.uint8(np.int32(r + t))


@njit(cache=True, nogil=True, inline="always")
def _span(lo_f, hi_f, w):
    """Integer pixel range [a, b) for the real interval, clipped to [0, w]."""
    a = math.ceil(min(max(lo_f, -1.0), w + 1.0))
    b = math.floor(min(max(hi_f, -1.0), w + 1.0)) + 1
    return min(max(a, 0), w), min(max(b, 0), w)


@njit(cache=True, nogil=True)
def _unmarked(s, gaps):
    """Whether arc length s lies in one of the (s0, s1) rows of `gaps` (no paint there)."""
    for i in range(gaps.shape[0]):  # noqa: SIM110 (Numba compiles the loop, not any() of a generator)
        if gaps[i, 0] <= s < gaps[i, 1]:
            return True
    return False


@njit(cache=True, nogil=True)
def _render_frame(out, static, x, y, yaw, hint, rs, rx, ry, rh, poly, rows_f, rows_i, pose, uline, tex,
                  scratch, cx, lane_w, ahead_m, ds, gaps):
    h_img, w_img = out.shape[0], out.shape[1]
    flat = out.reshape((h_img, w_img * 3))
    nrows = rows_f.shape[0]
    v0 = h_img - nrows
    dst, src = out.reshape(-1), static.reshape(-1)
    for i in range(src.shape[0]):  # a plain loop: compiles to a memcpy, slice assignment does not
        dst[i] = src[i]

    # 1. the road's sample nearest to the camera: near the previous one, else anywhere
    n = rx.shape[0]
    i0 = -1
    if 0 <= hint[0] < n:
        lo, hi = max(hint[0] - 200, 0), min(hint[0] + 201, n)
        i = _nearest(rx, ry, x, y, lo, hi)
        if (i > lo or lo == 0) and (i < hi - 1 or hi == n):
            i0 = i
    if i0 < 0:
        i0 = _nearest(rx, ry, x, y, 0, n)
    hint[0] = i0

    # 2. lane-centre polyline in the camera frame, cut where it stops going forward
    c, sn = math.cos(yaw), math.sin(yaw)
    lo = max(i0 - int(BEHIND_M / ds), 0)
    hi = min(i0 + int(ahead_m / ds) + 1, n, lo + poly.shape[1])
    m = 0
    for i in range(lo, hi):
        dx, dy = rx[i] - x, ry[i] - y
        fwd = c * dx + sn * dy
        psi = rh[i] - yaw
        psi = psi - 2.0 * math.pi * math.floor((psi + math.pi) / (2.0 * math.pi))
        if (m > 0 and fwd <= poly[0, m - 1]) or abs(psi) > PSI_LIMIT:
            break
        poly[0, m], poly[1, m], poly[2, m], poly[3, m] = fwd, -sn * dx + c * dy, psi, rs[i]
        m += 1

    # 3. per ground row (near to far): lane centre at the row's forward distance
    j = 0
    for r in range(nrows - 1, -1, -1):
        X = rows_f[r, F_X]
        if m < 2 or X < poly[0, 0] or X > poly[0, m - 1]:
            pose[r, P_VALID] = 0.0
            continue
        while poly[0, j + 1] < X:
            j += 1
        t = (X - poly[0, j]) / (poly[0, j + 1] - poly[0, j])
        yc = poly[1, j] + t * (poly[1, j + 1] - poly[1, j])
        psi = poly[2, j] + t * (poly[2, j + 1] - poly[2, j])
        pose[r, P_YC], pose[r, P_PSI] = yc, psi
        pose[r, P_S] = poly[3, j] + t * (poly[3, j + 1] - poly[3, j])
        pose[r, P_VALID] = 1.0
        cp, k = math.cos(psi), rows_f[r, F_SCALE]
        for q in range(3):
            uline[q, r] = cx - ((q - 0.5) * lane_w / cp + yc) / k  # offsets -w/2, +w/2, +3w/2

    # 4. fill the ground rows
    a_lo, a_hi = -0.5 * lane_w - SHOULDER_M, 1.5 * lane_w + SHOULDER_M
    hl = 0.5 * LINE_WIDTH_M
    for r in range(nrows):
        orow = flat[v0 + r]
        k = rows_f[r, F_SCALE]
        gn, an = rows_i[r, I_GN], rows_i[r, I_AN]
        ginv, ainv = rows_f[r, F_GINV], rows_f[r, F_AINV]
        gamp, aamp = rows_f[r, F_GAMP], rows_f[r, F_AAMP]
        gb, gg, gr = rows_f[r, F_GCOL], rows_f[r, F_GCOL + 1], rows_f[r, F_GCOL + 2]
        ab, ag, ar = rows_f[r, F_ACOL], rows_f[r, F_ACOL + 1], rows_f[r, F_ACOL + 2]
        valid = pose[r, P_VALID] > 0.5
        if valid:
            psi = pose[r, P_PSI]
            cp = math.cos(psi)
            du = -k * cp
            d0 = (k * cx - pose[r, P_YC]) * cp
            s_row = pose[r, P_S]
        else:  # no road at this distance (its end, or it turned away): grass
            psi, cp, du, d0, s_row = 0.0, 1.0, -k, k * cx, rows_f[r, F_X]
        grow = rows_i[r, I_GOFF] + (np.int64(s_row * ginv + TEX_OFFSET) & (gn - 1)) * gn
        arow = rows_i[r, I_AOFF] + (np.int64(s_row * ainv + TEX_OFFSET) & (an - 1)) * an
        if not valid:
            _fill(orow, 0, w_img, d0, du, tex, grow, gn - 1, ginv, gb, gg, gr, gamp, scratch)
            continue
        adu = -du
        hw = 0.5 * adu
        # d decreases with u: left grass | mixed | asphalt | mixed | right grass
        g1_end = _span(-1e9, (a_hi + hw - d0) / du, w_img)[1]
        a_start, a_end = _span((a_hi - hw - d0) / du, (a_lo + hw - d0) / du, w_img)
        g2_start = _span((a_lo - hw - d0) / du, 1e9, w_img)[0]
        a_start = max(a_start, g1_end)
        a_end = max(a_end, a_start)
        g2_start = max(g2_start, a_end)
        _fill(orow, 0, g1_end, d0, du, tex, grow, gn - 1, ginv, gb, gg, gr, gamp, scratch)
        _fill(orow, a_start, a_end, d0, du, tex, arow, an - 1, ainv, ab, ag, ar, aamp, scratch)
        _fill(orow, g2_start, w_img, d0, du, tex, grow, gn - 1, ginv, gb, gg, gr, gamp, scratch)
        for side in range(2):
            u_from, u_to = (g1_end, a_start) if side == 0 else (a_end, g2_start)
            for u in range(u_from, u_to):
                d = d0 + du * u
                cov = min(max((min(d + hw, a_hi) - max(d - hw, a_lo)) / adu, 0.0), 1.0)
                tg = tex[grow + (np.int64(d * ginv + TEX_OFFSET) & (gn - 1))] * gamp
                ta = tex[arow + (np.int64(d * ainv + TEX_OFFSET) & (an - 1))] * aamp
                orow[3 * u] = _u8((gb + tg) * (1.0 - cov) + (ab + ta) * cov)
                orow[3 * u + 1] = _u8((gg + tg) * (1.0 - cov) + (ag + ta) * cov)
                orow[3 * u + 2] = _u8((gr + tg) * (1.0 - cov) + (ar + ta) * cov)

        # lane lines, area-filtered (see _line_cover)
        foot = max(rows_f[r, F_FOOT], 1e-3)
        lb, lg, lr = rows_f[r, F_LCOL], rows_f[r, F_LCOL + 1], rows_f[r, F_LCOL + 2]
        for q in range(3):
            centre = (q - 0.5) * lane_w
            alpha = 1.0
            s_line = s_row + centre * math.tan(psi)  # the arc length where this line crosses the row
            if gaps.shape[0] and _unmarked(s_line, gaps):
                continue
            if q == 1:  # dashed: the painted fraction of this row's stretch of road
                alpha = (_dash_integral(s_line + 0.5 * foot) - _dash_integral(s_line - 0.5 * foot)) / foot
                if alpha <= 1e-3:
                    continue
            slope = 0.0  # pixels per row: a slanted line sweeps sideways across the pixel's height
            if 0 < r < nrows - 1 and pose[r - 1, P_VALID] > 0.5 and pose[r + 1, P_VALID] > 0.5:
                slope = min(0.5 * abs(uline[q, r + 1] - uline[q, r - 1]), 64.0)
            sweep = adu * slope
            reach = 0.5 * (sweep + adu)
            u_a, u_b = _span((centre + hl + reach - d0) / du, (centre - hl - reach - d0) / du, w_img)
            for u in range(u_a, u_b):
                cov = _line_cover(d0 + du * u, adu, sweep, centre - hl, centre + hl)
                if cov <= 0.0:
                    continue
                al = min(cov, 1.0) * alpha
                orow[3 * u] = _u8(orow[3 * u] * (1.0 - al) + lb * al)
                orow[3 * u + 1] = _u8(orow[3 * u + 1] * (1.0 - al) + lg * al)
                orow[3 * u + 2] = _u8(orow[3 * u + 2] * (1.0 - al) + lr * al)


class Renderer:
    """Draws the camera image of a Road from a pose, into a caller's preallocated BGR frame.

    The pose passed to render() is the camera's: callers pass the vehicle state, so the camera
    sits above the rear axle. One Renderer per thread (it tracks the car's place on the road).
    """

    def __init__(self, road: Road, camera: PinholeCamera, max_range_m: float = 150.0) -> None:
        if max_range_m <= 5.0:
            raise ValueError(f"max_range_m must be > 5 m, got {max_range_m}")
        self.road, self.camera, self.max_range = road, camera, float(max_range_m)
        self._shape = (camera.height, camera.width, 3)
        h = camera.height
        # the first row whose ground point is within range; every row above it is static
        X_all, _ = camera.ground_rows()
        near = np.flatnonzero(X_all <= self.max_range)
        if near.size == 0:
            raise ValueError(f"no image row sees the ground within {max_range_m} m: camera {camera}")
        v0 = int(near[0])
        self._static = self._static_rows(v0)
        self._rows_f, self._rows_i = self._row_tables(v0)
        nrows = h - v0
        self._pose = np.zeros((nrows, N_P), np.float64)
        self._uline = np.zeros((3, nrows), np.float64)
        self._ahead_m = 1.6 * self.max_range + 10.0  # arc length that covers max_range on a bend
        self._poly = np.zeros((4, int((BEHIND_M + self._ahead_m) / road.ds) + 4), np.float64)
        self._hint = np.full(1, -1, np.int64)
        self._tex = _noise_pyramid()[0]
        self._scratch = np.zeros(camera.width, np.float32)
        # compile (or load from Numba's cache) and run once now, never on the first real frame
        warm = np.empty(self._shape, np.uint8)
        x0, y0, h0 = road.pose_at(0.0)
        self.render(x0, y0, h0, warm)
        self._hint[0] = -1

    def _static_rows(self, v0: int) -> np.ndarray:
        """Rows 0..v0-1: sky graded by elevation, the horizon row blended, fog below it."""
        cam = self.camera
        v = np.arange(v0, dtype=np.float64)
        p = math.radians(cam.pitch_deg)
        b = (v - cam.cy) / cam.fx
        elevation = -np.arcsin((math.sin(p) + b * math.cos(p)) / np.sqrt(1.0 + b * b))
        g = np.clip(elevation / 0.45, 0.0, 1.0) ** 0.6
        sky = SKY_HORIZON[None, :] * (1.0 - g[:, None]) + SKY_TOP[None, :] * g[:, None]
        sky_part = np.clip(cam.horizon_row - (v - 0.5), 0.0, 1.0)[:, None]  # of each row's height
        col = sky * sky_part + FOG[None, :] * (1.0 - sky_part)
        rows = np.clip(np.rint(col), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.broadcast_to(rows[:, None, :], (v0, cam.width, 3)))

    def _row_tables(self, v0: int) -> tuple[np.ndarray, np.ndarray]:
        """Per ground row, everything that does not depend on the pose."""
        cam = self.camera
        v = np.arange(v0, cam.height, dtype=np.float64)
        X, k = cam.ground_at(v)
        X_far, _ = cam.ground_at(v - 0.5)
        X_near, _ = cam.ground_at(v + 0.5)
        foot = np.minimum(X_far, 2.0 * self.max_range) - X_near  # ground the row covers, along X
        haze = np.clip(X / self.max_range, 0.0, 1.0) ** HAZE_POWER
        f = np.zeros((len(v), N_F), np.float64)
        i = np.zeros((len(v), N_I), np.int64)
        f[:, F_X], f[:, F_SCALE], f[:, F_FOOT] = X, k, foot
        _, offsets, sizes = _noise_pyramid()
        footprint = np.maximum(k, foot)
        for (texel, amp), c_inv, c_amp, c_off, c_n in ((GRASS_TEX, F_GINV, F_GAMP, I_GOFF, I_GN),
                                                       (ASPHALT_TEX, F_AINV, F_AAMP, I_AOFF, I_AN)):
            level = np.clip(np.ceil(np.log2(np.maximum(footprint / texel, 1.0))), 0, len(sizes) - 1).astype(int)
            f[:, c_inv] = 1.0 / (texel * 2.0 ** level)
            # coarse levels are blocky up close to their texels: fade them (and skip the invisible)
            a = amp * (1.0 - haze) * MIP_FADE ** level
            f[:, c_amp] = np.where(a * 2.0 >= 0.5, a, 0.0)
            i[:, c_off], i[:, c_n] = offsets[level], sizes[level]
        for colour, col in ((GRASS, F_GCOL), (ASPHALT, F_ACOL), (LINE, F_LCOL)):
            f[:, col:col + 3] = colour[None, :] * (1.0 - haze[:, None]) + FOG[None, :] * haze[:, None]
        return f, i

    def render(self, x: float, y: float, yaw: float, out: np.ndarray, s_hint: float | None = None) -> None:
        """Draw the view from camera pose (x, y, yaw) into `out`: uint8 BGR (height, width, 3),
        C-contiguous. `s_hint` (arc length near the car) matters only when the car jumped, e.g.
        back to the road's start; otherwise the renderer tracks the car itself."""
        if (not isinstance(out, np.ndarray) or out.shape != self._shape or out.dtype != np.uint8
                or not out.flags.c_contiguous or not out.flags.writeable):
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"render target must be uint8 {self._shape}, C-contiguous and writeable; got {got}")
        if s_hint is not None:
            self._hint[0] = int(min(max(s_hint, 0.0), self.road.length) / self.road.ds)
        r = self.road
        _render_frame(out, self._static, float(x), float(y), float(yaw), self._hint, r.s, r.x, r.y, r.heading,
                      self._poly, self._rows_f, self._rows_i, self._pose, self._uline, self._tex, self._scratch,
                      float(self.camera.cx), float(r.lane_width), float(self._ahead_m), float(r.ds), r.unmarked)
