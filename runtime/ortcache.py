"""On-disk cache of ONNX Runtime's optimised model, so a restarted stage skips graph optimisation.

The first session of a model saves the graph ONNX Runtime optimised; later sessions load
that file with optimisation off. The file is specific to this machine, this onnxruntime
version and these providers (ORT may fuse nodes for the hardware it saw), so its name
carries all three and the model's sha256. Its own sha256 is written beside it when it is
created and checked before every load: a corrupt or replaced cache file is deleted and
rebuilt, never loaded, so the cache cannot weaken the manifest's integrity check.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, model_sha256: str, providers: list[str]) -> Path:
    tag = "+".join(p.removesuffix("ExecutionProvider").lower() for p in providers)
    return cache_dir / f"{model_sha256[:24]}-ort{ort.__version__}-{tag}.onnx"


def load(path: Path) -> bytes | None:
    """The cached optimised model, if present and intact; None means: build it now."""
    side = path.with_suffix(".sha256")
    if not path.is_file() or not side.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != side.read_text().strip():
        log.warning("optimised-model cache %s is corrupt (sha256 mismatch): rebuilding it", path)
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    return data


def seal(path: Path) -> None:
    """Record the sha256 of a cache file ONNX Runtime has just written."""
    if path.is_file():
        path.with_suffix(".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
