"""The last step of every kernel: one finished output row -> the output tensor's layout and dtype.

Shared by the packed-RGB and the YUV kernels so the two cannot disagree on rounding:
  kind 0  float32, as computed
  kind 1  float16, rounded to nearest even exactly as NumPy's astype (Numba has no CPU
          float16, so the bits are computed: `_half_bits`)
  kind 2  uint8, saturated to [0, 255] and rounded half to even (np.rint), as
          np.clip(np.rint(x), 0, 255).astype(np.uint8)
(oy0, ox0) offsets the row inside the output: the letterbox's placement (0, 0 otherwise).
"""

from __future__ import annotations

import numpy as np

from edgert.kernels.jitcache import njit  # cache keyed on all kernels/*.py sources

KIND = {"float32": 0, "float16": 1, "uint8": 2}


@njit(cache=True, nogil=True, fastmath=False)
def _half_bits(x):  # pragma: no cover - compiled
    """float32 -> IEEE half bits, round to nearest even (F. Giesen's float_to_half_fast3_rtne)."""
    u = np.float32(x).view(np.uint32)
    sign = u & np.uint32(0x80000000)
    u = np.uint32(u ^ sign)
    if u >= np.uint32(0x47800000):  # too big for half: inf, or NaN stays NaN
        o = np.uint32(0x7E00) if u > np.uint32(0x7F800000) else np.uint32(0x7C00)
    elif u < np.uint32(0x38800000):  # subnormal half or zero: let the FPU round
        f = np.float32(np.uint32(u).view(np.float32) + np.float32(0.5))
        o = np.uint32(f.view(np.uint32) - np.uint32(0x3F000000))
    else:
        odd = (u >> np.uint32(13)) & np.uint32(1)
        o = (u + np.uint32(0xC8000FFF) + odd) >> np.uint32(13)  # rebias exponent (-112 << 23), round
    return np.uint16(o | (sign >> np.uint32(16)))


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _u8(v):  # pragma: no cover - compiled
    return np.uint8(np.rint(min(max(v, np.float32(0.0)), np.float32(255.0))))


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0):  # pragma: no cover - compiled
    """pix [3, ow] -> output row oy + oy0, columns ox0 .. ox0 + ow, in the tensor's layout/dtype.

    Writes go through a slice of the output row, indexed from 0: an index `ox + ox0` would
    make Numba emit its negative-index wraparound select on every store, which stops LLVM
    from vectorising the loop (measured 5x slower for the float32 NCHW copy)."""
    ow = pix.shape[1]
    y = oy + oy0
    p0 = pix[0]
    p1 = pix[1]
    p2 = pix[2]
    if kind == 1:
        if nchw:
            for c in range(3):
                o = out16[c, y, ox0:ox0 + ow]
                p = pix[c]
                for ox in range(ow):
                    o[ox] = _half_bits(p[ox])
        else:
            o = out16[y, ox0:ox0 + ow]
            for ox in range(ow):
                o[ox, 0] = _half_bits(p0[ox])
                o[ox, 1] = _half_bits(p1[ox])
                o[ox, 2] = _half_bits(p2[ox])
    elif kind == 2:
        if nchw:
            for c in range(3):
                o = out8[c, y, ox0:ox0 + ow]
                p = pix[c]
                for ox in range(ow):
                    o[ox] = _u8(p[ox])
        else:
            o = out8[y, ox0:ox0 + ow]
            for ox in range(ow):
                o[ox, 0] = _u8(p0[ox])
                o[ox, 1] = _u8(p1[ox])
                o[ox, 2] = _u8(p2[ox])
    else:
        if nchw:
            for c in range(3):
                o = out32[c, y, ox0:ox0 + ow]
                p = pix[c]
                for ox in range(ow):
                    o[ox] = p[ox]
        else:
            o = out32[y, ox0:ox0 + ow]
            for ox in range(ow):
                o[ox, 0] = p0[ox]
                o[ox, 1] = p1[ox]
                o[ox, 2] = p2[ox]


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def taps_and_colour(buf, xstart, xw, coef, pix):  # pragma: no cover - compiled
    """Both kernels' steps 2-3 for one output row, into `pix` ([3, out_w]).

    2. horizontal: each output pixel's taps are consecutive pixels of the summed source row
       `buf` from xstart[ox]; unsigned indices spare the negative-index wraparound checks.
    3. colour, saturate to [0, 255] as OpenCV's 8-bit cvtColor does, normalise: one
       vectorisable sweep with the coefficients (see preprocess._coefficients) in registers.
    """
    ow, tx = xw.shape
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    p0 = pix[0]
    p1 = pix[1]
    p2 = pix[2]
    # 1 and 2 weighted taps (bilinear, and any integral-phase downscale such as 1920 -> 640,
    # whose zero-weight taps kernels/resample.trim_taps dropped) get their own loops: the
    # general one costs twice as much there. Same products, same order: 0 + a == a for the
    # non-negative a here, so every path gives the general loop's bits.
    if tx == 1:
        for ox in range(ow):
            w = xw[ox, 0]
            i = np.uint64(xstart[ox])
            p0[ox] = w * buf[i]
            p1[ox] = w * buf[i + one]
            p2[ox] = w * buf[i + two]
    elif tx == 2:
        for ox in range(ow):
            w = xw[ox, 0]
            v = xw[ox, 1]
            i = np.uint64(xstart[ox])
            p0[ox] = w * buf[i] + v * buf[i + three]
            p1[ox] = w * buf[i + one] + v * buf[i + three + one]
            p2[ox] = w * buf[i + two] + v * buf[i + three + two]
    else:
        for ox in range(ow):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            i = np.uint64(xstart[ox])
            for k in range(tx):
                w = xw[ox, k]
                a0 += w * buf[i]
                a1 += w * buf[i + one]
                a2 += w * buf[i + two]
                i += three
            p0[ox] = a0
            p1[ox] = a1
            p2[ox] = a2
    colour_span(coef, p0, p1, p2, 0, ow)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def colour_span(coef, p0, p1, p2, start, stop):  # pragma: no cover - compiled
    """Step 3 alone, in place on pixels [start, stop) of the planar rows p0, p1, p2: colour
    matrix + offset, saturate to [0, 255], normalise (kernels/simd.py repeats it in IR)."""
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    m00, m01, m02, d0, g0, b0 = coef[0, 0], coef[0, 1], coef[0, 2], coef[0, 3], coef[0, 4], coef[0, 5]
    m10, m11, m12, d1, g1, b1 = coef[1, 0], coef[1, 1], coef[1, 2], coef[1, 3], coef[1, 4], coef[1, 5]
    m20, m21, m22, d2, g2, b2 = coef[2, 0], coef[2, 1], coef[2, 2], coef[2, 3], coef[2, 4], coef[2, 5]
    for ox in range(start, stop):
        a0 = p0[ox]
        a1 = p1[ox]
        a2 = p2[ox]
        p0[ox] = min(max(m00 * a0 + m01 * a1 + m02 * a2 + d0, lo), hi) * g0 + b0
        p1[ox] = min(max(m10 * a0 + m11 * a1 + m12 * a2 + d1, lo), hi) * g1 + b1
        p2[ox] = min(max(m20 * a0 + m21 * a1 + m22 * a2 + d2, lo), hi) * g2 + b2
