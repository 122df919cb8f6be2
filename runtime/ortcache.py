"""On-disk cache of ONNX Runtime's optimised model, so a restarted stage skips graph optimisation.

The first session of a model saves the graph ONNX Runtime optimised; later sessions load
that file with optimisation off. The file is specific to this machine, this onnxruntime
version and these providers (ORT may fuse nodes for the hardware it saw), so its name
carries all three and the model's sha256.

The cached graph is what runs, so it must be exactly what this runtime built from the
verified model: it is sealed with the user's cache key (runtime/cacheseal.py, HMAC-SHA256
over its name and bytes), and loaded only if the seal verifies, from the same bytes that were
checked. A replaced, corrupt or foreign graph (another model's, sealed under its own name) is
deleted and rebuilt from the model, never loaded. ONNX Runtime writes the new graph into a
private temporary folder, so the bytes sealed are the ones it wrote.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort

from edgert.runtime import cacheseal

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, model_sha256: str, providers: list[str]) -> Path:
    tag = "+".join(p.removesuffix("ExecutionProvider").lower() for p in providers)
    return cache_dir / f"{model_sha256[:24]}-ort{ort.__version__}-{tag}.onnx"


def load(path: Path, key: bytes) -> bytes | None:
    """The cached optimised model, if present and its seal verifies; None means: build it now."""
    path.with_suffix(".sha256").unlink(missing_ok=True)  # the unauthenticated checksum of earlier versions
    try:
        return cacheseal.read_sealed(path, key, path.name)
    except cacheseal.SealBroken:
        log.warning("optimised-model cache %s is not sealed by this user's key (replaced, corrupt or another "
                    "model's): deleted, not loaded; rebuilding it from the verified model", path)
        return None


@contextlib.contextmanager
def saving(path: Path | None) -> Iterator[Path | None]:
    """Where ONNX Runtime should save the optimised graph destined for `path`: a file in a private
    temporary folder (None when there is no cache), removed afterwards."""
    if path is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edgert-ort-") as tmp:  # 0700: only this user writes there
        yield Path(tmp) / path.name


def store(saved: Path, path: Path, key: bytes) -> None:
    """Seal the graph ONNX Runtime wrote at `saved` and put it at `path`. The cache only saves time:
    a graph that cannot be stored (a full disk, something planted at its name) is said, not fatal."""
    if saved.is_file():
        try:
            cacheseal.write_sealed(path, saved.read_bytes(), key, path.name)
        except OSError as e:
            log.warning("optimised-model cache %s not stored (%s): the next start optimises the model again; "
                        "check the folder (infer.cache_dir)", path, e)
