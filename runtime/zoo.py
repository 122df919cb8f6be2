"""The model zoos and one-shot inference of any ONNX file.

A model is named by its folder in a zoo. Two zoos are searched, in order: the bundled one
(`models/<name>/`, shipped in the package, never written) and the user zoo
(`$XDG_DATA_HOME/edgert/models`, or `--zoo DIR` / `infer.zoo`), which `edgert models add` writes.
A user model cannot take a bundled model's name: `add` refuses it, and one put there by hand is
listed as shadowed and never loaded, so a name always means the same bytes on every vehicle.

Zoo models are always loaded through `load_manifest` + `read_verified`, so their sha256 is
checked before a session exists. A bare `.onnx` file with no manifest gets a `GraphManifest`
derived from the graph itself: its sha256 is that of the bytes just read (it proves nothing
about provenance, only that the file did not change between reading and loading), and it
has no preprocessing or decoder, so the pipeline cannot be started on it by mistake.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgert.kernels import PreprocessSpec
from edgert.runtime import paths
from edgert.runtime.manifest import (
    DTYPES,
    Decoder,
    ModelError,
    ModelManifest,
    TensorSpec,
    load_manifest,
)

log = logging.getLogger(__name__)

ZOO = paths.bundled_zoo()  # the bundled zoo; the user zoo is `user_zoo()`
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# onnx TensorProto element types -> numpy dtype names (those the engine binds are DTYPES).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass(frozen=True)
class GraphManifest(ModelManifest):
    """A manifest derived from a bare ONNX graph: enough for the Engine, never for a pipeline."""

    preprocess: PreprocessSpec | None = None  # type: ignore[assignment]
    decoder: Decoder | None = None  # type: ignore[assignment]


@dataclass(frozen=True)
class GraphIO:
    """A graph's inputs and outputs as the ONNX file declares them (dims may be symbolic)."""

    inputs: list[tuple[str, str, list[int | str]]] = field(default_factory=list)
    outputs: list[tuple[str, str, list[int | str]]] = field(default_factory=list)


def user_zoo(zoo: str | Path | None = None) -> Path:
    """The user zoo: `zoo` when given (--zoo DIR), else `$XDG_DATA_HOME/edgert/models`."""
    return Path(zoo).expanduser() if zoo is not None else paths.user_zoo()


def _names_in(root: Path) -> list[str]:
    """Folders of one zoo that hold a manifest or a model file."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and ((d / "manifest.toml").is_file() or (d / "model.onnx").is_file()))


def zoo_models(zoo: str | Path | None = None) -> list[tuple[str, Path, str]]:
    """Every model folder of both zoos as (name, folder, "bundled" | "user"), bundled first."""
    user = user_zoo(zoo)
    if zoo is not None and not user.is_dir():
        raise ModelError(f"model zoo {user} does not exist; check --zoo, or `edgert models add --zoo {user}` "
                         "makes it")
    return [(n, ZOO / n, "bundled") for n in _names_in(ZOO)] + [(n, user / n, "user") for n in _names_in(user)]


def model_names(zoo: str | Path | None = None) -> list[str]:
    """The names a model can be loaded by (a shadowed user model's name is its bundled namesake's)."""
    return sorted({n for n, _, _ in zoo_models(zoo)})


def model_dir(name: str, zoo: str | Path | None = None) -> Path:
    """The folder of model `name`: the bundled zoo's if it has one, else the user zoo's."""
    for n, d, _ in zoo_models(zoo):
        if n == name:
            return d
    raise ModelError(f"no model {name!r} in the bundled zoo or {user_zoo(zoo)}; models: "
                     f"{', '.join(model_names(zoo)) or 'none'}")


def _load_onnx(path: Path, data: bytes | None = None):  # type: ignore[no-untyped-def]
    import onnx
    from google.protobuf.message import DecodeError

    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{path}: no such file; check the path") from None
        except IsADirectoryError:
            raise ModelError(f"{path} is a folder; give the .onnx file (or a zoo folder to `infer`)") from None
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not an ONNX file ({type(e).__name__}: {e}); export the model to ONNX "
                         "first (e.g. torch.onnx.export)") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX file (it parses as an empty model); export the model to ONNX first")
    return model


def graph_io(model: Any) -> GraphIO:
    """Inputs (without initializers) and outputs of an onnx ModelProto."""
    inits = {i.name for i in model.graph.initializer}

    def one(v: Any) -> tuple[str, str, list[int | str]]:
        t = v.type.tensor_type
        dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                 for d in t.shape.dim]
        return v.name, _ONNX_DTYPES.get(t.elem_type, f"onnx-type-{t.elem_type}"), dims

    return GraphIO([one(v) for v in model.graph.input if v.name not in inits],
                   [one(v) for v in model.graph.output])


def manifest_from_graph(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> GraphManifest:
    """A GraphManifest for a bare .onnx file; symbolic input dims are fixed from `input_shapes`.

    Output dims still symbolic after that are resolved by ONNX shape inference; if they cannot
    be, the file cannot run with preallocated outputs and the error says so.
    """
    import onnx

    path = Path(path)
    data = path.read_bytes() if path.is_file() else None
    model = _load_onnx(path, data)
    assert data is not None
    io = graph_io(model)
    input_shapes = input_shapes or {}
    inputs = []
    for name, dtype, dims in io.inputs:
        _engine_dtype(path, "input", name, dtype)
        given = input_shapes.get(name)
        if any(not isinstance(d, int) or d <= 0 for d in dims) and (given is None or len(given) != len(dims)):
            raise ModelError(f"{path}: input {name!r} has dynamic shape {dims}; give an array of rank "
                             f"{len(dims)} for it")
        # Static dims come from the graph, so a wrong-sized array is reported, not adopted.
        shape = tuple(int(d) if isinstance(d, int) and d > 0 else int(given[i]) for i, d in enumerate(dims))  # type: ignore[index]
        inputs.append(TensorSpec(name, shape, dtype))
    outputs = []
    out_dims = {n: d for n, _, d in io.outputs}
    if any(not isinstance(d, int) or d <= 0 for dims in out_dims.values() for d in dims):
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        byname = {t.name: t for t in inputs}
        for v in fixed.graph.input:
            if v.name in byname:
                for d, s in zip(v.type.tensor_type.shape.dim, byname[v.name].shape):
                    d.Clear()
                    d.dim_value = s
        try:
            inferred = graph_io(onnx.shape_inference.infer_shapes(fixed, strict_mode=False))
            out_dims.update({n: d for n, _, d in inferred.outputs})
        except Exception as e:  # noqa: BLE001 - inference is best effort; the check below names the output
            log.debug("shape inference failed for %s: %s", path, e)
    for name, dtype, _ in io.outputs:
        _engine_dtype(path, "output", name, dtype)
        dims = out_dims[name]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise ModelError(f"{path}: output {name!r} has shape {dims}, which depends on the data; the engine "
                             "preallocates outputs, so it needs static output shapes")
        outputs.append(TensorSpec(name, tuple(int(d) for d in dims), dtype))
    return GraphManifest(dir=path.parent, name=path.stem, version="unversioned", file=path.name,
                         sha256=hashlib.sha256(data).hexdigest(), markets=(), license="", provenance=str(path),
                         inputs=tuple(inputs), outputs=tuple(outputs))


def _engine_dtype(path: Path, kind: str, name: str, dtype: str) -> None:
    if dtype not in DTYPES:
        raise ModelError(f"{path}: {kind} {name!r} is {dtype}; the engine binds {', '.join(DTYPES)} only")


# --- checks ---------------------------------------------------------------------------------


def verify(name: str, zoo: str | Path | None = None) -> ModelManifest:
    """sha256, graph inputs/outputs against the manifest, a CPU session, one finite run on zeros.

    Raises ModelError naming what is wrong; returns the manifest when all is well.
    """
    from edgert.runtime.engine import Engine

    d = model_dir(name, zoo)
    try:
        m = load_manifest(d)
    except ModelError as e:
        text = (d / "manifest.toml").read_text() if (d / "manifest.toml").is_file() else ""
        if '"TODO' in text:
            raise ModelError(f"{e} (the manifest still has TODO values from `edgert models add`: "
                             "fill them in)") from None
        raise
    data = m.read_verified()
    io = graph_io(_load_onnx(m.path, data))
    for kind, declared, actual in (("input", m.inputs, io.inputs), ("output", m.outputs, io.outputs)):
        if [d.name for d in declared] != [a[0] for a in actual]:
            raise ModelError(f"{m.path}: manifest declares {kind}s {[d.name for d in declared]}, the graph has "
                             f"{[a[0] for a in actual]}; fix the manifest")
        for spec, (aname, adtype, adims) in zip(declared, actual):
            if adtype != spec.dtype:
                raise ModelError(f"{m.path}: {kind} {aname!r} is {adtype} in the graph, {spec.dtype} in the manifest")
            if len(adims) != len(spec.shape) or any(isinstance(g, int) and g > 0 and g != s
                                                    for g, s in zip(adims, spec.shape)):
                raise ModelError(f"{m.path}: {kind} {aname!r} has shape {adims} in the graph, {list(spec.shape)} "
                                 "in the manifest")
    eng = Engine(m, providers=["CPUExecutionProvider"])
    eng.warmup(1)
    bad = [k for k, v in eng.outputs.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ModelError(f"{m.path}: output(s) {bad} are NaN or Inf on an all-zeros input; the model is broken")
    return m


def describe_model(name: str, zoo: str | Path | None = None) -> str:
    """`edgert models info`: the manifest in words, and where the card is."""
    d = model_dir(name, zoo)
    m = load_manifest(d)
    size = m.path.stat().st_size if m.path.is_file() else None
    lines = [f"{m.name} {m.version}  ({d})",
             f"  file:       {m.file} " + (f"({size / 1e6:.2f} MB)" if size is not None else "(MISSING)"),
             f"  sha256:     {m.sha256}",
             f"  markets:    {', '.join(m.markets) or 'none (approved for no market)'}",
             f"  license:    {m.license or '-'}",
             f"  publisher:  {m.publisher or '- (unsigned: no pipeline loads it)'}",
             f"  provenance: {m.provenance or '-'}"]
    lines += [f"  input  {t.name}: {t.dtype} {list(t.shape)}" for t in m.inputs]
    lines += [f"  output {t.name}: {t.dtype} {list(t.shape)}" for t in m.outputs]
    p = m.preprocess
    lines.append(f"  preprocess: {p.src_format} -> {p.color} {p.layout} {p.dtype} {p.out_width}x{p.out_height}, "
                 f"roi {p.roi}, resize {p.resize}")
    lines.append(f"  decoder:    {m.decoder.kind} = {m.decoder.output}[{m.decoder.index}] * {m.decoder.scale}")
    card = d / "MODEL_CARD.md"
    lines.append(f"  card:       {card if card.is_file() else 'MISSING'}")
    return "\n".join(lines)


def list_models(zoo: str | Path | None = None) -> list[dict[str, str]]:
    """One row per model folder of both zoos; one whose manifest does not load, or a user model
    shadowed by a bundled one of the same name, is listed with the reason."""
    rows = []
    bundled = set(_names_in(ZOO))
    for name, d, where in zoo_models(zoo):
        row = {"name": name, "zoo": where, "dir": str(d)}
        if where == "user" and name in bundled:
            rows.append({**row, "version": "?", "input": "?", "markets": "?", "status":
                         f"shadowed: the bundled {name!r} is loaded by that name; rename the folder {d}"})
            continue
        try:
            m = load_manifest(d)
            rows.append({**row, "version": m.version, "input": ", ".join(f"{t.dtype}{list(t.shape)}" for t in m.inputs),
                         "markets": ",".join(m.markets) or "-", "status": "ok"})
        except ModelError as e:
            rows.append({**row, "version": "?", "input": "?", "markets": "?", "status": f"invalid: {e}"})
    return rows


# --- add ------------------------------------------------------------------------------------

_SKELETON = """# Manifest skeleton written by `edgert models add` from {src}.
# TODO: every value marked TODO must be filled in (preprocessing, decoder, markets, licence,
# provenance); load_manifest rejects this file until they are.
[model]
name = "{name}"
version = "0.0.0"  # TODO: the model's version
file = "model.onnx"
sha256 = "{sha}"
markets = []  # TODO: the markets this model is approved for (empty = none)
license = "TODO"
provenance = "TODO: who trained or exported it, from what; added from {src}"
{tensors}
# TODO: the preprocessing that turns a camera frame into the input above (see kernels/spec.py).
[preprocess]
src_format = "TODO"
out_width = {w}
out_height = {h}
resize = "TODO"
color = "TODO"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
layout = "{layout}"
dtype = "{dtype}"

# TODO: how the output becomes a command.
[decoder]
kind = "TODO"
output = "{out}"
index = 0
scale = 1.0

# Optional: the conditions the model was validated in. Outside them preprocess flags the frame and
# control hands over (LIGHT_OUTSIDE_ODD). mean_level: the camera image's mean 8-bit level.
# [odd]
# mean_level = [105, 165]
"""


def _tensor_toml(kind: str, name: str, dtype: str, dims: list[int | str]) -> str:
    todo = []
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        todo.append(f"dynamic dims {dims} in the graph: set the sizes the pipeline feeds")
    if dtype not in DTYPES:
        todo.append(f"{dtype} is not bindable by the engine ({', '.join(DTYPES)})")
    shape = ", ".join(str(d) if isinstance(d, int) and d > 0 else f'"TODO:{d}"' for d in dims)
    note = f"  # TODO: {'; '.join(todo)}" if todo else ""
    return f'\n[[{kind}]]\nname = "{name}"\nshape = [{shape}]{note}\ndtype = "{dtype}"\n'


def add_model(src: str | Path, name: str | None = None, zoo: str | Path | None = None) -> Path:
    """Copy an ONNX file into the user zoo as NAME/model.onnx and write a manifest skeleton beside it.
    The bundled zoo is never written; a name it already has is refused (it would never load)."""
    src = Path(src)
    data = src.read_bytes() if src.is_file() else None
    if data is None and not src.exists():
        raise ModelError(f"{src}: no such file; check the path")
    model = _load_onnx(src, data)
    assert data is not None
    name = name or src.stem
    if not _NAME.match(name):
        raise ModelError(f"model name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
                         "(pass --name to choose one)")
    if (ZOO / name).exists():
        raise ModelError(f"{name!r} is a bundled model's name, which always loads the bundled one; pass --name "
                         "to pick another name")
    dest = user_zoo(zoo) / name
    if dest.exists():
        raise ModelError(f"a model named {name!r} already exists at {dest}; pass --name to pick another name "
                         "or remove that folder first")
    if any(t.data_location == 1 for t in model.graph.initializer):  # TensorProto.EXTERNAL
        raise ModelError(f"{src}: its weights live in external data files, which the zoo does not copy; "
                         "re-save it as one file (onnx.save(model, path, save_as_external_data=False))")
    io = graph_io(model)
    if not io.inputs or not io.outputs:
        raise ModelError(f"{src}: the graph has no inputs or no outputs; nothing to run")
    first = io.inputs[0][2]
    nchw = len(first) == 4 and first[1] in (1, 3)
    h, w = (first[2], first[3]) if nchw else (first[1], first[2]) if len(first) == 4 else (0, 0)
    tensors = "".join(_tensor_toml("inputs", *t) for t in io.inputs) + \
        "".join(_tensor_toml("outputs", *t) for t in io.outputs)
    dtype = io.inputs[0][1] if io.inputs[0][1] in ("float32", "float16", "uint8") else "float32"
    text = _SKELETON.format(
        src=src.name, name=name, sha=hashlib.sha256(data).hexdigest(), tensors=tensors,
        w=w if isinstance(w, int) and w > 0 else '"TODO"', h=h if isinstance(h, int) and h > 0 else '"TODO"',
        layout="nchw" if nchw else "nhwc", dtype=dtype, out=io.outputs[0][0])
    dest.mkdir(parents=True)
    try:
        shutil.copyfile(src, dest / "model.onnx")
        (dest / "manifest.toml").write_text(text)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


# --- one-shot inference ---------------------------------------------------------------------


def read_inputs(path: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """Arrays from IN.npz (keys = input names) or IN.npy (a single-input model only)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"input file {path} does not exist")
    try:
        if path.suffix == ".npy":
            if len(names) != 1:
                raise ModelError(f"{path}: a .npy holds one array, the model has inputs {names}; "
                                 "use an .npz with one key per input name")
            return {names[0]: np.load(path, allow_pickle=False)}
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ModelError(f"{path}: cannot read it as NumPy data ({e})") from None
    raise ModelError(f"{path}: expected .npz (keys = input names) or .npy (single-input model)")


def _check_inputs(m: ModelManifest, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    want = [t.name for t in m.inputs]
    extra = sorted(set(arrays) - set(want))
    missing = [n for n in want if n not in arrays]
    if extra or missing:
        raise ModelError(f"input names do not match the model: missing {missing}, unknown {extra}; "
                         f"the model's inputs are {want}")
    out = {}
    for t in m.inputs:
        a = arrays[t.name]
        if a.dtype != np.dtype(t.dtype):
            raise ModelError(f"input {t.name!r} is {a.dtype}, the model wants {t.dtype}; convert it "
                             f"(e.g. arr.astype(np.{t.dtype}))")
        if a.shape != t.shape:
            raise ModelError(f"input {t.name!r} has shape {list(a.shape)}, the model wants {list(t.shape)}")
        out[t.name] = np.ascontiguousarray(a)
    return out


def _zoo_folder(p: Path) -> Path | None:
    """The zoo folder `p` names (the folder, or its model.onnx beside a manifest), else None."""
    if p.is_dir():
        return p
    if p.name == "model.onnx" and (p.parent / "manifest.toml").is_file():
        return p.parent  # a zoo model named by its file is still sha256-checked
    return None


def load_for_inference(model: str | Path, input_path: str | Path) -> tuple[ModelManifest, dict[str, np.ndarray]]:
    """The manifest and checked input arrays: a zoo folder (verified manifest) or a bare .onnx file.

    A bare file's symbolic dims are fixed from the arrays given, so the graph is read first
    for its input names, then the manifest is derived with the arrays' shapes.
    """
    p = Path(model)
    folder = _zoo_folder(p)
    if folder is not None:
        m: ModelManifest = load_manifest(folder)
        arrays = read_inputs(input_path, [t.name for t in m.inputs])
    else:
        if not p.exists():
            raise ModelError(f"{p}: no such file or folder; give a .onnx file or a zoo model folder")
        names = [n for n, _, _ in graph_io(_load_onnx(p)).inputs]
        arrays = read_inputs(input_path, names)
        m = manifest_from_graph(p, {k: v.shape for k, v in arrays.items()})
    return m, _check_inputs(m, arrays)


def infer(model: str | Path, input_path: str | Path, output_path: str | Path,
          providers: list[str] | tuple[str, ...] = ("auto",)) -> tuple[dict[str, np.ndarray], str]:
    """One run through the Engine (same provider policy, I/O binding); writes OUT.npz keyed by output name.

    Returns the outputs and the engine's provider note (which provider ran it and why).
    """
    from edgert.runtime.engine import Engine

    out = Path(output_path)
    if out.suffix != ".npz":
        raise ModelError(f"{out}: the output file must end in .npz (one array per output name)")
    m, arrays = load_for_inference(model, input_path)
    eng = Engine(m, providers=providers)
    result = {k: v.copy() for k, v in eng.run(eng.bind(arrays)).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **result)  # type: ignore[arg-type]  # the stubs take every keyword for allow_pickle
    return result, eng.provider_note
