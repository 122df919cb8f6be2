"""Device code of kernels/cuda.py, in its own module so that importing numba.cuda (and the CUDA
simulator's patching of the module-level `cuda` name) happens only when a CUDA preprocessor is built.

One thread per output pixel. Each step mirrors the CPU kernels' arithmetic, operation for
operation (kernels/preprocess.py for packed BGR/RGB, kernels/yuvkernel.py for GRAY/YUV,
kernels/store.py for colour, layout and dtype), so under the CUDA simulator the result is
bit-identical to the CPU kernel; on a GPU the compiler may contract a * b + c into an FMA,
which moves the last float32 bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

PACKED = -1  # format code of bgr/rgb (kernels.formats.FORMAT_CODE has gray 0, nv12 1, i420 2, yuyv 3)


@cuda.jit(device=True, inline=True)
def _sat(v):  # pragma: no cover - device code
    return min(max(v, np.float32(0.0)), np.float32(255.0))


@cuda.jit(device=True)
def _decode(src, fmt, h, sy, x, yc, c):  # pragma: no cover - device code
    """Channel c (R, G, B) of pixel x of row sy, decoded and saturated as yuvkernel._decode_cols does."""
    if fmt == 0:
        return np.float32(src[sy, x])
    half = np.float32(128.0)
    if fmt == 1:  # nv12
        r = h + sy // 2
        p = x - (x & 1)
        ub = src[r, p]
        vb = src[r, p + 1]
        yb = src[sy, x]
    elif fmt == 2:  # i420: U then V planes, rows of w/2 bytes, two per buffer row
        hw = src.shape[1] // 2
        hu = 2 * h + sy // 2
        hv = hu + h // 2
        ub = src[hu // 2, (hu & 1) * hw + x // 2]
        vb = src[hv // 2, (hv & 1) * hw + x // 2]
        yb = src[sy, x]
    else:  # yuyv: the (H, 2W) view of Y0 U Y1 V
        q = 4 * (x // 2)
        ub = src[sy, q + 1]
        vb = src[sy, q + 3]
        yb = src[sy, 2 * x]
    u = np.float32(ub) - half
    v = np.float32(vb) - half
    yy = max(np.float32(yb) - yc[0], np.float32(0.0)) * yc[1]
    if c == 0:
        return _sat(yy + yc[2] * v)
    if c == 1:
        return _sat(yy + (yc[3] * u + yc[4] * v))
    return _sat(yy + yc[5] * u)


@cuda.jit(device=True)
def _vertical(src, fmt, h, yidx, yw, oy, x, yc, c):  # pragma: no cover - device code
    """The vertical weighted sum for channel c of source column x, in the CPU kernel's order."""
    ty = yidx.shape[1]
    if fmt != PACKED:  # yuvkernel: 0, then += w * decoded row, skipping zero weights
        v = np.float32(0.0)
        for k in range(ty):
            w = yw[oy, k]
            if w != 0.0:
                v += w * _decode(src, fmt, h, yidx[oy, k], x, yc, c)
        return v
    j = 3 * x + c  # preprocess._rows: the first pair, then pairs accumulated
    w0 = yw[oy, 0]
    if ty == 1:
        v = w0 * np.float32(src[yidx[oy, 0], j])
    else:
        v = w0 * np.float32(src[yidx[oy, 0], j]) + yw[oy, 1] * np.float32(src[yidx[oy, 1], j])
    k = 2
    while k < ty:
        a = yw[oy, k]
        b = yw[oy, k + 1] if k + 1 < ty else np.float32(0.0)
        if b != 0.0:
            v += a * np.float32(src[yidx[oy, k], j]) + b * np.float32(src[yidx[oy, k + 1], j])
        elif a != 0.0:
            v += a * np.float32(src[yidx[oy, k], j])
        k += 2
    return v


@cuda.jit(device=True)
def _u8(v):  # pragma: no cover - device code
    """clip then round half to even, as np.clip(np.rint(v), 0, 255) (exact: no v + 0.5)."""
    v = _sat(v)
    f = math.floor(v)
    d = v - f
    if d > 0.5 or (d == 0.5 and f % 2 == 1):
        f += 1
    return np.uint8(f)


@cuda.jit
def pixel(src, fmt, h, yidx, yw, xpix, xw, yc, coef, out32, out16, out8, kind, nchw, oy0,
          ox0):  # pragma: no cover - device code
    ox, oy = cuda.grid(2)
    oh = yidx.shape[0]
    ow, tx = xw.shape
    if ox >= ow or oy >= oh:
        return
    acc0 = np.float32(0.0)
    acc1 = np.float32(0.0)
    acc2 = np.float32(0.0)
    for kx in range(tx):
        w = xw[ox, kx]
        if w == 0.0:  # padding tap (trimmed tables keep the weighted taps first)
            continue
        x = xpix[ox] + kx
        acc0 += w * _vertical(src, fmt, h, yidx, yw, oy, x, yc, 0)
        acc1 += w * _vertical(src, fmt, h, yidx, yw, oy, x, yc, 1)
        acc2 += w * _vertical(src, fmt, h, yidx, yw, oy, x, yc, 2)
    y = oy + oy0
    xo = ox + ox0
    for c in range(3):
        r = coef[c, 0] * acc0 + coef[c, 1] * acc1 + coef[c, 2] * acc2 + coef[c, 3]
        r = _sat(r) * coef[c, 4] + coef[c, 5]
        if kind == 1:  # a float16 array: the store converts round-to-nearest-even, as NumPy's astype
            if nchw:
                out16[c, y, xo] = r
            else:
                out16[y, xo, c] = r
        elif kind == 2:
            if nchw:
                out8[c, y, xo] = _u8(r)
            else:
                out8[y, xo, c] = _u8(r)
        elif nchw:
            out32[c, y, xo] = r
        else:
            out32[y, xo, c] = r


@cuda.jit
def fill(out, pad, nchw):  # pragma: no cover - device code
    """Every pixel of `out` ([3, H, W] or [H, W, 3], any element type) set to pad[c]."""
    x, y = cuda.grid(2)
    if nchw:
        if y < out.shape[1] and x < out.shape[2]:
            for c in range(3):
                out[c, y, x] = pad[c]
    elif y < out.shape[0] and x < out.shape[1]:
        for c in range(3):
            out[y, x, c] = pad[c]
