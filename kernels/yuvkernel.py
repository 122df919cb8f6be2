"""The fused kernel for sources that are not packed 8-bit RGB: GRAY, NV12, I420, YUYV.

Same pass as kernels/preprocess.py (vertical taps into a float row, horizontal taps,
colour matrix + normalisation, layout + dtype), with one step in front: each source row a
vertical tap needs is decoded to float RGB (kernels/formats.py), saturated, into a one-row
scratch, then accumulated, weighted, into the row buffer; no RGB image is ever built. Only
the pixels some x tap weighs are decoded (kernels/resample.compact_columns: 1 in 3 for
1920 -> 640); when those are all the columns, a pair loop shares each chroma sample.
(Decoding straight into the row buffer through an inlined helper was tried: Numba 0.68 then
leaked a reference per call, ~400 B/frame, caught by the tracemalloc tests; the scratch row
costs no measurable time.) Decoding must precede resampling
(not follow it, as the affine BGR path may) because the decode saturates to [0, 255]
and takes chroma at half resolution, as cv2.cvtColor does before cv2.resize.

The BGR/RGB kernel's arithmetic is deliberately left untouched (the shipped model's inputs
are pinned bit for bit), so the horizontal and colour steps are repeated here rather than
shared; the layout/dtype step is shared (kernels/store.py).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import prange, types

from kernels.jitcache import njit  # cache keyed on all kernels/*.py sources
from kernels.store import store_row, taps_and_colour


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _put(rgb, j, yv, cr, cg, cb, yoff, ys):  # pragma: no cover - compiled
    """One pixel into rgb[3j : 3j + 3]: luma plus the pixel's chroma terms, saturated."""
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    yy = max(yv - yoff, lo) * ys  # footroom clamps to black, as OpenCV does
    rgb[3 * j] = min(max(yy + cr, lo), hi)
    rgb[3 * j + 1] = min(max(yy + cg, lo), hi)
    rgb[3 * j + 2] = min(max(yy + cb, lo), hi)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _chroma(src, fmt, h, sy, x):  # pragma: no cover - compiled
    """(U, V) bytes covering pixel x of row sy."""
    if fmt == 3:  # yuyv: the (H, 2W) view of Y0 U Y1 V
        p = 4 * (x // 2)
        return src[sy, p + 1], src[sy, p + 3]
    if fmt == 1:  # nv12: interleaved U, V rows after the luma
        p = x - (x & 1)
        r = h + sy // 2
        return src[r, p], src[r, p + 1]
    hw = src.shape[1] // 2  # i420: U then V planes, rows of w/2 bytes, two per buffer row
    hu = 2 * h + sy // 2
    hv = hu + h // 2
    return src[hu // 2, (hu & 1) * hw + x // 2], src[hv // 2, (hv & 1) * hw + x // 2]


@njit(cache=True, nogil=True, fastmath=False)
def _decode_row(src, fmt, h, sy, x0, rw, yc, rgb):  # pragma: no cover - compiled
    """Source row sy, pixels [x0, x0 + rw), decoded into rgb[0 : 3 * rw] as float R, G, B.

    Walks pixel pairs that share a chroma sample (even x, x + 1), so each pair reads and
    multiplies its U, V once, in one loop per format (no per-pixel format branch); an odd
    first or last pixel is done alone."""
    if fmt == 0:  # gray
        for j in range(rw):
            g = np.float32(src[sy, x0 + j])
            rgb[3 * j] = g
            rgb[3 * j + 1] = g
            rgb[3 * j + 2] = g
        return
    yoff, ys, rv, gu, gv, bu = yc[0], yc[1], yc[2], yc[3], yc[4], yc[5]
    half = np.float32(128.0)
    # an odd first pixel shares its chroma with the pixel left of the ROI: do it alone
    j = 0
    if x0 & 1:
        ub, vb = _chroma(src, fmt, h, sy, x0)
        u = np.float32(ub) - half
        v = np.float32(vb) - half
        _put(rgb, 0, np.float32(src[sy, (2 if fmt == 3 else 1) * x0]), rv * v, gu * u + gv * v, bu * u, yoff, ys)
        j = 1
    npairs = (rw - j) // 2
    # then whole pairs, one loop per format so the loop body has no format branch
    if fmt == 1:  # nv12
        crow = h + sy // 2
        for p in range(npairs):
            x = x0 + j + 2 * p
            u = np.float32(src[crow, x]) - half
            v = np.float32(src[crow, x + 1]) - half
            cr, cg, cb = rv * v, gu * u + gv * v, bu * u
            _put(rgb, j + 2 * p, np.float32(src[sy, x]), cr, cg, cb, yoff, ys)
            _put(rgb, j + 2 * p + 1, np.float32(src[sy, x + 1]), cr, cg, cb, yoff, ys)
    elif fmt == 2:  # i420
        hw = src.shape[1] // 2
        hu = 2 * h + sy // 2
        hv = hu + h // 2
        ur, uc = hu // 2, (hu & 1) * hw
        vr, vc = hv // 2, (hv & 1) * hw
        for p in range(npairs):
            x = x0 + j + 2 * p
            c = x // 2
            u = np.float32(src[ur, uc + c]) - half
            v = np.float32(src[vr, vc + c]) - half
            cr, cg, cb = rv * v, gu * u + gv * v, bu * u
            _put(rgb, j + 2 * p, np.float32(src[sy, x]), cr, cg, cb, yoff, ys)
            _put(rgb, j + 2 * p + 1, np.float32(src[sy, x + 1]), cr, cg, cb, yoff, ys)
    else:  # yuyv
        for p in range(npairs):
            x = x0 + j + 2 * p
            q = 2 * x
            u = np.float32(src[sy, q + 1]) - half
            v = np.float32(src[sy, q + 3]) - half
            cr, cg, cb = rv * v, gu * u + gv * v, bu * u
            _put(rgb, j + 2 * p, np.float32(src[sy, q]), cr, cg, cb, yoff, ys)
            _put(rgb, j + 2 * p + 1, np.float32(src[sy, q + 2]), cr, cg, cb, yoff, ys)
    j += 2 * npairs
    if j < rw:  # an odd last pixel
        x = x0 + j
        ub, vb = _chroma(src, fmt, h, sy, x)
        u = np.float32(ub) - half
        v = np.float32(vb) - half
        _put(rgb, j, np.float32(src[sy, (2 if fmt == 3 else 1) * x]), rv * v, gu * u + gv * v, bu * u, yoff, ys)


@njit(cache=True, nogil=True, fastmath=False)
def _decode_cols(src, fmt, h, sy, cols, yc, rgb):  # pragma: no cover - compiled
    """Like _decode_row, for the kept pixel columns `cols` only (a strong x downscale weighs
    1 or 2 pixels per output, kernels/resample.compact_columns): pixel k into rgb[3k : 3k + 3].
    One loop per format; each pixel reads its own chroma sample (neighbours are rarely kept)."""
    if fmt == 0:  # gray
        for k in range(cols.shape[0]):
            g = np.float32(src[sy, cols[k]])
            rgb[3 * k] = g
            rgb[3 * k + 1] = g
            rgb[3 * k + 2] = g
        return
    yoff, ys, rv, gu, gv, bu = yc[0], yc[1], yc[2], yc[3], yc[4], yc[5]
    half = np.float32(128.0)
    one = np.uint64(1)
    if fmt == 1:  # nv12
        crow = h + sy // 2
        for k in range(cols.shape[0]):
            x = np.uint64(cols[k])
            p = x & ~one
            u = np.float32(src[crow, p]) - half
            v = np.float32(src[crow, p + one]) - half
            _put(rgb, k, np.float32(src[sy, x]), rv * v, gu * u + gv * v, bu * u, yoff, ys)
    elif fmt == 2:  # i420
        hw = src.shape[1] // 2
        hu = 2 * h + sy // 2
        hv = hu + h // 2
        ur, uc = hu // 2, np.uint64((hu & 1) * hw)
        vr, vc = hv // 2, np.uint64((hv & 1) * hw)
        for k in range(cols.shape[0]):
            x = np.uint64(cols[k])
            c = x >> one
            u = np.float32(src[ur, uc + c]) - half
            v = np.float32(src[vr, vc + c]) - half
            _put(rgb, k, np.float32(src[sy, x]), rv * v, gu * u + gv * v, bu * u, yoff, ys)
    else:  # yuyv
        for k in range(cols.shape[0]):
            x = np.uint64(cols[k])
            q = (x >> one) << np.uint64(2)
            u = np.float32(src[sy, q + one]) - half
            v = np.float32(src[sy, q + np.uint64(3)]) - half
            _put(rgb, k, np.float32(src[sy, x << one]), rv * v, gu * u + gv * v, bu * u, yoff, ys)


@njit(cache=True, nogil=True, fastmath=False)
def _rows(src, fmt, h, cols, dense, yidx, yw, xstart, xw, yc, coef, rgb, buf, pix, out32, out16, out8, kind, nchw,
          oy0, ox0, r0, r1):  # pragma: no cover - compiled
    ty = yidx.shape[1]
    x0 = np.intp(cols[0])
    rw = cols.shape[0]
    rw3 = 3 * rw
    for oy in range(r0, r1):
        for j in range(rw3):
            buf[j] = np.float32(0.0)
        for k in range(ty):
            w0 = yw[oy, k]
            if w0 == 0.0:
                continue
            if dense:
                _decode_row(src, fmt, h, yidx[oy, k], x0, rw, yc, rgb)
            else:
                _decode_cols(src, fmt, h, yidx[oy, k], cols, yc, rgb)
            for j in range(rw3):
                buf[j] += w0 * rgb[j]
        taps_and_colour(buf, xstart, xw, coef, pix)  # kernels/store.py, shared with the BGR kernel
        store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0)


def _serial(src, fmt, h, cols, dense, yidx, yw, xstart, xw, yc, coef, rgbbuf, rowbuf, pixbuf, out32, out16, out8, kind,
            nchw, oy0, ox0):  # pragma: no cover
    _rows(src, fmt, h, cols, dense, yidx, yw, xstart, xw, yc, coef, rgbbuf[0], rowbuf[0], pixbuf[0], out32, out16, out8,
          kind, nchw, oy0, ox0, 0, yidx.shape[0])


def _parallel(src, fmt, h, cols, dense, yidx, yw, xstart, xw, yc, coef, rgbbuf, rowbuf, pixbuf, out32, out16, out8,
              kind, nchw, oy0, ox0):  # pragma: no cover
    n = rowbuf.shape[0]
    oh = yidx.shape[0]
    for t in prange(n):
        _rows(src, fmt, h, cols, dense, yidx, yw, xstart, xw, yc, coef, rgbbuf[t], rowbuf[t], pixbuf[t], out32, out16,
              out8, kind, nchw, oy0, ox0, t * oh // n, (t + 1) * oh // n)


_C2 = {t: types.Array(t, 2, "C") for t in (types.int32, types.float32)}
_SIGNATURE = types.void(
    types.Array(types.uint8, 2, "A", readonly=True), types.intp, types.intp, types.Array(types.uint32, 1, "C"),
    types.boolean,
    _C2[types.int32], _C2[types.float32], types.Array(types.uint32, 1, "C"), _C2[types.float32],
    types.Array(types.float32, 1, "C"), _C2[types.float32],
    _C2[types.float32], _C2[types.float32], types.Array(types.float32, 3, "C"),
    types.Array(types.float32, 3, "C"), types.Array(types.uint16, 3, "C"), types.Array(types.uint8, 3, "C"),
    types.intp, types.boolean, types.intp, types.intp)

_kernels: dict[bool, numba.core.dispatcher.Dispatcher] = {}
_lock = threading.Lock()


def kernel(parallel: bool) -> numba.core.dispatcher.Dispatcher:
    """The compiled YUV/GRAY kernel (one signature; compiled or cache-loaded on first use)."""
    with _lock:
        k = _kernels.get(parallel)
        if k is None:
            py = _parallel if parallel else _serial
            k = njit([_SIGNATURE], cache=True, nogil=True, fastmath=False, parallel=parallel)(py)
            _kernels[parallel] = k
        return k
