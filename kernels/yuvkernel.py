"""The fused kernel for sources that are not packed 8-bit RGB: GRAY, NV12, I420, YUYV.

Same pass as kernels/preprocess.py (vertical taps into a float row, horizontal taps,
colour matrix + normalisation, layout + dtype), with one step in front: each source row a
vertical tap needs is decoded to float RGB (kernels/formats.py), saturated, into a one-row
scratch, then accumulated, weighted, into the row buffer; no RGB image is ever built. Only
the pixels some x tap weighs are decoded (kernels/resample.compact_columns: 1 in 3 for
1920 -> 640), first gathered into contiguous Y, U, V rows so the decode vectorises.

Where each output pixel is exactly one kept column at weight 1 (an odd whole x downscale:
1920 -> 640 bilinear), there is no row buffer and no x-tap pass (MODE_DIRECT): each tap's
row is gathered into contiguous Y, U, V bytes, then decoded, weighted, straight into the
output planes, in a loop LLVM vectorises. Every third column (MODE_DIRECT3) has a gather
written with constant strides. 1080p NV12 -> 384x640, one thread, hot: 1.39 ms before,
0.35 ms now (docs/kernels.md). A 2:1 downscale (MODE_DIRECT2: each output pixel weighs the
next two of consecutive kept columns, with its own x weights) decodes the even and the odd
columns into two planes and combines them with the x taps: 1280x720 NV12 -> 640x360 1.28 -> 0.72 ms.
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

from edgert.kernels.jitcache import njit  # cache keyed on all kernels/*.py sources
from edgert.kernels.simd import unit_row
from edgert.kernels.store import colour_span, store_row, taps_and_colour


@njit(cache=True, nogil=True, fastmath=False)
def _i420_chroma_rows(src, h, sy):  # pragma: no cover - compiled
    """The U and V rows for luma row sy of an I420 frame: in its (3H/2, W) buffer each chroma
    plane row is W/2 bytes, two to a buffer row (kernels/formats.py)."""
    hw = src.shape[1] // 2
    hu = 2 * h + sy // 2
    hv = hu + h // 2
    return unit_row(src, hu // 2)[(hu & 1) * hw:], unit_row(src, hv // 2)[(hv & 1) * hw:]


@njit(cache=True, nogil=True, fastmath=False)
def _gather(src, fmt, h, sy, cols, gat):  # pragma: no cover - compiled
    """The Y, U and V bytes of the kept pixel columns `cols` of row sy, into the contiguous rows
    of `gat` (uint8 [3, n]), one loop per format, so that the decode after it is one plain
    loop over contiguous rows, which LLVM vectorises. Gathering and decoding each pixel in one
    loop ran scalar: 1.03 ms for the 768 rows of 1080p NV12 -> 384x640, against 0.34 ms split
    (0.23 of it this gather)."""
    yb, ub, vb = gat[0], gat[1], gat[2]
    one = np.uint64(1)
    srow = src[sy]
    n = cols.shape[0]
    if fmt == 1:  # nv12
        crow = src[h + sy // 2]
        for k in range(n):
            x = np.uint64(cols[k])
            p = x & ~one
            yb[k] = srow[x]
            ub[k] = crow[p]
            vb[k] = crow[p + one]
    elif fmt == 2:  # i420
        urow, vrow = _i420_chroma_rows(src, h, sy)
        for k in range(n):
            x = np.uint64(cols[k])
            c = x >> one
            yb[k] = srow[x]
            ub[k] = urow[c]
            vb[k] = vrow[c]
    else:  # yuyv
        for k in range(n):
            x = np.uint64(cols[k])
            q = (x >> one) << np.uint64(2)
            yb[k] = srow[x << one]
            ub[k] = srow[q + one]
            vb[k] = srow[q + np.uint64(3)]


@njit(cache=True, nogil=True, fastmath=False)
def _gather3(src, fmt, h, sy, c0, n, gat, luma):  # pragma: no cover - compiled
    """_gather for kept columns c0 + 3k (1920 -> 640 bilinear; MODE_DIRECT3), chroma only
    where `luma` is False. Written with constant strides, per pair of pixels where chroma
    alternates (x = c0 + 6m and c0 + 6m + 3 share no sample), LLVM vectorises the loads: for
    the 768 rows of 1080p NV12 -> 384x640, luma 0.096 -> 0.019 ms and chroma 0.163 -> 0.021 ms
    against the index table."""
    yb, ub, vb = gat[0], gat[1], gat[2]
    m2 = n // 2
    if fmt == 3:  # yuyv: Y at byte 2x, U V at 4 (x // 2) + 1, + 3 of the same row
        row = unit_row(src, sy)
        ys = row[2 * c0:]
        for k in range(n):
            yb[k] = ys[6 * k]
        if luma:
            return
        ca = row[4 * (c0 // 2):]
        cb = row[4 * ((c0 + 3) // 2):]
        for m in range(m2):
            ub[2 * m] = ca[12 * m + 1]
            vb[2 * m] = ca[12 * m + 3]
            ub[2 * m + 1] = cb[12 * m + 1]
            vb[2 * m + 1] = cb[12 * m + 3]
        if n & 1:
            ub[n - 1] = ca[12 * m2 + 1]
            vb[n - 1] = ca[12 * m2 + 3]
        return
    ys = unit_row(src, sy)[c0:]
    for k in range(n):
        yb[k] = ys[3 * k]
    if luma:
        return
    if fmt == 1:  # nv12: U V pairs at x - x % 2 of the chroma row
        crow = unit_row(src, h + sy // 2)
        ca = crow[c0 - (c0 & 1):]
        cb = crow[c0 + 3 - ((c0 + 3) & 1):]
        for m in range(m2):
            ub[2 * m] = ca[6 * m]
            vb[2 * m] = ca[6 * m + 1]
            ub[2 * m + 1] = cb[6 * m]
            vb[2 * m + 1] = cb[6 * m + 1]
        if n & 1:
            ub[n - 1] = ca[6 * m2]
            vb[n - 1] = ca[6 * m2 + 1]
        return
    urow, vrow = _i420_chroma_rows(src, h, sy)  # i420: x // 2 of the U and V planes
    ua, ub_, va, vb_ = urow[c0 // 2:], urow[(c0 + 3) // 2:], vrow[c0 // 2:], vrow[(c0 + 3) // 2:]
    for m in range(m2):
        ub[2 * m] = ua[3 * m]
        vb[2 * m] = va[3 * m]
        ub[2 * m + 1] = ub_[3 * m]
        vb[2 * m + 1] = vb_[3 * m]
    if n & 1:
        ub[n - 1] = ua[3 * m2]
        vb[n - 1] = va[3 * m2]


@njit(cache=True, nogil=True, fastmath=False)
def _gather2(src, fmt, h, sy, c0, n, gat, luma):  # pragma: no cover - compiled
    """MODE_DIRECT2 (2n consecutive kept columns from c0, output pixel k weighing columns c0 + 2k
    and c0 + 2k + 1: a 2:1 downscale): the even columns' Y, U, V bytes into gat[:, :n], the odd
    columns' into gat[:, n:2n], with constant strides (as _gather3); chroma only where `luma`
    is False."""
    ye, yo = gat[0, :n], gat[0, n:2 * n]
    ue, uo = gat[1, :n], gat[1, n:2 * n]
    ve, vo = gat[2, :n], gat[2, n:2 * n]
    if fmt == 3:  # yuyv: Y at byte 2x, U V at 4 (x // 2) + 1, + 3 of the same row
        row = unit_row(src, sy)
        ys = row[2 * c0:]
        for k in range(n):
            ye[k] = ys[4 * k]
            yo[k] = ys[4 * k + 2]
        ca = row[4 * (c0 // 2):]
        cb = row[4 * ((c0 + 1) // 2):]
        for k in range(n):
            ue[k] = ca[4 * k + 1]
            ve[k] = ca[4 * k + 3]
            uo[k] = cb[4 * k + 1]
            vo[k] = cb[4 * k + 3]
        return
    ys = unit_row(src, sy)[c0:]
    for k in range(n):
        ye[k] = ys[2 * k]
        yo[k] = ys[2 * k + 1]
    if luma:
        return
    if fmt == 1:  # nv12: U V pairs at x - x % 2 of the chroma row
        crow = unit_row(src, h + sy // 2)
        ca = crow[c0 - (c0 & 1):]
        cb = crow[c0 + 1 - ((c0 + 1) & 1):]
        for k in range(n):
            ue[k] = ca[2 * k]
            ve[k] = ca[2 * k + 1]
            uo[k] = cb[2 * k]
            vo[k] = cb[2 * k + 1]
        return
    urow, vrow = _i420_chroma_rows(src, h, sy)  # i420: x // 2 of the U and V planes
    ua, ub_, va, vb_ = urow[c0 // 2:], urow[(c0 + 1) // 2:], vrow[c0 // 2:], vrow[(c0 + 1) // 2:]
    for k in range(n):
        ue[k] = ua[k]
        ve[k] = va[k]
        uo[k] = ub_[k]
        vo[k] = vb_[k]


@njit(cache=True, nogil=True, fastmath=False)
def _decode_cols(src, fmt, h, sy, cols, yc, rgb, gat):  # pragma: no cover - compiled
    """The kept pixel columns `cols` of source row sy (all of them for an x downscale of 2:1 or
    less; 1 in 3 for 1920 -> 640, kernels/resample.compact_columns), decoded to float R, G, B
    and saturated to [0, 255]: pixel k into rgb[3k : 3k + 3].

    The arithmetic is written out: through an inlined helper the loop ran scalar (1.25 ms
    against 0.34 for the 768 rows of 1080p NV12 -> 384x640). A pair loop that shared each
    chroma sample between two pixels (the earlier dense path) ran scalar too: 1280x720 NV12 ->
    640x360 took 2.20 ms with it against 1.30 ms through this gather and decode."""
    n = cols.shape[0]
    if fmt == 0:  # gray
        for k in range(n):
            g = np.float32(src[sy, cols[k]])
            rgb[3 * k] = g
            rgb[3 * k + 1] = g
            rgb[3 * k + 2] = g
        return
    _gather(src, fmt, h, sy, cols, gat)
    yb, ub, vb = gat[0], gat[1], gat[2]
    yoff, ys, rv, gu, gv, bu = yc[0], yc[1], yc[2], yc[3], yc[4], yc[5]
    half = np.float32(128.0)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    for k in range(n):
        u = np.float32(ub[k]) - half
        v = np.float32(vb[k]) - half
        yy = max(np.float32(yb[k]) - yoff, lo) * ys
        rgb[3 * k] = min(max(yy + rv * v, lo), hi)
        rgb[3 * k + 1] = min(max(yy + (gu * u + gv * v), lo), hi)
        rgb[3 * k + 2] = min(max(yy + bu * u, lo), hi)


@njit(cache=True, nogil=True, fastmath=False)
def _decode_into(yb, ub, vb, yc, w, first, p0, p1, p2):  # pragma: no cover - compiled
    """MODE_DIRECT*: the gathered pixels (Y, U, V bytes) decoded, weighted by the tap's `w` and
    stored (first tap) or added (later taps) into the planar rows p0, p1, p2. The same products
    in the same order as the row buffer's vertical sum (0 + a == a for the a >= 0 here), so
    the result has the same bits."""
    yoff, ys, rv, gu, gv, bu = yc[0], yc[1], yc[2], yc[3], yc[4], yc[5]
    half = np.float32(128.0)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    if first:
        for k in range(p0.shape[0]):
            u = np.float32(ub[k]) - half
            v = np.float32(vb[k]) - half
            yy = max(np.float32(yb[k]) - yoff, lo) * ys
            p0[k] = w * min(max(yy + rv * v, lo), hi)
            p1[k] = w * min(max(yy + (gu * u + gv * v), lo), hi)
            p2[k] = w * min(max(yy + bu * u, lo), hi)
    else:
        for k in range(p0.shape[0]):
            u = np.float32(ub[k]) - half
            v = np.float32(vb[k]) - half
            yy = max(np.float32(yb[k]) - yoff, lo) * ys
            p0[k] += w * min(max(yy + rv * v, lo), hi)
            p1[k] += w * min(max(yy + (gu * u + gv * v), lo), hi)
            p2[k] += w * min(max(yy + bu * u, lo), hi)


MODE_ROWBUF, MODE_DIRECT, MODE_DIRECT3, MODE_DIRECT2 = 0, 1, 2, 3  # how _rows reads a source row (Preprocessor picks)


@njit(cache=True, nogil=True, fastmath=False)
def _rows(src, fmt, h, cols, mode, yidx, yw, xstart, xw, yc, coef, rgb, gat, buf, pix, out32, out16, out8, kind,
          nchw, oy0, ox0, r0, r1):  # pragma: no cover - compiled
    """mode: MODE_ROWBUF decodes the kept columns of each tap's row, sums the taps in a row
    buffer, then applies the x taps. MODE_DIRECT (MODE_DIRECT3: every third column), where each
    output pixel is one kept column at weight 1 (1920 -> 640 bilinear), decodes each tap
    straight into the output planes: no row buffer and no x-tap pass. MODE_DIRECT2, where each
    output pixel weighs the next two of consecutive kept columns (2:1), decodes the even and the
    odd columns into two planes and applies the two x taps to them."""
    ty = yidx.shape[1]
    if mode != MODE_ROWBUF:
        p0, p1, p2 = pix[0], pix[1], pix[2]
        n = p0.shape[0]  # output pixels: the kept columns (MODE_DIRECT*), or half of them (MODE_DIRECT2)
        q0, q1, q2 = rgb[:n], rgb[n:2 * n], rgb[2 * n:3 * n]  # MODE_DIRECT2: the odd columns' vertical sums
        held = -1  # the 4:2:0 chroma row whose U, V are in gat (shared by two luma rows)
        c0 = np.intp(cols[0])
        for oy in range(r0, r1):
            first = True
            for k in range(ty):
                w0 = yw[oy, k]
                if w0 == 0.0:
                    continue
                sy = yidx[oy, k]
                luma = fmt != 3 and sy // 2 == held
                if mode == MODE_DIRECT3:
                    _gather3(src, fmt, h, sy, c0, n, gat, luma)
                elif mode == MODE_DIRECT2:
                    _gather2(src, fmt, h, sy, c0, n, gat, luma)
                elif luma:  # Y only, here: through _gather's call the whole path ran 5 % slower
                    yb = gat[0]
                    srow = src[sy]
                    for j in range(n):
                        yb[j] = srow[cols[j]]
                else:
                    _gather(src, fmt, h, sy, cols, gat)
                held = sy // 2 if fmt != 3 else -1
                _decode_into(gat[0], gat[1], gat[2], yc, w0, first, p0, p1, p2)  # its first n: the even columns
                if mode == MODE_DIRECT2:
                    _decode_into(gat[0, n:2 * n], gat[1, n:2 * n], gat[2, n:2 * n], yc, w0, first, q0, q1, q2)
                first = False
            if mode == MODE_DIRECT2:
                for j in range(n):  # the two x taps, as the row buffer's 2-tap loop (kernels/store.py)
                    a = xw[j, 0]
                    b = xw[j, 1]
                    p0[j] = a * p0[j] + b * q0[j]
                    p1[j] = a * p1[j] + b * q1[j]
                    p2[j] = a * p2[j] + b * q2[j]
            colour_span(coef, p0, p1, p2, 0, n)
            store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0)
        return
    rw3 = 3 * cols.shape[0]
    for oy in range(r0, r1):
        for j in range(rw3):
            buf[j] = np.float32(0.0)
        for k in range(ty):
            w0 = yw[oy, k]
            if w0 == 0.0:
                continue
            _decode_cols(src, fmt, h, yidx[oy, k], cols, yc, rgb, gat)
            for j in range(rw3):
                buf[j] += w0 * rgb[j]
        taps_and_colour(buf, xstart, xw, coef, pix)  # kernels/store.py, shared with the BGR kernel
        store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0)


def _serial(src, fmt, h, cols, mode, yidx, yw, xstart, xw, yc, coef, rgbbuf, gatbuf, rowbuf, pixbuf, out32, out16,
            out8, kind, nchw, oy0, ox0):  # pragma: no cover
    _rows(src, fmt, h, cols, mode, yidx, yw, xstart, xw, yc, coef, rgbbuf[0], gatbuf[0], rowbuf[0], pixbuf[0], out32,
          out16, out8, kind, nchw, oy0, ox0, 0, yidx.shape[0])


def _parallel(src, fmt, h, cols, mode, yidx, yw, xstart, xw, yc, coef, rgbbuf, gatbuf, rowbuf, pixbuf, out32, out16,
              out8, kind, nchw, oy0, ox0):  # pragma: no cover
    n = rowbuf.shape[0]
    oh = yidx.shape[0]
    for t in prange(n):
        _rows(src, fmt, h, cols, mode, yidx, yw, xstart, xw, yc, coef, rgbbuf[t], gatbuf[t], rowbuf[t], pixbuf[t],
              out32, out16, out8, kind, nchw, oy0, ox0, t * oh // n, (t + 1) * oh // n)


_C2 = {t: types.Array(t, 2, "C") for t in (types.int32, types.float32)}
_SIGNATURE = types.void(
    types.Array(types.uint8, 2, "A", readonly=True), types.intp, types.intp, types.Array(types.uint32, 1, "C"),
    types.intp,
    _C2[types.int32], _C2[types.float32], types.Array(types.uint32, 1, "C"), _C2[types.float32],
    types.Array(types.float32, 1, "C"), _C2[types.float32],
    _C2[types.float32], types.Array(types.uint8, 3, "C"), _C2[types.float32], types.Array(types.float32, 3, "C"),
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
