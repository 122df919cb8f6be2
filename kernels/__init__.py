"""Preprocessing kernels: camera frame -> model input tensor, fused, compiled with Numba.

Knows nothing about ZeroMQ or the pipeline: a spec, a frame, an output buffer.

`PreprocessSpec` is imported eagerly; `Preprocessor` (Numba) and `reference_preprocess`
(OpenCV) load on first use, so reading a model manifest (`from edgert.kernels import
PreprocessSpec`, e.g. in the CLI) does not pay for importing Numba and OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgert.kernels.spec import PreprocessSpec

if TYPE_CHECKING:
    from edgert.kernels.preprocess import Preprocessor
    from edgert.kernels.reference import reference_preprocess

__all__ = ["PreprocessSpec", "Preprocessor", "reference_preprocess"]


def __getattr__(name: str) -> Any:
    if name == "Preprocessor":
        from edgert.kernels.preprocess import Preprocessor
        return Preprocessor
    if name == "reference_preprocess":
        from edgert.kernels.reference import reference_preprocess
        return reference_preprocess
    raise AttributeError(f"module 'edgert.kernels' has no attribute {name!r}")
