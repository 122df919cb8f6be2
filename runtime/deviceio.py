"""Inputs and outputs that live on the session's device, with optional CUDA graph replay.

On a GPU, binding host memory makes ONNX Runtime copy every input to the device and every
output back inside each run, and rules out CUDA graphs (a captured graph replays fixed
device addresses). Here inputs and outputs are OrtValues allocated once on the device the
session runs on; a frame costs one host-to-device copy into the bound input (the floor for
a tensor made on the host), one run (a graph replay when enabled) and one small
device-to-host copy of the outputs into the engine's preallocated host buffers.

A CUDA preprocessing kernel can write straight into `device_array(name)` instead, which then
skips the host-to-device copy too. The same code runs with device "cpu" (what the tests on
machines without a GPU exercise), where the copies are plain memcpys.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnxruntime as ort

from edgert.runtime.manifest import ModelError

log = logging.getLogger(__name__)

# Providers whose memory is CUDA device memory: their inputs and outputs are bound there.
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def session_device(providers: list[str]) -> str:
    """Where a session's tensors should live: "cuda" when its first provider runs on an NVIDIA GPU."""
    return "cuda" if providers and providers[0] in CUDA_PROVIDERS else "cpu"


# The provider option that asks each NVIDIA provider for CUDA graph capture.
GRAPH_OPTION = {"CUDAExecutionProvider": "enable_cuda_graph", "TensorrtExecutionProvider": "trt_cuda_graph_enable"}


def cuda_graph_enabled(providers: list[str], options: dict[str, dict[str, str]]) -> bool:
    """True when the provider that runs the session was asked to capture a CUDA graph."""
    if not providers:
        return False
    opts = options.get(providers[0], {})
    return providers[0] in GRAPH_OPTION and str(opts.get(GRAPH_OPTION[providers[0]], "0")) == "1"


def without_graph(options: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The same provider options with CUDA graph capture turned off."""
    return {p: {k: v for k, v in o.items() if k != GRAPH_OPTION.get(p)} for p, o in options.items()}


class DeviceIO:
    """One I/O binding over OrtValues on `device`, reused for every frame."""

    def __init__(self, session: ort.InferenceSession, inputs: list[Any], outputs: dict[str, np.ndarray],
                 device: str, device_id: int = 0, cuda_graph: bool = False) -> None:
        self.session, self.device, self.device_id = session, device, device_id
        self.host_outputs = outputs
        self.inputs = {s.name: ort.OrtValue.ortvalue_from_shape_and_type(list(s.shape), np.dtype(s.dtype), device,
                                                                         device_id) for s in inputs}
        self.outputs = {name: ort.OrtValue.ortvalue_from_shape_and_type(list(h.shape), h.dtype, device, device_id)
                        for name, h in outputs.items()}
        self.binding = session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)
        self.run_options = ort.RunOptions()
        if cuda_graph:  # the first run captures, later runs replay; addresses above never change
            self.run_options.add_run_config_entry("gpu_graph_id", "1")
        self._views = {name: _host_view(v) for name, v in self.outputs.items()} if device == "cpu" else {}
        self._device_outputs = ({name: device_array(v) for name, v in self.outputs.items()}
                                if device == "cuda" else {})

    def load(self, name: str, host: np.ndarray) -> None:
        """Copy a host tensor (e.g. a frame-pool slot) into the bound device input."""
        dst = self.inputs.get(name)
        if dst is None:
            raise ModelError(f"input {name!r} not bound; the model's inputs are {list(self.inputs)}")
        if host.shape != tuple(dst.shape()) or host.dtype != _dtype(dst):
            raise ModelError(f"input {name!r}: expected {_dtype(dst)} {tuple(dst.shape())}, got {host.dtype} "
                             f"{host.shape}")
        dst.update_inplace(host)

    def run(self) -> dict[str, np.ndarray]:
        """Run on the bound device tensors; outputs are copied into the engine's host buffers."""
        self.session.run_with_iobinding(self.binding, self.run_options)
        for name, host in self.host_outputs.items():
            if self.device == "cpu":
                np.copyto(host, self._views[name])
            elif name in self._device_outputs and self._device_outputs[name] is not None:
                self._device_outputs[name].copy_to_host(host)  # into the preallocated buffer
            else:  # numba.cuda absent: OrtValue.numpy() allocates a small host array
                np.copyto(host, self.outputs[name].numpy())
        return self.host_outputs


def _dtype(value: ort.OrtValue) -> np.dtype:
    names = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int32)": np.int32, "tensor(int64)": np.int64}
    return np.dtype(names[value.data_type()])


def _host_view(value: ort.OrtValue) -> np.ndarray:
    """A NumPy view of a CPU OrtValue's memory (no copy)."""
    return value.numpy()


def device_array(value: ort.OrtValue) -> Any:
    """A numba.cuda device array over an OrtValue's CUDA memory (no copy), for CUDA kernels and
    allocation-free device-to-host copies; None when numba.cuda is not usable here."""
    try:
        from numba import cuda

        if not cuda.is_available():
            return None
        desc = {"shape": tuple(value.shape()), "typestr": _dtype(value).str, "data": (value.data_ptr(), False),
                "version": 3, "strides": None}
        return cuda.from_cuda_array_interface(desc, owner=value, sync=False)
    except Exception as e:  # numba-cuda missing or a driver mismatch: fall back to OrtValue.numpy()
        log.info("numba.cuda cannot wrap ONNX Runtime's device memory (%s); outputs are read with a copy", e)
        return None
