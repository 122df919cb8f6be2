"""The pipeline's stages, by name. Imported lazily so a stage process loads only what it needs
(the capture process never imports onnxruntime, the infer process never builds a road)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgert.runtime.sources import CAPTURE_SOURCES
from edgert.runtime.stage import Stage

if TYPE_CHECKING:
    from edgert.runtime.config import PipelineConfig

_CLASSES = {
    "capture": "edgert.runtime.stages.capture:CaptureStage",
    "preprocess": "edgert.runtime.stages.preprocess:PreprocessStage",
    "infer": "edgert.runtime.stages.infer:InferStage",
    "control": "edgert.runtime.stages.control:ControlStage",
    "recorder": "edgert.runtime.stages.recorder:RecorderStage",  # optional: runs only with record.enabled
}
STAGE_NAMES = ("capture", "preprocess", "infer", "control")  # the stages every pipeline runs


def stage_names(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages a pipeline with this config runs: the four, the recorder when enabled, then the
    user's [[nodes]] (runtime/node.py), which the supervisor starts by their entry points."""
    return STAGE_NAMES + (("recorder",) if cfg.record.enabled else ()) + tuple(n.name for n in cfg.nodes)


def stage_class(name: str, source: str = "sim") -> type[Stage]:
    """The class of stage `name`; for "capture", the class of camera source `source`."""
    try:
        target = CAPTURE_SOURCES[source] if name == "capture" else _CLASSES[name]
    except KeyError:
        if name == "capture":
            raise KeyError(f"unknown camera source {source!r}; sources are: {', '.join(CAPTURE_SOURCES)}") from None
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(_CLASSES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
