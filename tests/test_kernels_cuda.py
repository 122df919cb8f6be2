"""kernels/cuda.py: the numba.cuda variant equals the CPU kernel, for every source format, layout,
dtype, ROI, letterbox and batch.

Under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, which must be set before numba.cuda is
imported, hence a subprocess) the device code runs on the CPU with the CPU kernel's float32
operations in the same order: the outputs must be bit-identical. On a real GPU (marked `gpu`,
skipped with the reason when no NVIDIA driver is present) the compiler may fuse a * b + c into
an FMA, so there the comparison allows float32 rounding (and one unit of a float16/uint8 output
that sits on a rounding tie).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.runtime.providers import nvidia_driver

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import os
import numpy as np
from numba import cuda
from edgert.kernels import PreprocessSpec, Preprocessor
from edgert.kernels.cuda import CudaPreprocessor

EXACT = os.environ["NUMBA_ENABLE_CUDASIM"] == "1"
rng = np.random.default_rng(0)
SHAPE = {"bgr": lambda h, w: (h, w, 3), "rgb": lambda h, w: (h, w, 3), "gray": lambda h, w: (h, w),
         "nv12": lambda h, w: (h * 3 // 2, w), "i420": lambda h, w: (h * 3 // 2, w), "yuyv": lambda h, w: (h, w, 2)}
U8 = dict(dtype="uint8", scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
CASES = [  # (format, (h, w), spec keys, batch): tiny frames, the simulator runs one Python call per thread
    ("bgr", (9, 13), dict(out_width=5, out_height=4, resize="bilinear", layout="nchw"), 1),
    ("bgr", (4, 24), dict(out_width=8, out_height=2, resize="bilinear", layout="nchw"), 1),  # 3:1, x weights 0/1
    ("rgb", (11, 10), dict(out_width=3, out_height=3, resize="area", layout="nhwc", roi=(1, 2, 8, 7),
                           dtype="float16"), 1),
    ("bgr", (6, 9), dict(out_width=7, out_height=4, resize="area", layout="nchw", letterbox=True, pad_value=114.0,
                         **U8), 1),
    ("bgr", (5, 4), dict(out_width=6, out_height=7, resize="bilinear", layout="nhwc", color="yuv601"), 1),
    ("nv12", (8, 12), dict(out_width=4, out_height=3, resize="bilinear", layout="nchw", roi=(1, 1, 9, 6)), 1),
    ("i420", (6, 10), dict(out_width=5, out_height=5, resize="area", layout="nhwc", yuv_matrix="bt709",
                           yuv_range="full", dtype="float16"), 1),
    ("yuyv", (7, 10), dict(out_width=3, out_height=4, resize="area", layout="nchw", roi=(3, 0, 7, 7), color="bgr",
                           letterbox=True), 1),
    ("gray", (9, 7), dict(out_width=4, out_height=4, resize="bilinear", layout="nhwc", **U8), 1),
    ("nv12", (4, 6), dict(out_width=3, out_height=2, resize="area", layout="nchw", color="yuv601"), 3),
]
for fmt, (h, w), kw, batch in CASES:
    spec = PreprocessSpec(**{"src_format": fmt, "color": "rgb", "dtype": "float32", "mean": (0.5, 0.4, 0.3),
                             "std": (0.25, 0.5, 1.0), **kw})
    frames = [rng.integers(0, 256, SHAPE[fmt](h, w), dtype=np.uint8) for _ in range(batch)]
    cpu = Preprocessor(spec, frames[0].shape, batch=batch)
    want = np.empty(cpu.out_shape, cpu.out_dtype)
    cpu(frames if batch > 1 else frames[0], want)
    gpu = CudaPreprocessor(spec, frames[0].shape, batch=batch)
    gpu.warmup()
    assert gpu.out_shape == cpu.out_shape and gpu.out_dtype == cpu.out_dtype
    out = cuda.device_array(gpu.out_shape, gpu.out_dtype)
    for src in ([cuda.to_device(f) for f in frames], frames):  # device frames, then host frames (staging)
        gpu(src if batch > 1 else src[0], out)
        got = out.copy_to_host()
        what = f"{fmt} {kw} batch {batch}"
        if EXACT:
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=what)
        elif want.dtype == np.float32:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=what)
        else:
            d = np.abs(got.astype(np.float64) - want.astype(np.float64))
            assert np.all(d <= np.maximum(1.0 if want.dtype == np.uint8 else 0, np.spacing(np.abs(want)))), what

spec = PreprocessSpec(src_format="nv12", out_width=4, out_height=4, resize="area", color="rgb", layout="nchw",
                      dtype="float32")
gpu = CudaPreprocessor(spec, (6, 4))
ok = cuda.device_array(gpu.out_shape, np.float32)
for src, out, msg in [(cuda.device_array((6, 5), np.uint8), ok, "src: expected a uint8 array of shape (6, 4)"),
                      (cuda.device_array((6, 4), np.uint8), np.empty(gpu.out_shape, np.float32),
                       "out: expected a device array"),
                      (cuda.device_array((6, 4), np.uint8), cuda.device_array(gpu.out_shape, np.float16),
                       "out: expected a float32 device array of shape (1, 3, 4, 4)")]:
    try:
        gpu(src, out)
    except ValueError as e:
        assert msg in str(e), (msg, str(e))
    else:
        raise AssertionError(f"accepted: {msg}")
try:
    CudaPreprocessor(spec, (7, 4))
except ValueError as e:
    assert "even width and height" in str(e), str(e)
else:
    raise AssertionError("odd NV12 accepted")
print("OK")
"""


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_cuda_kernel_is_bit_identical_to_cpu_under_simulator() -> None:
    res = _run({"NUMBA_ENABLE_CUDASIM": "1"})
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu_on_gpu() -> None:
    reason = nvidia_driver()
    if reason is not None:
        pytest.skip(f"no NVIDIA GPU: {reason}")
    res = _run({"NUMBA_ENABLE_CUDASIM": "0"})
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]


GPU_TO_ORT = r"""
import numpy as np
import onnxruntime as ort
from numba import cuda
from edgert.kernels import Preprocessor
from edgert.kernels.cuda import CudaPreprocessor
from edgert.runtime.deviceio import device_array
from edgert.runtime.engine import Engine
from edgert.runtime.manifest import load_manifest
from edgert.runtime.zoo import ZOO

m = load_manifest(ZOO / "pilotnet")
eng = Engine(m, providers=["CUDAExecutionProvider"])
assert eng.device == "cuda", eng.provider_note
io = eng.bind_device()
name = m.inputs[0].name
dst = device_array(io.inputs[name])  # the session's own bound input, wrapped without a copy
assert dst is not None, "numba.cuda could not wrap ONNX Runtime's device memory"
gpu = CudaPreprocessor(m.preprocess, (1080, 1920, 3))
gpu.warmup()
cpu = Preprocessor(m.preprocess, (1080, 1920, 3))
ref = ort.InferenceSession(m.read_verified(), providers=["CPUExecutionProvider"])
x = np.empty(cpu.out_shape, cpu.out_dtype)
rng = np.random.default_rng(7)
for _ in range(3):
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    gpu(cuda.to_device(frame), dst)  # camera bytes -> model input, never through the host
    cuda.synchronize()
    got = io.run()[m.outputs[0].name].copy()
    cpu(frame, x)
    want = ref.run(None, {name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
print("OK")
"""


@pytest.mark.gpu
def test_cuda_kernel_writes_the_sessions_device_input_on_gpu() -> None:
    """Frame on the device -> CUDA kernel -> the CUDA session's bound input -> steer, equal to the CPU path."""
    reason = nvidia_driver()
    if reason is not None:
        pytest.skip(f"no NVIDIA GPU: {reason}")
    res = subprocess.run([sys.executable, "-c", GPU_TO_ORT], cwd=ROOT, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]
