"""The fused preprocessing kernel: camera bytes -> model input tensor in one pass.

This module holds the packed BGR/RGB kernel (bit-for-bit pinned: the shipped PilotNet was
trained on its output, tests/test_kernels_pin.py) and `Preprocessor`, which also drives the
GRAY/NV12/I420/YUYV kernel (kernels/yuvkernel.py), batches (one kernel call per frame into
out[i]), letterbox (the kernel writes the fitted image at an offset, the borders are filled
with the normalised pad value) and uint8 output (kernels/store.py). docs/kernels.md has the
formats, conventions, tolerances and measured figures.

ROI crop, resize (area or bilinear), colour conversion, scale/mean/std normalisation, layout
and dtype happen in one Numba-compiled loop over output rows that writes straight into a
caller-provided buffer (a frame-pool slot bound to the inference session), so a frame costs
no allocation and no intermediate image. Per output row:
  1. vertical pass: the row's source rows (its y taps) are summed, weighted, into a float32
     row buffer spanning the columns the x taps weigh, two source rows per sweep. A
     contiguous multiply-add the compiler vectorises (every needed byte is read once, twice
     at most for an area boundary row);
  2. horizontal pass: each output pixel sums its consecutive weighted x taps from the row
     buffer (zero-weight taps dropped: kernels/resample.trim_taps; 1920 -> 640 is a 3:1 pick
     with one tap of weight 1), walking from a precomputed start with unsigned indices;
  3. colour + normalisation, one vectorised sweep over the row: a 3x3 matrix + offset (the
     source channel order and the target colour space folded together), saturated to
     [0, 255] as OpenCV's 8-bit cvtColor does, then v * (scale / std) + (-mean / std);
  4. layout (NCHW or NHWC) and dtype: float32, or float16 rounded to nearest even exactly as
     NumPy's astype (Numba has no CPU float16, so the bits are computed).
A constant-step x pick (one x tap of weight 1 per output, e.g. 1920 -> 640 bilinear, and two y
taps) skips the row buffer: `_pick_row` blends only the picked pixels' bytes of the two source
rows and applies step 3 in SIMD blocks (kernels/simd.py), writing float32 NCHW straight into
the output planes; the same operations in the same order, so bit-identical to the above.
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
from collections.abc import Sequence
from typing import cast

import numba
import numpy as np
from numba import prange, types

from edgert.kernels.formats import FORMAT_CODE, LAYOUT_OF, check_strides, frame_size, yuv_coefficients
from edgert.kernels.jitcache import njit  # cache keyed on all kernels/*.py sources
from edgert.kernels.resample import compact_columns, letterbox_size, tap_tables, trim_taps
from edgert.kernels.simd import (
    LANES,
    STEPS,
    block_bytes,
    permutation,
    pick_step1,
    pick_step3,
    pick_step3_same,
    pick_step3_swap,
)
from edgert.kernels.spec import PreprocessSpec
from edgert.kernels.store import KIND, _half_bits, colour_span, store_row, taps_and_colour  # noqa: F401 (_half_bits: tests)

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
# gray and YUV sources are decoded to R, G, B before the matrix (kernels/yuvkernel.py)
_TO_RGB.update({f: np.eye(3) for f in ("gray", "nv12", "i420", "yuyv")})


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


def pick_step(start: np.ndarray, tw: np.ndarray, yw: np.ndarray) -> int:
    """The pixel step of a constant-step x pick that kernels/simd.py has a block for, else 0.

    A pick: every output pixel has one x tap, of weight exactly 1, `step` source pixels after
    the previous one's (1920 -> 640 bilinear: step 3; an unscaled width: step 1), and every
    output row two y taps (bilinear); the kernel then blends only the picked pixels."""
    if tw.shape[1] != 1 or not np.all(tw == 1) or yw.shape[1] != 2:
        return 0
    if start.size == 1:
        return 1  # one output pixel: any step (the scalar tail computes it)
    d = np.diff(start.astype(np.int64))
    return int(d[0]) if d[0] in STEPS and np.all(d == d[0]) else 0




_B1 = block_bytes(1)
_B3 = block_bytes(3)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _pick_row(src, base, step, perm, yidx, yw, oy, coef, d0, d1, d2):  # pragma: no cover - compiled
    """Steps 1-3 when x is a constant-step pick (one tap of weight 1 per output pixel, every
    `step` source pixels from byte `base`; two y taps), into the planar rows d0, d1, d2:
    the vertical sum w0 * s0 + w1 * s1 of byte base + 3 * step * ox + c for the picked pixels
    only, then colour + normalisation, in SIMD blocks (kernels/simd.py), then a scalar tail.
    Bit-identical to the general path: the same vertical sum (w0 * a + w1 * b), an x weight
    of exactly 1 that changes no value, and the same colour operations in the same order."""
    s0 = src[yidx[oy, 0]]
    s1 = src[yidx[oy, 1]]
    w0 = yw[oy, 0]
    w1 = yw[oy, 1]
    ow = d0.shape[0]
    n = src.shape[1]
    s3 = 3 * step
    ox = 0
    if step == 3:
        if perm == 1:
            while ox + LANES <= ow and base + s3 * ox + _B3 <= n:
                pick_step3_same(s0, s1, base + s3 * ox, w0, w1, coef, d0, d1, d2, ox)
                ox += LANES
        elif perm == 2:
            while ox + LANES <= ow and base + s3 * ox + _B3 <= n:
                pick_step3_swap(s0, s1, base + s3 * ox, w0, w1, coef, d0, d1, d2, ox)
                ox += LANES
        else:
            while ox + LANES <= ow and base + s3 * ox + _B3 <= n:
                pick_step3(s0, s1, base + s3 * ox, w0, w1, coef, d0, d1, d2, ox)
                ox += LANES
    elif step == 1:
        while ox + LANES <= ow and base + s3 * ox + _B1 <= n:
            pick_step1(s0, s1, base + s3 * ox, w0, w1, coef, d0, d1, d2, ox)
            ox += LANES
    one = np.uint64(1)
    two = np.uint64(2)
    for o in range(ox, ow):
        i = np.uint64(base + s3 * o)
        d0[o] = w0 * np.float32(s0[i]) + w1 * np.float32(s1[i])
        d1[o] = w0 * np.float32(s0[i + one]) + w1 * np.float32(s1[i + one])
        d2[o] = w0 * np.float32(s0[i + two]) + w1 * np.float32(s1[i + two])
    colour_span(coef, d0, d1, d2, ox, ow)


@njit(cache=True, nogil=True, fastmath=False)
def _rows(src, x0, rw3, pick, perm, yidx, yw, xstart, xw, coef, buf, pix, out32, out16, out8, kind, nchw, oy0, ox0, r0,
          r1):  # pragma: no cover
    """Output rows [r0, r1) using scratch row `buf` (rw3 floats + 3 * taps zeros) and `pix` ([3, out_w]).
    pick != 0: x is a constant-step pick of `pick` pixels (see _pick_row), starting at byte
    x0 + xstart[0]; buf is then unused."""
    ty = yidx.shape[1]
    for oy in range(r0, r1):
        if pick != 0:
            base = x0 + np.intp(xstart[0])
            if kind == 0 and nchw:  # float32 NCHW: straight into the output's three planes
                y = oy + oy0
                cw = pix.shape[1]
                _pick_row(src, base, pick, perm, yidx, yw, oy, coef, out32[0, y, ox0:ox0 + cw],
                          out32[1, y, ox0:ox0 + cw], out32[2, y, ox0:ox0 + cw])
            else:
                _pick_row(src, base, pick, perm, yidx, yw, oy, coef, pix[0], pix[1], pix[2])
                store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0)
            continue
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
        # 2-3. horizontal taps, colour, saturation, normalisation (kernels/store.py)
        taps_and_colour(buf, xstart, xw, coef, pix)
        # 4. layout + dtype (kernels/store.py)
        store_row(pix, oy, out32, out16, out8, kind, nchw, oy0, ox0)


def _serial(src, x0, rw3, pick, perm, yidx, yw, xstart, xw, coef, rowbuf, pixbuf, out32, out16, out8, kind, nchw, oy0,
            ox0):  # pragma: no cover
    _rows(src, x0, rw3, pick, perm, yidx, yw, xstart, xw, coef, rowbuf[0], pixbuf[0], out32, out16, out8, kind, nchw,
          oy0, ox0, 0, yidx.shape[0])


def _parallel(src, x0, rw3, pick, perm, yidx, yw, xstart, xw, coef, rowbuf, pixbuf, out32, out16, out8, kind, nchw, oy0,
              ox0):  # pragma: no cover
    n = rowbuf.shape[0]
    oh = yidx.shape[0]
    for t in prange(n):
        _rows(src, x0, rw3, pick, perm, yidx, yw, xstart, xw, coef, rowbuf[t], pixbuf[t], out32, out16, out8, kind,
              nchw, oy0, ox0, t * oh // n, (t + 1) * oh // n)


# One signature for every spec: specs differ only in the tables and flags passed in. The
# source is typed read-only, any layout ('A'), so C-contiguous, row-padded and read-only
# frames all use the same machine code; compilation is disabled after it, so a wrong type
# raises instead of compiling on a frame.
_C2 = {t: types.Array(t, 2, "C") for t in (types.int32, types.float32)}
_SIGNATURE = types.void(
    types.Array(types.uint8, 2, "A", readonly=True), types.intp, types.intp, types.intp, types.intp,
    _C2[types.int32], _C2[types.float32], types.Array(types.uint32, 1, "C"), _C2[types.float32], _C2[types.float32],
    _C2[types.float32], types.Array(types.float32, 3, "C"),
    types.Array(types.float32, 3, "C"), types.Array(types.uint16, 3, "C"), types.Array(types.uint8, 3, "C"),
    types.intp, types.boolean, types.intp, types.intp)

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

    def __init__(self, spec: PreprocessSpec, src_shape: tuple[int, ...], *, threads: int = 1,
                 batch: int = 1) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise ValueError(f"spec: expected a PreprocessSpec, got {type(spec).__name__}; "
                             "build one with PreprocessSpec(...) or PreprocessSpec.from_dict(table)")
        shape = tuple(src_shape) if isinstance(src_shape, (tuple, list)) else src_shape
        if not isinstance(shape, tuple):
            raise ValueError(f"src_shape: expected a tuple of positive integers, got {src_shape!r}")
        h, w = frame_size(spec, shape)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected an integer >= 1 (frames per output tensor), got {batch!r}")
        rx, ry, rw, rh = spec.roi if spec.roi is not None else (0, 0, w, h)
        if rx + rw > w or ry + rh > h:
            raise ValueError(f"preprocess.roi: (x={rx}, y={ry}, w={rw}, h={rh}) reaches column {rx + rw} and row "
                             f"{ry + rh}, outside the {w}x{h} frame; shrink the roi or fix the camera size")
        self.spec = spec
        self.batch = batch
        self.frame_size: tuple[int, int] = (h, w)  # (height, width) of the picture
        self.src_shape: tuple[int, ...] = tuple(int(d) for d in shape)
        ow, oh = spec.out_width, spec.out_height
        self.out_shape: tuple[int, int, int, int] = (batch,) + spec.out_shape[1:]
        self.out_dtype: np.dtype = np.dtype(spec.dtype)
        self._out3 = self.out_shape[1:]
        # Letterbox: the ROI is resized to (cw, ch) and placed at (ox0, oy0); the rest is padding.
        cw, ch = letterbox_size(spec, rw, rh)
        self._ox0, self._oy0 = (ow - cw) // 2, (oh - ch) // 2
        self._cw, self._ch = cw, ch
        self._roi = (rx, ry, rw, rh)
        (xi, xw), (yi, yw) = tap_tables(spec.resize, rw, rh, cw, ch)
        self._packed = spec.src_format in ("bgr", "rgb")
        if self._packed:
            # zero-weight taps dropped; the vertical pass sweeps only the weighted span of columns
            first, span, start, tw = trim_taps(xi, xw)
            self._x0, self._rw3, n_buf = (rx + first) * 3, span * 3, span
            self._pick = pick_step(start, tw, yw)
        else:
            # YUV/GRAY decode is per pixel: decode only the pixels some x tap weighs (all of
            # them unless x is downscaled more than 2:1); windows index the compacted row
            cols, start, tw = compact_columns(xi, xw)
            self._cols = (cols + np.uint32(rx)).astype(np.uint32)  # absolute pixel columns
            from edgert.kernels.yuvkernel import MODE_DIRECT, MODE_DIRECT2, MODE_DIRECT3, MODE_ROWBUF

            yuv = spec.src_format != "gray"
            if yuv and tw.shape[1] == 1 and cols.size == cw and np.all(tw == 1.0) \
                    and np.array_equal(start, np.arange(cw)):
                # each output pixel is one kept column: decoded into the output row; every third
                # column (1920 -> 640) has its own gather with constant strides
                self._mode = MODE_DIRECT3 if cw > 1 and np.all(np.diff(cols) == 3) else MODE_DIRECT
            elif yuv and tw.shape[1] == 2 and cols.size == 2 * cw and np.all(np.diff(cols) == 1) \
                    and np.array_equal(start, 2 * np.arange(cw)):
                self._mode = MODE_DIRECT2  # 2:1, two columns per output pixel, none shared
            else:
                self._mode = MODE_ROWBUF
            n_buf = cols.size  # the columns carry the ROI: no byte offset or span as for packed rows
            self._pick = 0
        self._xstart = start * np.uint32(3)  # element offset of each window in the row buffer
        self._xw = np.ascontiguousarray(tw, np.float32)
        self._yidx = np.ascontiguousarray(yi + ry, np.int32)  # absolute source row
        self._yw = np.ascontiguousarray(yw, np.float32)
        self._fmt = FORMAT_CODE.get(spec.src_format, -1)
        self._rw = rw
        # bytes in one (unpadded) row of the 2-D view the kernel reads
        self._row_bytes = w * {"bgr": 3, "rgb": 3, "yuyv": 2}.get(spec.src_format, 1)
        self._rows2d = self.src_shape[0]
        self._coef = color_coefficients(spec)
        self._perm = permutation(self._coef)  # the pick's colour step as a channel permutation (kernels/simd.py)
        self._yc = yuv_coefficients(spec.yuv_matrix, spec.yuv_range)
        self.threads = min(threads, ch)
        # Zero tail: a window's zero-weight padding taps may run past the last kept pixel.
        self._rowbuf = np.zeros((self.threads, 3 * n_buf + 3 * tw.shape[1]), np.float32)
        self._rgbbuf = np.zeros((self.threads, 3 * n_buf), np.float32)  # one decoded source row (YUV/GRAY)
        self._gatbuf = np.zeros((self.threads, 3, n_buf), np.uint8)  # its Y, U, V bytes, gathered (YUV)
        self._pixbuf = np.zeros((self.threads, 3, cw), np.float32)
        self._dummy32 = np.zeros((1, 1, 1), np.float32)
        self._dummy16 = np.zeros((1, 1, 1), np.uint16)
        self._dummy8 = np.zeros((1, 1, 1), np.uint8)
        self._nchw = spec.layout == "nchw"
        self._kind = KIND[spec.dtype]
        self._padded = (cw, ch) != (ow, oh)
        # the padding, normalised and cast like a pixel, written once per call into the borders
        pad = np.full((3, 1), spec.pad_value, np.float32) * self._coef[:, 4:5] + self._coef[:, 5:6]
        if self._kind == 2:
            pad = np.clip(np.rint(pad), 0, 255)
        self._pad = pad.reshape(3).astype(self.out_dtype)
        if self._packed:
            self._kernel = _kernel(self.threads > 1)
        else:
            from edgert.kernels.yuvkernel import kernel as yuv_kernel  # it imports _half_bits from here

            self._kernel = yuv_kernel(self.threads > 1)

    def warmup(self) -> None:
        """Run once on zeros, on each kind of source view a frame pool hands out (contiguous,
        row-padded, read-only), so compilation, cache load and Numba's argument conversions are
        done at stage start, not on the first frame."""
        out = np.empty(self.out_shape[1:], self.out_dtype)
        rows = self.src_shape[0]
        padded = np.zeros((rows, self._row_bytes + 64), np.uint8)[:, : self._row_bytes].reshape(self.src_shape)
        readonly = np.zeros(self.src_shape, np.uint8)
        readonly.flags.writeable = False
        for src in (np.zeros(self.src_shape, np.uint8), padded, readonly):
            self._one(src, out)

    def __call__(self, src: np.ndarray | Sequence[np.ndarray], out: np.ndarray) -> None:
        """Preprocess `src` into `out` (out_dtype, C-contiguous). Returns nothing; `out` holds the tensor.

        batch == 1: `src` is one frame (src_shape; rows may be padded), `out` is out_shape or
        out_shape[1:]. batch == N: `src` is a list/tuple of N frames or an (N, *src_shape) array,
        and `out` is out_shape; frame i goes to out[i]."""
        self._check_out(out)
        if self.batch == 1 and not isinstance(src, (list, tuple)):
            self._one(cast(np.ndarray, src), out.reshape(self._out3))
            return
        n = len(src) if isinstance(src, (list, tuple)) else (src.shape[0] if isinstance(src, np.ndarray)
                                                             and src.ndim == len(self.src_shape) + 1 else -1)
        if n != self.batch:
            got = f"{n} frames" if n >= 0 else (f"an array of shape {src.shape}" if isinstance(src, np.ndarray)
                                                else type(src).__name__)
            raise ValueError(f"src: expected {self.batch} frames (a list/tuple, or an array of shape "
                             f"({self.batch}, *{self.src_shape})), got {got}; build the Preprocessor with "
                             "batch= the number of cameras")
        if out.shape != self.out_shape:
            raise ValueError(f"out: a batch needs shape {self.out_shape}, got {out.shape}")
        for i in range(n):
            self._one(src[i], out[i])

    def _check_out(self, out: np.ndarray) -> None:
        if not isinstance(out, np.ndarray) or out.dtype != self.out_dtype or (
                out.shape != self.out_shape and not (self.batch == 1 and out.shape == self._out3)):
            got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
            alt = f" or {self._out3}" if self.batch == 1 else ""
            raise ValueError(f"out: expected a {self.out_dtype} array of shape {self.out_shape}{alt}, "
                             f"got {got}; allocate it as np.empty(pre.out_shape, pre.out_dtype)")
        if not (out.flags.c_contiguous and out.flags.writeable and out.flags.aligned):
            raise ValueError("out: must be C-contiguous, writeable and aligned (the kernel writes it in place); "
                             "pass np.empty(pre.out_shape, pre.out_dtype) or a whole slot view, not a slice")

    def _one(self, src: np.ndarray, o: np.ndarray) -> None:
        """One frame into `o` (shape out_shape[1:], checked by the caller)."""
        if not isinstance(src, np.ndarray) or src.shape != self.src_shape or src.dtype != np.uint8:
            got = f"{src.shape} {src.dtype}" if isinstance(src, np.ndarray) else type(src).__name__
            raise ValueError(f"src: expected a uint8 array of shape {self.src_shape} "
                             f"{LAYOUT_OF[self.spec.src_format]}, got {got}; "
                             "build the Preprocessor for this camera's frame size and format")
        if self._packed:
            s0, s1, s2 = src.strides
            if s2 != 1 or s1 != 3 or s0 < self._row_bytes:
                raise ValueError(f"src: strides {src.strides} unsupported; pixels must be packed (strides (row, 3, 1) "
                                 f"with row >= {self._row_bytes}; rows may be padded); pass a copy or a slot view")
        else:
            check_strides(self.spec.src_format, src)
        if self._padded:
            self._fill_borders(o)
        o32, o16, o8 = self._dummy32, self._dummy16, self._dummy8
        if self._kind == 1:
            o16 = o.view(np.uint16)
        elif self._kind == 2:
            o8 = o
        else:
            o32 = o
        s = src.reshape(self._rows2d, self._row_bytes)
        if self._packed:
            self._kernel(s, self._x0, self._rw3, self._pick, self._perm, self._yidx, self._yw, self._xstart, self._xw,
                         self._coef, self._rowbuf, self._pixbuf, o32, o16, o8, self._kind, self._nchw, self._oy0,
                         self._ox0)
            return
        self._kernel(s, self._fmt, self.frame_size[0], self._cols, self._mode, self._yidx, self._yw, self._xstart,
                     self._xw, self._yc, self._coef, self._rgbbuf, self._gatbuf, self._rowbuf, self._pixbuf,
                     o32, o16, o8, self._kind, self._nchw, self._oy0, self._ox0)

    def _fill_borders(self, o: np.ndarray) -> None:
        """Letterbox padding: the bands above/below and left/right of the placed image."""
        ch, cw, y0, x0 = self._ch, self._cw, self._oy0, self._ox0
        if self._nchw:
            p = self._pad[:, None, None]
            o[:, :y0] = p
            o[:, y0 + ch:] = p
            o[:, y0:y0 + ch, :x0] = p
            o[:, y0:y0 + ch, x0 + cw:] = p
        else:
            o[:y0] = self._pad
            o[y0 + ch:] = self._pad
            o[y0:y0 + ch, :x0] = self._pad
            o[y0:y0 + ch, x0 + cw:] = self._pad

    @property
    def letterbox(self) -> tuple[float, float, int, int]:
        """(scale_x, scale_y, offset_x, offset_y): output pixel edges map to source pixel edges as
        src_x = roi_x + (out_x - offset_x) / scale_x (same for y). Identity offsets and the plain
        stretch factors when the spec has no letterbox."""
        _, _, rw, rh = self._roi
        return self._cw / rw, self._ch / rh, self._ox0, self._oy0

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """A point in output pixel coordinates (continuous, pixel edges at integers) -> source frame."""
        sx, sy, ox, oy = self.letterbox
        return self._roi[0] + (x - ox) / sx, self._roi[1] + (y - oy) / sy
