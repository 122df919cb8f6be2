"""TensorRT's engine and timing caches, sealed like the optimised graph (runtime/cacheseal.py).

ONNX Runtime's TensorRT provider reads and writes these files itself, by path, and a TensorRT
engine is compiled GPU code: a swapped engine computes whatever its author wants, under the
signed model's name. So the provider never sees the shared cache folder. At start the files
whose seal verifies are copied into a private temporary folder (0700, this user's only) and
the provider's `trt_engine_cache_path` / `trt_timing_cache_path` point there; files whose
seal fails are deleted. After the session is built and warmed up, what the provider wrote
there that is new is sealed and copied back (`publish`). The shared folder is per model
(`<cache>/trt/<model sha256[:24]>/`): TensorRT names engines by the graph's structure, not its
weights, so a re-trained model with the same layers would otherwise pick up the old engine.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import weakref
from pathlib import Path

from edgert.runtime import cacheseal

log = logging.getLogger(__name__)

PATH_OPTIONS = ("trt_engine_cache_path", "trt_timing_cache_path")
ENABLE_OPTIONS = ("trt_engine_cache_enable", "trt_timing_cache_enable")


def wants_caches(options: dict[str, str]) -> bool:
    """True if these TensorRT provider options turn an engine or timing cache on."""
    return any(options.get(k) == "1" for k in ENABLE_OPTIONS)


class TrtCaches:
    """A private, verified copy of one model's TensorRT caches for one session."""

    def __init__(self, options: dict[str, str], model_sha256: str, key: bytes) -> None:
        base = next((options[k] for k in PATH_OPTIONS if options.get(k)), None)
        if base is None:
            raise ValueError("TensorRT caches are on but no trt_engine_cache_path / trt_timing_cache_path is set")
        self.key, self.model = key, model_sha256[:24]
        self.shared = Path(base) / self.model
        self.shared.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.private = Path(tempfile.mkdtemp(prefix="edgert-trt-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.private, True)
        self.staged: dict[str, str] = {}  # file name -> sha256 of what the provider was given
        for f in sorted(self.shared.iterdir()):
            if f.name.endswith(cacheseal.SEAL_SUFFIX) or f.name.startswith(".") or not f.is_file():
                continue
            try:
                data = cacheseal.read_sealed(f, key, self._name(f.name))
            except cacheseal.SealBroken:
                log.warning("TensorRT cache %s is not sealed by this user's key (replaced, corrupt or another "
                            "model's): deleted, not used; TensorRT rebuilds it", f)
                continue
            if data is not None:
                (self.private / f.name).write_bytes(data)
                self.staged[f.name] = hashlib.sha256(data).hexdigest()
        self.options = {**options, **{k: str(self.private) for k in PATH_OPTIONS if k in options}}

    def _name(self, file: str) -> str:
        return f"trt/{self.model}/{file}"  # sealed with the model: a file moved to another model's folder fails

    def publish(self) -> list[str]:
        """Seal what TensorRT wrote since the last call and copy it to the shared cache; the names."""
        done = []
        for f in sorted(self.private.iterdir()):
            if not f.is_file() or f.is_symlink():
                continue
            data = f.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if self.staged.get(f.name) != digest:
                cacheseal.write_sealed(self.shared / f.name, data, self.key, self._name(f.name))
                self.staged[f.name] = digest
                done.append(f.name)
        if done:
            log.info("TensorRT cache: sealed %s into %s", ", ".join(done), self.shared)
        return done

    def close(self) -> None:
        """Remove the private copy (also done when the object goes)."""
        self._cleanup()
