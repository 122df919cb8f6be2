"""The pipeline's stages, by name. Imported lazily so a stage process loads only what it needs
(the capture process never imports onnxruntime, the infer process never builds a road)."""

from __future__ import annotations

import importlib

from runtime.stage import Stage

_CLASSES = {
    "capture": "runtime.stages.capture:CaptureStage",
    "preprocess": "runtime.stages.preprocess:PreprocessStage",
    "infer": "runtime.stages.infer:InferStage",
    "control": "runtime.stages.control:ControlStage",
}
STAGE_NAMES = tuple(_CLASSES)


def stage_class(name: str) -> type[Stage]:
    try:
        module, cls = _CLASSES[name].split(":")
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(_CLASSES)}") from None
    return getattr(importlib.import_module(module), cls)
