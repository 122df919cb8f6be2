"""The fused preprocessing kernel: camera bytes -> model input tensor in one pass.

ROI crop, resize (area or bilinear), colour conversion, scale/mean/std normalisation, layout
and dtype happen in one Numba-compiled loop over output rows that writes straight into a
caller-provided buffer (a frame-pool slot bound to the inference session), so a frame costs
no allocation and no intermediate image. Per output row:
  1. vertical pass: the row's source rows (its y taps) are summed, weighted, into a float32
     row buffer as wide as the ROI, two source rows per sweep. A contiguous multiply-add the
     compiler vectorises; it is most of the work (every ROI byte is read once, twice at most
     for an area boundary row) and runs close to memcpy speed;
  2. horizontal pass: each output pixel sums its consecutive x taps from the row buffer,
     walking from a precomputed start with unsigned indices (no wraparound checks);
  3. colour + normalisation, one vectorised sweep over the row: a 3x3 matrix + offset (the
     source channel order and the target colour space folded together), saturated to
     [0, 255] as OpenCV's 8-bit cvtColor does, then v * (scale / std) + (-mean / std);
  4. layout (NCHW or NHWC) and dtype: float32, or float16 rounded to nearest even exactly as
     NumPy's astype (Numba has no CPU float16, so the bits are computed).
Resampling before colour conversion is exact because the conversion is affine and the tap
weights sum to 1 (the [0, 255] saturation is applied after resampling, as in cv2). Tap tables
(kernels/resample.py), colour coefficients and scratch rows are built in __init__.

Accuracy. Against the same chain computed in float (cv2.resize on float32, the documented
colour formula) the kernel agrees to float32 rounding (tested at 0.05 of an 8-bit step).
Against `reference_preprocess`, the plain 8-bit cv2/NumPy chain, the difference is OpenCV's
rounding: to uint8 after cv2.resize (plus 11-bit fixed-point weights in 8-bit bilinear:
up to ~0.82 step measured) and after cv2.cvtColor, whose 8-bit YUV also computes
U = .492(B - Y) and V = .877(R - Y) from the already-rounded Y (up to ~0.94 step by itself).
tests/test_kernels.py therefore asserts, before normalisation,
    |kernel - reference| <= TOLERANCE_STEPS[color] * scale / min|std|   (+ 1 float16 ulp)
with TOLERANCE_STEPS = 1.0 for rgb/bgr and 2.0 for yuv601 (analytic worst case ~1.97;
measured worst cases 0.82 and 1.57 steps).

Compilation: kernels are `@njit(cache=True, nogil=True, fastmath=False)` with one explicit
signature, compiled (or loaded from Numba's on-disk cache) when the first Preprocessor of a
kind is built, and `warmup()` runs them once, so nothing is compiled on a frame and a
mismatched argument is an error rather than a silent recompile on the hot path. The
kernel releases the GIL.

Threads: `threads=1` (the default) runs a serial kernel. `threads=N` splits the output rows
into N chunks, each with its own scratch row, and runs them with `prange` under Numba's
parallel backend. The caller owns the thread count: call `numba.set_num_threads(N)` (N at
most NUMBA_NUM_THREADS) before running, and budget the cores, since capture, inference and
control run beside it (do not oversubscribe). Any threading layer works; the built-in
`workqueue` layer is fine for one preprocessing thread of control but is not safe for
calling parallel kernels from several Python threads at once (use `tbb` or `omp` via
NUMBA_THREADING_LAYER for that).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange, types

from kernels.resample import tap_tables, window_starts
from kernels.spec import PreprocessSpec

# --- colour -------------------------------------------------------------------------------

# cv2.COLOR_RGB2YUV (imgproc color_yuv): Y = .299R + .587G + .114B, U = .492(B-Y) + 128, V = .877(R-Y) + 128
_Y = np.array([0.299, 0.587, 0.114])
_TARGETS = {
    "rgb": (np.eye(3), np.zeros(3)),
    "bgr": (np.eye(3)[::-1], np.zeros(3)),
    "yuv601": (np.stack([_Y, 0.492 * (np.array([0.0, 0.0, 1.0]) - _Y), 0.877 * (np.array([1.0, 0.0, 0.0]) - _Y)]),
               np.array([0.0, 128.0, 128.0])),
}
_TO_RGB = {"rgb": np.eye(3), "bgr": np.eye(3)[::-1]}  # source channel order -> (R, G, B)


def color_coefficients(spec: PreprocessSpec) -> np.ndarray:
    """float32 [3, 6]: per output channel c, (m0, m1, m2, offset, post_scale, post_bias).

    out[c] = clip(m . src_pixel + offset, 0, 255) * post_scale + post_bias, where src_pixel is in
    the source's channel order; post_scale = scale / std[c], post_bias = -mean[c] / std[c].
    """
    target, offset = _TARGETS[spec.color]
    m = target @ _TO_RGB[spec.src_format]
    std = np.asarray(spec.std, np.float64)
    coef = np.empty((3, 6), np.float64)
    coef[:, :3] = m
    coef[:, 3] = offset
    coef[:, 4] = spec.scale / std
    coef[:, 5] = -np.asarray(spec.mean, np.float64) / std
    return coef.astype(np.float32)


# --- the kernel ---------------------------------------------------------------------------


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


@njit(cache=True, nogil=True, fastmath=False)
def _rows(src, x0, rw3, yidx, yw, xstart, xw, coef, buf, pix, out32, out16, nchw, f16, r0, r1):  # pragma: no cover
    """Output rows [r0, r1) using scratch row `buf` (rw3 floats + 3 * taps zeros) and `pix` ([3, out_w])."""
    ty = yidx.shape[1]
    ow, tx = xw.shape
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    m00, m01, m02, d0, g0, b0 = coef[0, 0], coef[0, 1], coef[0, 2], coef[0, 3], coef[0, 4], coef[0, 5]
    m10, m11, m12, d1, g1, b1 = coef[1, 0], coef[1, 1], coef[1, 2], coef[1, 3], coef[1, 4], coef[1, 5]
    m20, m21, m22, d2, g2, b2 = coef[2, 0], coef[2, 1], coef[2, 2], coef[2, 3], coef[2, 4], coef[2, 5]
    for oy in range(r0, r1):
        # 1. vertical: weighted sum of the source rows into buf, two rows per sweep (halves the
        #    buf traffic); a contiguous multiply-add that the compiler vectorises.
        w0 = yw[oy, 0]
        s0 = src[yidx[oy, 0], x0:x0 + rw3]
        if ty == 1:
            for j in range(rw3):
                buf[j] = w0 * np.float32(s0[j])
        else:
            w1 = yw[oy, 1]
            s1 = src[yidx[oy, 1], x0:x0 + rw3]
            for j in range(rw3):
                buf[j] = w0 * np.float32(s0[j]) + w1 * np.float32(s1[j])
        k = 2
        while k < ty:
            w0 = yw[oy, k]
            w1 = yw[oy, k + 1] if k + 1 < ty else np.float32(0.0)
            if w1 != 0.0:
                s0 = src[yidx[oy, k], x0:x0 + rw3]
                s1 = src[yidx[oy, k + 1], x0:x0 + rw3]
                for j in range(rw3):
                    buf[j] += w0 * np.float32(s0[j]) + w1 * np.float32(s1[j])
            elif w0 != 0.0:
                s0 = src[yidx[oy, k], x0:x0 + rw3]
                for j in range(rw3):
                    buf[j] += w0 * np.float32(s0[j])
            k += 2
        # 2. horizontal: each output pixel's taps are consecutive pixels of buf from xstart[ox].
        #    Unsigned indices spare the negative-index wraparound checks (about 2x here).
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
            pix[0, ox] = a0
            pix[1, ox] = a1
            pix[2, ox] = a2
        # 3. colour, saturate, normalise: in place, one vectorisable sweep over the row
        p0 = pix[0]
        p1 = pix[1]
        p2 = pix[2]
        for ox in range(ow):
            a0 = p0[ox]
            a1 = p1[ox]
            a2 = p2[ox]
            p0[ox] = min(max(m00 * a0 + m01 * a1 + m02 * a2 + d0, lo), hi) * g0 + b0
            p1[ox] = min(max(m10 * a0 + m11 * a1 + m12 * a2 + d1, lo), hi) * g1 + b1
            p2[ox] = min(max(m20 * a0 + m21 * a1 + m22 * a2 + d2, lo), hi) * g2 + b2
        # 4. layout + dtype
        if f16:
            if nchw:
                for c in range(3):
                    for ox in range(ow):
                        out16[c, oy, ox] = _half_bits(pix[c, ox])
            else:
                for ox in range(ow):
                    for c in range(3):
                        out16[oy, ox, c] = _half_bits(pix[c, ox])
        else:
            if nchw:
                for c in range(3):
                    for ox in range(ow):
                        out32[c, oy, ox] = pix[c, ox]
            else:
                for ox in range(ow):
                    for c in range(3):
                        out32[oy, ox, c] = pix[c, ox]


def _serial(src, x0, rw3, yidx, yw, xstart, xw, coef, rowbuf, pixbuf, out32, out16, nchw, f16):  # pragma: no cover
    _rows(src, x0, rw3, yidx, yw, xstart, xw, coef, rowbuf[0], pixbuf[0], out32, out16, nchw, f16, 0, yidx.shape[0])


def _parallel(src, x0, rw3, yidx, yw, xstart, xw, coef, rowbuf, pixbuf, out32, out16, nchw, f16):  # pragma: no cover
    n = rowbuf.shape[0]
    oh = yidx.shape[0]
    for t in prange(n):
        _rows(src, x0, rw3, yidx, yw, xstart, xw, coef, rowbuf[t], pixbuf[t], out32, out16, nchw, f16,
              t * oh // n, (t + 1) * oh // n)


# One signature for every spec: specs differ only in the tables and flags passed in. The
# source is typed read-only, any layout ('A'), so C-contiguous, row-padded and read-only
# frames all use the same machine code; compilation is disabled after it, so a wrong type
# raises instead of compiling on a frame.
_C2 = {t: types.Array(t, 2, "C") for t in (types.int32, types.float32)}
_SIGNATURE = types.void(
    types.Array(types.uint8, 2, "A", readonly=True), types.intp, types.intp,
    _C2[types.int32], _C2[types.float32], types.Array(types.uint32, 1, "C"), _C2[types.float32], _C2[types.float32],
    _C2[types.float32], types.Array(types.float32, 3, "C"),
    types.Array(types.float32, 3, "C"), types.Array(types.uint16, 3, "C"), types.boolean, types.boolean)

_kernels: dict[bool, numba.core.dispatcher.Dispatcher] = {}
_kernels_lock = threading.Lock()


def _kernel(parallel: bool) -> numba.core.dispatcher.Dispatcher:
    """The compiled kernel, built on first use (compiles, or loads Numba's cache: not at import)."""
    with _kernels_lock:
        k = _kernels.get(parallel)
        if k is None:
            py = _parallel if parallel else _serial
            k = njit([_SIGNATURE], cache=True, nogil=True, fastmath=False, parallel=parallel)(py)
            _kernels[parallel] = k
        return k


# --- the public object --------------------------------------------------------------------


class Preprocessor:
    """A spec bound to one source frame size: tables, scratch and compiled kernel, built once.

    `pre(src, out)` then costs one kernel call and a few attribute checks per frame
    (about 3 us of Python). `out_shape` / `out_dtype` say what `out` must be; `threads` is the
    number of row chunks (1 = serial kernel). An instance owns its scratch rows, so one
    instance must not be called from two threads at once (build one per thread).
    """

    def __init__(self, spec: PreprocessSpec, src_shape: tuple[int, int, int], *, threads: int = 1) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise ValueError(f"spec: expected a PreprocessSpec, got {type(spec).__name__}; "
                             "build one with PreprocessSpec(...) or PreprocessSpec.from_dict(table)")
        shape = tuple(src_shape)
        if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise ValueError(f"src_shape: expected (height, width, 3) positive integers, got {src_shape!r}")
        h, w, ch = (int(d) for d in shape)
        if ch != 3:
            raise ValueError(f"src_shape: {spec.src_format!r} frames have 3 channels, got {ch} in {shape}; "
                             "convert the camera to BGR/RGB or fix preprocess.src_format")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        rx, ry, rw, rh = spec.roi if spec.roi is not None else (0, 0, w, h)
        if rx + rw > w or ry + rh > h:
            raise ValueError(f"preprocess.roi: (x={rx}, y={ry}, w={rw}, h={rh}) reaches column {rx + rw} and row "
                             f"{ry + rh}, outside the {w}x{h} frame; shrink the roi or fix the camera size")
        self.spec = spec
        self.src_shape: tuple[int, int, int] = (h, w, 3)
        ow, oh = spec.out_width, spec.out_height
        self.out_shape: tuple[int, int, int, int] = spec.out_shape
        self.out_dtype: np.dtype = np.dtype(spec.dtype)
        self._out3 = self.out_shape[1:]
        (xi, xw), (yi, yw) = tap_tables(spec.resize, rw, rh, ow, oh)
        self._xstart = window_starts(xi, xw) * np.uint32(3)  # element offset of each window in the row buffer
        self._xw = np.ascontiguousarray(xw, np.float32)
        self._yidx = np.ascontiguousarray(yi + ry, np.int32)  # absolute source row
        self._yw = np.ascontiguousarray(yw, np.float32)
        self._x0 = rx * 3
        self._rw3 = rw * 3
        self._rw3_full = w * 3  # bytes in a packed source row
        self._coef = color_coefficients(spec)
        self.threads = min(threads, oh)
        # Zero tail: a window's zero-weight padding taps may run past the ROI's last pixel.
        self._rowbuf = np.zeros((self.threads, self._rw3 + 3 * xw.shape[1]), np.float32)
        self._pixbuf = np.zeros((self.threads, 3, ow), np.float32)
        self._dummy32 = np.zeros((1, 1, 1), np.float32)
        self._dummy16 = np.zeros((1, 1, 1), np.uint16)
        self._nchw = spec.layout == "nchw"
        self._f16 = self.out_dtype == np.float16
        self._kernel = _kernel(self.threads > 1)

    def warmup(self) -> None:
        """Run once on zeros, on each kind of source view a frame pool hands out (contiguous,
        row-padded, read-only), so compilation, cache load and Numba's argument conversions are
        done at stage start, not on the first frame."""
        h, w, _ = self.src_shape
        out = np.empty(self.out_shape, self.out_dtype)
        padded = np.zeros((h, w * 3 + 64), np.uint8)[:, : w * 3].reshape(h, w, 3)
        readonly = np.zeros(self.src_shape, np.uint8)
        readonly.flags.writeable = False
        for src in (np.zeros(self.src_shape, np.uint8), padded, readonly):
            self(src, out)

    def __call__(self, src: np.ndarray, out: np.ndarray) -> None:
        """Preprocess frame `src` (uint8 HxWx3, rows may be padded) into `out` (out_shape or
        out_shape[1:], out_dtype, C-contiguous). Returns nothing; `out` holds the tensor."""
        if not isinstance(src, np.ndarray) or src.shape != self.src_shape or src.dtype != np.uint8:
            got = f"{src.shape} {src.dtype}" if isinstance(src, np.ndarray) else type(src).__name__
            raise ValueError(f"src: expected a uint8 array of shape {self.src_shape} (H, W, 3), got {got}; "
                             "build the Preprocessor for this camera's frame size and channel count")
        s0, s1, s2 = src.strides
        if s2 != 1 or s1 != 3 or s0 < self._rw3_full:
            raise ValueError(f"src: strides {src.strides} unsupported; pixels must be packed (strides (row, 3, 1) "
                             f"with row >= {self._rw3_full}; rows may be padded); pass a copy or a slot view")
        if not isinstance(out, np.ndarray) or out.dtype != self.out_dtype or (out.shape != self.out_shape
                                                                             and out.shape != self._out3):
            got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"out: expected a {self.out_dtype} array of shape {self.out_shape} or {self._out3}, "
                             f"got {got}; allocate it as np.empty(pre.out_shape, pre.out_dtype)")
        if not (out.flags.c_contiguous and out.flags.writeable and out.flags.aligned):
            raise ValueError("out: must be C-contiguous, writeable and aligned (the kernel writes it in place); "
                             "pass np.empty(pre.out_shape, pre.out_dtype) or a whole slot view, not a slice")
        o = out.reshape(self._out3)
        s = src.reshape(self.src_shape[0], self._rw3_full)
        if self._f16:
            self._kernel(s, self._x0, self._rw3, self._yidx, self._yw, self._xstart, self._xw, self._coef,
                         self._rowbuf, self._pixbuf, self._dummy32, o.view(np.uint16), self._nchw, True)
        else:
            self._kernel(s, self._x0, self._rw3, self._yidx, self._yw, self._xstart, self._xw, self._coef,
                         self._rowbuf, self._pixbuf, o, self._dummy16, self._nchw, False)

