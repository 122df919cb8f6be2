"""Execution-provider policy: the best accelerator present, else CPU, and always say why.

`onnxruntime.get_available_providers()` lists what the *build* contains, not what the
machine can run: onnxruntime-gpu lists CUDA and TensorRT on a machine without a GPU.
So each candidate is also checked against the machine (an NVIDIA driver for CUDA and
TensorRT) before a session is tried, and the session's real providers are checked
after, so a provider that fails to initialise falls back with a logged reason.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

# Vendors differ by market and supply can be cut off: no single vendor is assumed.
PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "MIGraphXExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "QNNExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
_NVIDIA = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
_TRT_MAJOR = 10  # the TensorRT major version onnxruntime-gpu 1.2x-1.3x is built against


@functools.cache
def nvidia_driver() -> str | None:
    """None if an NVIDIA driver is loadable, else the reason it is not."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return f"no NVIDIA driver ({e})"
    return None


@functools.cache
def tensorrt_libraries() -> str | None:
    """None if TensorRT's runtime (libnvinfer) is loadable, else the reason it is not.

    onnxruntime-gpu lists the TensorRT provider whether or not TensorRT is installed; without it
    every session would first fail to create the provider (a long C++ error) and then fall back.
    TensorRT's pip wheels keep the library in the `tensorrt_libs` package, which is tried too."""
    try:
        ctypes.CDLL(f"libnvinfer.so.{_TRT_MAJOR}")
        return None
    except OSError as e:
        first = e
    try:
        import tensorrt_libs  # type: ignore[import-not-found]  # pip install tensorrt-cu13

        ctypes.CDLL(str(Path(tensorrt_libs.__file__).parent / f"libnvinfer.so.{_TRT_MAJOR}"))
        return None
    except (ImportError, OSError):
        pass
    return f"TensorRT {_TRT_MAJOR} not installed ({first}); install it (e.g. pip install tensorrt-cu13) to use it"


@functools.cache
def load_cuda_libraries() -> None:
    """Load CUDA and cuDNN from NVIDIA's pip packages when they are installed there.

    onnxruntime-gpu's CUDA provider needs libcudart, libcublas and libcudnn of its CUDA major
    version; `pip install onnxruntime-gpu[cuda,cudnn]` (or a matching PyTorch) puts them in
    site-packages, where the dynamic loader does not look. `preload_dlls` loads them first, so
    no LD_LIBRARY_PATH is needed; a machine with the libraries installed system-wide is unaffected.
    """
    try:
        ort.preload_dlls(msvc=False)
    except Exception as e:  # an older onnxruntime, or a broken package: the provider check reports it
        log.info("onnxruntime.preload_dlls failed (%s); relying on the system's library path", e)


@dataclass(frozen=True)
class ProviderPlan:
    wanted: list[str]  # the requested order, "auto" expanded
    chosen: list[str]  # what can be tried on this build and machine, CPU last
    skipped: dict[str, str]  # provider -> why it is not tried


def plan(requested: list[str] | tuple[str, ...]) -> ProviderPlan:
    """Ordered providers to try, and for every provider left out, why."""
    wanted: list[str] = []
    for name in requested:
        for p in (PREFERENCE if name == "auto" else (name,)):
            if p not in wanted:
                wanted.append(p)
    built = set(ort.get_available_providers())
    if built & _NVIDIA and nvidia_driver() is None:
        load_cuda_libraries()
    chosen, skipped = [], {}
    for p in wanted:
        if p not in built:
            skipped[p] = f"not in this onnxruntime build ({ort.__version__}, {ort.get_device()})"
        elif p in _NVIDIA and (why := nvidia_driver()):  # noqa: SIM114 (one branch per reason)
            skipped[p] = why
        elif p == "TensorrtExecutionProvider" and (why := tensorrt_libraries()):
            skipped[p] = why
        else:
            chosen.append(p)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # the CPU path must always work
    return ProviderPlan(wanted, chosen, skipped)


def describe(p: ProviderPlan, used: list[str]) -> str:
    """One log line: which provider runs the model and why the ones asked for before it do not."""
    why = dict(p.skipped)
    for name in p.chosen:
        if name not in used:
            why.setdefault(name, "failed to initialise (see onnxruntime's log above)")
    order = p.wanted if used[0] in p.wanted else p.wanted + [used[0]]
    before = order[: order.index(used[0])]
    grouped: dict[str, list[str]] = {}
    for name in before:
        if name in why:
            grouped.setdefault(why[name], []).append(name)
    reasons = "; ".join(f"{', '.join(names)} skipped: {reason}" for reason, names in grouped.items())
    return f"using {used[0]}" + (f" ({reasons})" if reasons else " (the first provider asked for)")
