"""A model's manifest: what the model expects, how to feed it, and proof it is the right file.

`models/<name>/manifest.toml` declares the inputs and outputs, the preprocessing spec
(shared with kernels/), the output decoder, the sha256 of model.onnx, the markets the
variant is approved for and, optionally, its operating domain (`[odd]`: the conditions it was
validated in; outside them control hands over). `verify()` hashes the file before any session
is created.

A pipeline run pins the manifest too: the supervisor approves it once at start and hands its
sha256 to every stage (`pin`), and a stage that finds other bytes refuses to start
(ManifestChanged), so an edit mid-run never reaches a restarted stage, control's decoder included.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert.kernels import PreprocessSpec
from edgert.runtime.errors import EdgertError
from edgert.runtime.wire import MAX_VALUES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DTYPES = ("float32", "float16", "uint8", "int32")


class ModelError(EdgertError, ValueError):
    """A model or its manifest is missing, corrupt or does not match what was declared."""


class ManifestChanged(ModelError):
    """The manifest on disk is not the one the pipeline approved at start (its pinned sha256)."""


def check_pin(path: Path, data: bytes, pin: str) -> str:
    """The sha256 of the manifest bytes `data`; ManifestChanged unless it is `pin` ("" = no pin)."""
    digest = hashlib.sha256(data).hexdigest()
    if pin and digest != pin:
        raise ManifestChanged(f"{path} changed after the pipeline approved it: its sha256 is now {digest}, the run "
                              f"pinned {pin} at start. A stage of this run loads only the approved manifest, so it "
                              "refuses to start; restore the approved manifest, or restart the pipeline to have "
                              "the new one verified and approved")
    return digest


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Decoder:
    kind: str  # "steering": output[index] * scale is a steering angle in radians
    output: str
    index: int = 0
    scale: float = 1.0


@dataclass(frozen=True)
class ModelManifest:
    dir: Path
    name: str
    version: str
    file: str
    sha256: str
    markets: tuple[str, ...]
    license: str
    provenance: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: PreprocessSpec
    decoder: Decoder
    publisher: str = ""  # who signed it: models/publishers/<publisher>.pub (runtime/signing.py)
    # [odd] mean_level: the camera image's mean 8-bit level (lower, upper) the model was validated for;
    # preprocess flags frames outside it (runtime/camhealth.py) and control hands over. None = no check
    odd_mean_level: tuple[float, float] | None = None
    manifest_sha256: str = ""  # of the manifest.toml bytes this was parsed from (what a run pins)

    @property
    def path(self) -> Path:
        return self.dir / self.file

    def read_verified(self) -> bytes:
        """The model file's bytes, after checking them against the manifest's sha256.

        The same bytes are hashed and handed to ONNX Runtime, so the file cannot be
        swapped between the check and the load.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model file {self.path} is missing; restore it or fix 'model.file' in "
                             f"{self.dir / 'manifest.toml'}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ModelError(f"{self.path}: sha256 {digest[:16]}… does not match the manifest's "
                             f"{self.sha256[:16]}…; the file is corrupt or was replaced. Restore the "
                             "shipped file, or re-export it and update the manifest's sha256")
        return data


def _req(table: dict[str, Any], key: str, where: str, kind: type) -> Any:
    if key not in table:
        raise ModelError(f"{where}: missing key {key!r}")
    v = table[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise ModelError(f"{where}.{key}: expected {kind.__name__}, got {v!r}")
    return v


def _tensors(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ModelError(f"{where}: expected a non-empty array of tables [[{where}]]")
    out = []
    for i, t in enumerate(raw):
        w = f"{where}[{i}]"
        shape = _req(t, "shape", w, list)
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ModelError(f"{w}.shape: {shape} must be positive integers")
        dtype = _req(t, "dtype", w, str)
        if dtype not in DTYPES:
            raise ModelError(f"{w}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        out.append(TensorSpec(_req(t, "name", w, str), tuple(shape), dtype))
    return tuple(out)


ODD_KEYS = ("mean_level",)


def _odd_mean_level(raw: dict[str, Any]) -> tuple[float, float] | None:
    odd = raw.get("odd")
    if odd is None:
        return None
    if not isinstance(odd, dict):
        raise ModelError(f"odd: expected a table [odd], got {odd!r}")
    unknown = sorted(set(odd) - set(ODD_KEYS))
    if unknown:
        raise ModelError(f"odd: unknown key(s) {', '.join(unknown)}; known: {', '.join(ODD_KEYS)}")
    level = odd.get("mean_level")
    if level is None:
        return None
    if not (isinstance(level, list) and len(level) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in level)
            and 0 <= level[0] < level[1] <= 255):
        raise ModelError(f"odd.mean_level: {level!r} must be [lower, upper] mean 8-bit levels of the camera "
                         "image with 0 <= lower < upper <= 255, e.g. [100, 175]")
    return float(level[0]), float(level[1])


def load_manifest(model_dir: str | Path, data: bytes | None = None, pin: str = "") -> ModelManifest:
    """Parse and validate `model_dir/manifest.toml` (the model file itself is checked by read_verified).

    `data` is the manifest's bytes when the caller already read them (runtime/signing.py parses
    exactly the bytes whose signature it checked). `pin`: the sha256 those bytes must have (the
    run's approved manifest); other bytes raise ManifestChanged.
    """
    model_dir = Path(model_dir)
    path = model_dir / "manifest.toml"
    try:
        if data is None:
            data = path.read_bytes()
        digest = check_pin(path, data, pin)
        raw = tomllib.loads(data.decode())
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: not UTF-8 text ({e})") from None
    except FileNotFoundError:
        raise ModelError(f"no manifest at {path}; `edgert models add` writes one for an ONNX file") from None
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{path}: not valid TOML: {e}") from None
    model = _req(raw, "model", "manifest", dict)
    sha = _req(model, "sha256", "model", str).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelError(f"model.sha256: {sha!r} is not a hex sha256 digest")
    try:
        pre = PreprocessSpec.from_dict(_req(raw, "preprocess", "manifest", dict))
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    dec = _req(raw, "decoder", "manifest", dict)
    decoder = Decoder(kind=_req(dec, "kind", "decoder", str), output=_req(dec, "output", "decoder", str),
                      index=int(dec.get("index", 0)), scale=float(dec.get("scale", 1.0)))
    if decoder.kind != "steering":
        raise ModelError(f"decoder.kind: {decoder.kind!r} is not one of 'steering'")
    m = ModelManifest(
        dir=model_dir, name=_req(model, "name", "model", str), version=_req(model, "version", "model", str),
        file=model.get("file", "model.onnx"), sha256=sha, markets=tuple(model.get("markets", [])),
        license=model.get("license", ""), provenance=model.get("provenance", ""),
        inputs=_tensors(raw.get("inputs"), "inputs"), outputs=_tensors(raw.get("outputs"), "outputs"),
        preprocess=pre, decoder=decoder, publisher=model.get("publisher", ""), odd_mean_level=_odd_mean_level(raw),
        manifest_sha256=digest)
    if not isinstance(m.publisher, str):
        raise ModelError(f"model.publisher: expected a string (a key in models/publishers/), got {m.publisher!r}")
    outputs = {o.name: o for o in m.outputs}
    if decoder.output not in outputs:
        raise ModelError(f"decoder.output: {decoder.output!r} is not an output; outputs: {', '.join(outputs)}")
    size = math.prod(outputs[decoder.output].shape)
    if not 0 <= decoder.index < min(size, MAX_VALUES):
        raise ModelError(f"decoder.index: {decoder.index} outside output {decoder.output!r} "
                         f"({size} values; results carry at most {MAX_VALUES})")
    if not math.isfinite(decoder.scale) or decoder.scale == 0:
        raise ModelError(f"decoder.scale: {decoder.scale} must be finite and non-zero")
    return m
