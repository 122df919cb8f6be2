"""ONNX Runtime engine: a verified model, the best provider present, preallocated I/O.

Inputs are bound where the preprocessing stage wrote them (a frame-pool slot), outputs
land in buffers allocated once, so a frame costs one `run_with_iobinding` and no copies.
With a cache directory, the optimised graph is kept on disk (runtime/ortcache.py) and
TensorRT keeps its engines there (runtime/profiles.py), so a restart is warm. Both are sealed
with the user's cache key and used only when the seal verifies (runtime/cacheseal.py,
runtime/trtcache.py): a cache can make a start faster, never change what the model computes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgert.runtime import cacheseal, ortcache
from edgert.runtime.deviceio import DeviceIO, cuda_graph_enabled, session_device, without_graph
from edgert.runtime.manifest import ModelError, ModelManifest
from edgert.runtime.providers import describe, plan
from edgert.runtime.trtcache import TrtCaches, wants_caches

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int32)": "int32"}


def session_options(intra_op_threads: int, optimize: bool = True, save_to: Path | None = None) -> ort.SessionOptions:
    """The options every edgert session uses (benchmarks use them too, so bare and engine compare fairly)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    # Spinning worker threads would steal the cores the other stages run on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
        so.log_severity_level = 3  # ORT warns the saved graph is hardware-specific: it is a per-machine cache
    return so


def ort_reason(e: Exception) -> str:
    """onnxruntime's message without its C++ source location and function signature."""
    msg = str(e)
    msg = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", msg)
    msg = re.sub(r"^/onnxruntime_src/\S+ [^(]*\([^)]*\)\s*", "", msg)
    return msg.strip()


class Engine:
    """One verified model in one ONNX Runtime session."""

    def __init__(self, manifest: ModelManifest, providers: list[str] | tuple[str, ...] = ("auto",),
                 intra_op_threads: int = 1, provider_options: dict[str, dict[str, str]] | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.manifest = manifest
        data = manifest.read_verified()
        self.plan = plan(providers)
        options = dict(provider_options or {})
        trt = options.get("TensorrtExecutionProvider", {})
        use_trt_caches = "TensorrtExecutionProvider" in self.plan.chosen and wants_caches(trt)
        key = b""
        if cache_dir is not None or use_trt_caches:
            try:
                key = cacheseal.load_key()
            except cacheseal.CacheKeyError as e:  # the caches only save time: run from the verified model
                log.warning("%s. Running %s without its caches until that is fixed", e, manifest.name)
                cache_dir, use_trt_caches = None, False
        self.trt_caches: TrtCaches | None = None
        if use_trt_caches:  # TensorRT reads a private copy of the caches whose seal verifies
            self.trt_caches = TrtCaches(trt, manifest.sha256, key)
            options["TensorrtExecutionProvider"] = self.trt_caches.options
        self.cache_hit = False
        cache = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache = ortcache.cache_path(Path(cache_dir), manifest.sha256, self.plan.chosen)
            cached = ortcache.load(cache, key)
            if cached is not None:
                try:
                    self.session, options = self._open(cached, lambda: session_options(
                        intra_op_threads, optimize=False), options)
                    self.cache_hit = True
                except Exception as e:  # a cache ORT cannot read is rebuilt, not fatal
                    log.warning("optimised-model cache %s unusable (%s): rebuilding it", cache, ort_reason(e))
        if not self.cache_hit:
            with ortcache.saving(cache) as save_to:  # ORT writes the graph privately; it is sealed from there
                try:
                    self.session, options = self._open(data, lambda: session_options(
                        intra_op_threads, save_to=save_to), options)
                except Exception as e:  # onnxruntime raises its own exception types without a common base
                    raise ModelError(f"{manifest.path}: onnxruntime {ort.__version__} cannot load it with "
                                     f"{', '.join(self.plan.chosen)}: {ort_reason(e)}. Check the model's opset and "
                                     "operators against this onnxruntime, or choose another provider") from None
                if cache is not None and save_to is not None:
                    ortcache.store(save_to, cache, key)
        self.providers = self.session.get_providers()
        self.provider_note = describe(self.plan, self.providers)
        log.info("model %s %s: %s%s", manifest.name, manifest.version, self.provider_note,
                 "; optimised graph loaded from cache" if self.cache_hit else "")
        self._check_io()
        self.outputs = {o.name: np.zeros(o.shape, dtype=o.dtype) for o in manifest.outputs}
        self.device = session_device(self.providers)  # "cuda": bind_device() keeps tensors on the GPU
        self.cuda_graph = cuda_graph_enabled(self.providers, options)
        self.seal_caches()

    def seal_caches(self) -> None:
        """Seal the TensorRT engines and timing caches built so far into the shared cache (after
        the session is made and again after warm-up, when engines for new shapes are built)."""
        if self.trt_caches is not None:
            self.trt_caches.publish()

    def _open(self, model: bytes | str, make_options, options: dict[str, dict[str, str]],  # type: ignore[no-untyped-def]
              ) -> tuple[ort.InferenceSession, dict[str, dict[str, str]]]:
        """A session on the planned providers; without a CUDA graph when the model cannot have one.

        A graph needs every node on the GPU provider; a model with nodes left on the CPU (e.g. an
        INT8 QDQ graph whose quantised operators CUDA lacks) is refused by ONNX Runtime. Such a
        model still runs, without the graph, and the log says why."""
        def providers(opts: dict[str, dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
            return [(p, opts.get(p, {})) for p in self.plan.chosen]
        try:
            return ort.InferenceSession(model, sess_options=make_options(), providers=providers(options)), options
        except Exception as e:
            plain = without_graph(options)
            if "graph capture" not in ort_reason(e) or plain == options:
                raise
            log.warning("model %s: CUDA graph requested but not possible (%s); running without a graph",
                        self.manifest.name, ort_reason(e))
            return ort.InferenceSession(model, sess_options=make_options(), providers=providers(plain)), plain

    def _check_io(self) -> None:
        m = self.manifest
        for kind, declared, actual in (("input", m.inputs, self.session.get_inputs()),
                                       ("output", m.outputs, self.session.get_outputs())):
            names = [a.name for a in actual]
            if [d.name for d in declared] != names:
                raise ModelError(f"{m.path}: manifest declares {kind}s {[d.name for d in declared]}, "
                                 f"the graph has {names}; fix the manifest")
            for d, a in zip(declared, actual):
                dtype = _ORT_TYPES.get(a.type, a.type)
                if dtype != d.dtype:
                    raise ModelError(f"{m.path}: {kind} {d.name!r} is {dtype} in the graph, {d.dtype} in the manifest")
                if len(a.shape) != len(d.shape) or any(
                        isinstance(g, int) and g != s for g, s in zip(a.shape, d.shape)):
                    raise ModelError(f"{m.path}: {kind} {d.name!r} has shape {a.shape} in the graph, "
                                     f"{list(d.shape)} in the manifest")

    def bind(self, inputs: dict[str, np.ndarray]) -> ort.IOBinding:
        """An I/O binding over the callers' input buffers and the engine's output buffers.

        Make one per input buffer at start (e.g. per frame-pool slot) and reuse it.
        """
        binding = self.session.io_binding()
        for spec in self.manifest.inputs:
            arr = inputs.get(spec.name)
            if arr is None:
                raise ModelError(f"input {spec.name!r} not given; the model's inputs are "
                                 f"{[i.name for i in self.manifest.inputs]}")
            if arr.shape != spec.shape or arr.dtype != np.dtype(spec.dtype) or not arr.flags.c_contiguous:
                raise ModelError(f"input {spec.name!r}: expected a C-contiguous {spec.dtype} array of shape "
                                 f"{spec.shape}, got {arr.dtype} {arr.shape} (contiguous={arr.flags.c_contiguous})")
            binding.bind_input(spec.name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        for name, out in self.outputs.items():
            binding.bind_output(name, "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        return binding

    def bind_device(self) -> DeviceIO:
        """Inputs and outputs as OrtValues on the session's device (CUDA graphs when enabled).

        On a GPU this is the binding to use: `load()` a host tensor (or write the device input
        with a CUDA kernel), then `run()`. On the CPU, `bind()` over the caller's buffers copies less.
        """
        return DeviceIO(self.session, list(self.manifest.inputs), self.outputs, self.device,
                        cuda_graph=self.cuda_graph)

    def run(self, binding: ort.IOBinding) -> dict[str, np.ndarray]:
        """Run on the bound buffers; results are in `self.outputs` (overwritten next run)."""
        self.session.run_with_iobinding(binding)
        return self.outputs

    def warmup(self, runs: int) -> None:
        """Run on zeros so allocation and kernel selection happen before the first frame."""
        zeros = {i.name: np.zeros(i.shape, dtype=i.dtype) for i in self.manifest.inputs}
        binding = self.bind(zeros)
        for _ in range(runs):
            self.run(binding)
        self.seal_caches()
