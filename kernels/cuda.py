"""numba.cuda variant of the fused kernel: same spec, same tables, same arithmetic, device output.

`CudaPreprocessor(spec, src_shape, batch=N)` covers what `edgert.kernels.Preprocessor` does: every
source format (bgr, rgb, gray, nv12, i420, yuyv; both YUV matrices and ranges), ROI, area and
bilinear resize, letterbox (borders filled on the device), every colour target, both
layouts and all three dtypes (float32; float16 converted round-to-nearest-even by the store,
as NumPy's astype; uint8 saturated and rounded half to even), and batches. One CUDA thread
per output pixel computes the CPU kernel's sums in the CPU kernel's order
(kernels/cudakern.py), so under the CUDA simulator the output is bit-identical to the CPU
kernel's; on a GPU the compiler may fuse a * b + c into one FMA (last float32 bit; a uint8
or float16 output then differs by at most one unit where a value sits on a rounding tie).

It writes into a caller-provided device array: a numba DeviceNDArray, or anything with
`__cuda_array_interface__` (CuPy, PyTorch, ...). ONNX Runtime binds such a buffer by pointer,
so the tensor never goes back through the host:

    pre = CudaPreprocessor(spec, (1080, 1920, 3)); pre.warmup()
    out = cuda.device_array(pre.out_shape, pre.out_dtype)
    binding.bind_input(name, "cuda", 0, pre.out_dtype, pre.out_shape,
                       out.__cuda_array_interface__["data"][0])
    pre(frame_on_device, out); session.run_with_iobinding(binding)

Frames already on the device are read in place (contiguous, shaped like `src_shape`); a host
frame is first copied into a device staging buffer allocated once here (the host->device
copy is then the floor). Not done on the device: a row-pitched (padded) device frame (pass a
contiguous one; a pitched host frame is made contiguous on the host first, which copies).
numba.cuda is imported on first use: the CPU path never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgert.kernels.formats import LAYOUT_OF
from edgert.kernels.preprocess import Preprocessor
from edgert.kernels.resample import tap_tables, trim_taps
from edgert.kernels.spec import PreprocessSpec

_BLOCK = (32, 8)


def _grid(w: int, h: int) -> tuple[int, int]:
    return ((w + _BLOCK[0] - 1) // _BLOCK[0], (h + _BLOCK[1] - 1) // _BLOCK[1])


def _device(a: Any, what: str) -> Any:
    """A numba device array for `a` (itself, or a view of a __cuda_array_interface__ object)."""
    from numba import cuda

    if hasattr(a, "copy_to_host"):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    raise ValueError(f"{what}: expected a device array (numba DeviceNDArray or an object with "
                     f"__cuda_array_interface__), got {type(a).__name__}; allocate it with cuda.device_array("
                     "pre.out_shape, pre.out_dtype), or use kernels.Preprocessor for host output")


class CudaPreprocessor:
    """The CPU Preprocessor's tables on the device; `pre(src, out)` with a device (or host) frame
    and a device `out` of out_shape (or out_shape[1:] when batch == 1), out_dtype, C-contiguous.

    Like the CPU object: built once per (spec, frame shape), `warmup()` at stage start compiles
    the device code (numba.cuda compiles on the first launch), nothing is allocated per frame
    for device frames. Launches go to the default stream; synchronise (or use the same stream
    in ONNX Runtime) before reading `out`."""

    def __init__(self, spec: PreprocessSpec, src_shape: tuple[int, ...], *, batch: int = 1) -> None:
        from numba import cuda

        cpu = Preprocessor(spec, src_shape, batch=batch)  # validates spec, frame and ROI; builds the tables
        self.spec = spec
        self.batch = batch
        self.src_shape = cpu.src_shape
        self.frame_size = cpu.frame_size
        self.out_shape = cpu.out_shape
        self.out_dtype = cpu.out_dtype
        self.letterbox = cpu.letterbox
        self.to_source = cpu.to_source
        self._out3 = cpu.out_shape[1:]
        rx, ry, rw, rh = cpu._roi
        (xi, xw), _ = tap_tables(spec.resize, rw, rh, cpu._cw, cpu._ch)
        first, _, start, tw = trim_taps(xi, xw)
        xpix = (start.astype(np.int64) + first + rx).astype(np.int32)  # first weighted source pixel
        self._rows2d, self._row_bytes = cpu._rows2d, cpu._row_bytes
        self._fmt = -1 if cpu._packed else cpu._fmt
        self._h = cpu.frame_size[0]
        self._kind = cpu._kind
        self._nchw = cpu._nchw
        self._oy0, self._ox0 = cpu._oy0, cpu._ox0
        self._padded = cpu._padded
        self._grid = _grid(cpu._cw, cpu._ch)
        ow, oh = spec.out_width, spec.out_height
        self._fill_grid = _grid(ow, oh)
        to = cuda.to_device
        self._yidx, self._yw = to(cpu._yidx), to(cpu._yw)
        self._xpix, self._xw = to(xpix), to(np.ascontiguousarray(tw, np.float32))
        self._yc, self._coef = to(cpu._yc), to(cpu._coef)
        self._pad = to(cpu._pad)
        self._dummy32 = cuda.device_array((1, 1, 1), np.float32)
        self._dummy16 = cuda.device_array((1, 1, 1), np.float16)
        self._dummy8 = cuda.device_array((1, 1, 1), np.uint8)
        self._staging = cuda.device_array((self._rows2d, self._row_bytes), np.uint8)  # for host frames

    def warmup(self) -> None:
        """Compile the device code and run it once on zeros, at stage start, not on the first frame."""
        from numba import cuda

        out = cuda.device_array(self._out3, self.out_dtype)
        self._one(cuda.to_device(np.zeros(self.src_shape, np.uint8)), out)
        cuda.synchronize()

    def __call__(self, src: Any, out: Any) -> None:
        """Preprocess `src` (one frame, or `batch` frames as a list/tuple or an (N, *src_shape) array,
        on the device or the host) into the device array `out`."""

        o = _device(out, "out")
        if tuple(o.shape) not in (self.out_shape, self._out3 if self.batch == 1 else None) or \
                np.dtype(o.dtype) != self.out_dtype:
            raise ValueError(f"out: expected a {self.out_dtype} device array of shape {self.out_shape}, got "
                             f"{tuple(o.shape)} {np.dtype(o.dtype)}; allocate it with "
                             "cuda.device_array(pre.out_shape, pre.out_dtype)")
        if not o.is_c_contiguous():
            raise ValueError("out: must be C-contiguous (the kernel writes it in place); pass the whole buffer")
        if self.batch == 1 and not isinstance(src, (list, tuple)):
            self._one(src, o.reshape(self._out3) if tuple(o.shape) != self._out3 else o)
            return
        frames: Sequence[Any] = src if isinstance(src, (list, tuple)) else [src[i] for i in range(src.shape[0])] \
            if len(getattr(src, "shape", ())) == len(self.src_shape) + 1 else []
        if len(frames) != self.batch:
            raise ValueError(f"src: expected {self.batch} frames (a list/tuple, or an array of shape "
                             f"({self.batch}, *{self.src_shape})); build the CudaPreprocessor with batch= the "
                             "number of cameras")
        for i, f in enumerate(frames):
            self._one(f, o[i])

    def _one(self, src: Any, o: Any) -> None:

        from edgert.kernels.cudakern import fill, pixel

        if tuple(getattr(src, "shape", ())) != self.src_shape or np.dtype(getattr(src, "dtype", None)) != np.uint8:
            got = f"{getattr(src, 'shape', '?')} {getattr(src, 'dtype', type(src).__name__)}"
            raise ValueError(f"src: expected a uint8 array of shape {self.src_shape} "
                             f"{LAYOUT_OF[self.spec.src_format]}, got {got}; build the CudaPreprocessor for "
                             "this camera's frame size and format")
        if isinstance(src, np.ndarray):  # host frame: into the staging buffer (no device allocation)
            self._staging.copy_to_device(np.ascontiguousarray(src).reshape(self._rows2d, self._row_bytes))
            s = self._staging
        else:
            d = _device(src, "src")
            if not d.is_c_contiguous():
                raise ValueError("src: a device frame must be C-contiguous (row-pitched device buffers are not "
                                 "supported); copy it to a contiguous buffer or pass the host frame")
            s = d.reshape(self._rows2d, self._row_bytes)
        o32, o16, o8 = self._dummy32, self._dummy16, self._dummy8
        if self._kind == 1:
            o16 = o
        elif self._kind == 2:
            o8 = o
        else:
            o32 = o
        if self._padded:
            fill[self._fill_grid, _BLOCK](o, self._pad, self._nchw)
        pixel[self._grid, _BLOCK](s, self._fmt, self._h, self._yidx, self._yw, self._xpix, self._xw, self._yc,
                                  self._coef, o32, o16, o8, self._kind, self._nchw, self._oy0, self._ox0)
