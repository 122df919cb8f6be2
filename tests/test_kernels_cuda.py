"""kernels/cuda.py: the numba.cuda variant equals the CPU kernel (float32 rounding: the GPU may fuse
multiply-adds). Under the CUDA simulator in a subprocess (always runs, no GPU needed) and on a
real GPU when an NVIDIA driver is present (marked `gpu`, skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.providers import nvidia_driver

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import numpy as np
from numba import cuda
from kernels import PreprocessSpec, Preprocessor
from kernels.cuda import CudaPreprocessor
rng = np.random.default_rng(0)
cases = [((9, 13), dict(out_width=5, out_height=4, resize="bilinear", layout="nchw")),
         ((11, 10), dict(out_width=3, out_height=3, resize="area", layout="nhwc", roi=(1, 2, 8, 7))),
         ((6, 9), dict(out_width=7, out_height=4, resize="area", layout="nchw", letterbox=True, pad_value=114.0)),
         ((5, 4), dict(out_width=6, out_height=7, resize="bilinear", layout="nhwc", color="yuv601"))]
for (h, w), kw in cases:
    spec = PreprocessSpec(**{"src_format": "bgr", "color": "rgb", "dtype": "float32", "mean": (0.5, 0.4, 0.3),
                             "std": (0.25, 0.5, 1.0), **kw})
    base = rng.integers(0, 256, (h, w * 3 + 6), dtype=np.uint8)
    src = np.ascontiguousarray(base[:, : w * 3].reshape(h, w, 3))
    cpu = Preprocessor(spec, src.shape)
    want = np.empty(cpu.out_shape, np.float32)
    cpu(src, want)
    gpu = CudaPreprocessor(spec, src.shape)
    out = cuda.device_array(gpu.out_shape, np.float32)
    gpu(cuda.to_device(src), out)
    got = out.copy_to_host()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
try:
    CudaPreprocessor(PreprocessSpec(src_format="nv12", out_width=4, out_height=4, resize="area", color="rgb",
                                    layout="nchw", dtype="float32"), (6, 4))
except ValueError as e:
    assert "use kernels.Preprocessor (CPU)" in str(e)
else:
    raise AssertionError("nv12 accepted")
print("OK")
"""


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_cuda_kernel_matches_cpu_under_simulator() -> None:
    res = _run({"NUMBA_ENABLE_CUDASIM": "1"})
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu_on_gpu() -> None:
    reason = nvidia_driver()
    if reason is not None:
        pytest.skip(f"no NVIDIA GPU: {reason}")
    res = _run({"NUMBA_ENABLE_CUDASIM": "0"})
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]
