"""numba.cuda variant of the packed BGR/RGB kernel: same tables, same semantics, device output.

One CUDA thread per output pixel computes exactly the CPU kernel's sums in the CPU kernel's
order (vertical taps in pairs per source column, then the horizontal taps, then the colour
matrix, saturation and normalisation), and writes float32 straight into a device array
(e.g. the buffer bound as ONNX Runtime's CUDA input). The GPU may contract a*b + c into one
FMA, so results equal the CPU kernel to float32 rounding, not bit for bit.

Scope today: bgr/rgb sources, float32 output, both layouts, ROI, area/bilinear, letterbox
offsets (borders are filled on the device). YUV sources, float16/uint8 and batches raise a
ValueError naming the CPU path. numba.cuda is imported on first use: the CPU path never needs it.
Tested under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the CPU kernel, and on a
GPU by a `gpu`-marked test when a driver is present.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.preprocess import Preprocessor
from kernels.spec import PreprocessSpec

def _kernels() -> tuple[Any, Any]:
    """(pixel kernel, fill kernel), imported (and so compiled lazily) on first use."""
    from kernels.cudakern import fill, pixel

    return pixel, fill


class CudaPreprocessor:
    """The CPU Preprocessor's tables on the device; `pre(src, out)` with device (or host) src and a
    device `out` of out_shape[1:] (or out_shape), float32, C-contiguous."""

    def __init__(self, spec: PreprocessSpec, src_shape: tuple[int, int, int]) -> None:
        if spec.src_format not in ("bgr", "rgb") or spec.dtype != "float32":
            raise ValueError(f"CudaPreprocessor: supports bgr/rgb sources with float32 output, got "
                             f"src_format={spec.src_format!r}, dtype={spec.dtype!r}; use kernels.Preprocessor (CPU)")
        from numba import cuda

        cpu = Preprocessor(spec, src_shape)  # validates the spec against the frame, builds the tables
        self.cpu = cpu
        self.out_shape = cpu.out_shape
        self.out_dtype = cpu.out_dtype
        self.src_shape = cpu.src_shape
        w = cpu.src_shape[1]
        # the CPU kernel indexes its row buffer from 0; here columns are absolute in the source row
        self._x0 = cpu._x0
        self._d = {k: cuda.to_device(getattr(cpu, k)) for k in ("_yidx", "_yw", "_xstart", "_xw", "_coef")}
        self._pad = cuda.to_device(cpu._pad.astype(np.float32))
        self._block = (16, 8)
        ch, cw = cpu._ch, cpu._cw
        self._grid = ((cw + 15) // 16, (ch + 7) // 8)
        oh, ow = spec.out_height, spec.out_width
        self._fill_grid = ((ow + 15) // 16, (oh + 7) // 8)
        self._nchw = spec.layout == "nchw"
        self._padded = cpu._padded
        self._oy0, self._ox0 = cpu._oy0, cpu._ox0
        self._row = w * 3

    def __call__(self, src: Any, out: Any) -> None:
        from numba import cuda

        if tuple(src.shape) != self.src_shape:
            raise ValueError(f"src: expected shape {self.src_shape}, got {tuple(src.shape)}")
        if tuple(out.shape) not in (self.out_shape, self.out_shape[1:]) or np.dtype(out.dtype) != np.float32:
            raise ValueError(f"out: expected a float32 device array of shape {self.out_shape}, got "
                             f"{tuple(out.shape)} {out.dtype}")
        if not hasattr(src, "__cuda_array_interface__") and not hasattr(src, "copy_to_host"):
            src = cuda.to_device(np.ascontiguousarray(src))
        s = src.reshape(self.src_shape[0], self._row) if hasattr(src, "reshape") else src
        o = out.reshape(self.out_shape[1:]) if tuple(out.shape) == self.out_shape else out
        pixel, fill = _kernels()
        d = self._d
        if self._padded:
            fill[self._fill_grid, self._block](o, self._pad, self._nchw)
        pixel[self._grid, self._block](s, self._x0, d["_yidx"], d["_yw"], d["_xstart"], d["_xw"], d["_coef"], o,
                                       self._nchw, self._oy0, self._ox0)
