"""Device code of kernels/cuda.py, in its own module so that importing numba.cuda (and the CUDA
simulator's patching of the module-level `cuda` name) happens only when a CUDA preprocessor is built."""

from __future__ import annotations

import numpy as np
from numba import cuda


@cuda.jit
def pixel(src, x0, yidx, yw, xstart, xw, coef, out, nchw, oy0, ox0):  # pragma: no cover - device code
    ox, oy = cuda.grid(2)
    oh, ty = yidx.shape
    ow, tx = xw.shape
    if ox >= ow or oy >= oh:
        return
    acc0 = np.float32(0.0)
    acc1 = np.float32(0.0)
    acc2 = np.float32(0.0)
    for kx in range(tx):
        w = xw[ox, kx]
        if w == 0.0:  # padding tap: may lie past the ROI (the CPU kernel reads zeros there)
            continue
        base = x0 + xstart[ox] + 3 * kx
        for c in range(3):
            j = base + c
            # vertical sum for this column, in the CPU kernel's order (pairs of rows)
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
            if c == 0:
                acc0 += w * v
            elif c == 1:
                acc1 += w * v
            else:
                acc2 += w * v
    for c in range(3):
        r = coef[c, 0] * acc0 + coef[c, 1] * acc1 + coef[c, 2] * acc2 + coef[c, 3]
        r = min(max(r, np.float32(0.0)), np.float32(255.0)) * coef[c, 4] + coef[c, 5]
        if nchw:
            out[c, oy + oy0, ox + ox0] = r
        else:
            out[oy + oy0, ox + ox0, c] = r

@cuda.jit
def fill(out, pad, nchw):  # pragma: no cover - device code
    x, y = cuda.grid(2)
    if nchw:
        if y < out.shape[1] and x < out.shape[2]:
            for c in range(3):
                out[c, y, x] = pad[c]
    elif y < out.shape[0] and x < out.shape[1]:
        for c in range(3):
            out[y, x, c] = pad[c]
