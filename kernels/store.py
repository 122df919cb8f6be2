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
from numba import njit

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
    """pix [3, ow] -> output row oy + oy0, columns ox0 .. ox0 + ow, in the tensor's layout/dtype."""
    ow = pix.shape[1]
    y = oy + oy0
    if kind == 1:
        if nchw:
            for c in range(3):
                for ox in range(ow):
                    out16[c, y, ox + ox0] = _half_bits(pix[c, ox])
        else:
            for ox in range(ow):
                for c in range(3):
                    out16[y, ox + ox0, c] = _half_bits(pix[c, ox])
    elif kind == 2:
        if nchw:
            for c in range(3):
                for ox in range(ow):
                    out8[c, y, ox + ox0] = _u8(pix[c, ox])
        else:
            for ox in range(ow):
                for c in range(3):
                    out8[y, ox + ox0, c] = _u8(pix[c, ox])
    else:
        if nchw:
            for c in range(3):
                for ox in range(ow):
                    out32[c, y, ox + ox0] = pix[c, ox]
        else:
            for ox in range(ow):
                for c in range(3):
                    out32[y, ox + ox0, c] = pix[c, ox]
