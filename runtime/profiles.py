"""Device profiles: what a class of in-car computer wants from ONNX Runtime.

A profile names the providers to try, in order, and their options: TensorRT engine and
timing caches on disk (so a restart never rebuilds engines), fp16 where the hardware is
built for it, CUDA graphs where enabled. `auto` tries every accelerator ONNX Runtime
offers (runtime/providers.py), whatever the vendor; `infer.providers` in the config, when
not ["auto"], overrides a profile's order but keeps its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("auto", "cpu", "x86-nvidia", "jetson-orin")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    providers: tuple[str, ...]
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)


def _nvidia(name: str, cache: Path | None, fp16: bool, cuda_graph: bool) -> DeviceProfile:
    trt = {"trt_fp16_enable": "1" if fp16 else "0"}
    if cache is not None:  # cache off: TensorRT builds its engines at every start, and writes nothing
        trt.update({"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(cache / "trt"),
                    "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(cache / "trt")})
    trt["trt_cuda_graph_enable"] = "1" if cuda_graph else "0"
    cuda = {"enable_cuda_graph": "1" if cuda_graph else "0"}
    return DeviceProfile(name, ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                         {"TensorrtExecutionProvider": trt, "CUDAExecutionProvider": cuda})


def resolve(name: str, cache_dir: Path | None, cuda_graph: bool = False) -> DeviceProfile:
    """The profile `name` with its caches under `cache_dir` (None: cache off, no engine or timing cache).

    `auto` keeps the whole vendor-neutral preference (providers.PREFERENCE: TensorRT, CUDA,
    MIGraphX, ROCm, OpenVINO, ...), with the NVIDIA options ready in case one is present.
    """
    if name == "auto":
        nv = _nvidia("auto", cache_dir, fp16=False, cuda_graph=cuda_graph)
        return DeviceProfile("auto", ("auto",), nv.provider_options)
    if name == "cpu":
        return DeviceProfile("cpu", ("CPUExecutionProvider",))
    if name == "x86-nvidia":
        return _nvidia(name, cache_dir, fp16=False, cuda_graph=cuda_graph)
    if name == "jetson-orin":  # Orin's tensor cores are built for fp16; memory is shared with the CPU
        return _nvidia(name, cache_dir, fp16=True, cuda_graph=cuda_graph)
    raise ValueError(f"infer.profile: {name!r} is not one of {', '.join(map(repr, PROFILES))}")
