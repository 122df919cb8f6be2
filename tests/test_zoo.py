"""Model zoo commands, one-shot inference and the pilotnet variants, on real ONNX Runtime sessions."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import IR_VERSION, make_steer_model, write_manifest
from onnx import TensorProto, helper

from edgert.kernels import PreprocessSpec
from edgert.runtime import cli, zoo
from edgert.runtime.manifest import ModelError, load_manifest

ROOT = Path(__file__).resolve().parent.parent
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def edgert(*argv: str) -> int:
    """The `models`/`infer` commands as the CLI runs them (a ModelError: exit 2)."""
    return cli.main(list(argv))


def make_two_input_model(path: Path) -> None:
    """out = a + b, plus a second output s = a * 2: several named inputs and outputs."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])
    out = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3])
    dbl = helper.make_tensor_value_info("double", TensorProto.FLOAT, [2, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "two"], ["double"])],
                          "two", [a, b], [out, dbl], initializer=[two])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(m)
    path.write_bytes(m.SerializeToString())


def make_dynamic_model(path: Path) -> None:
    """y = relu(x) with a symbolic batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    path.write_bytes(m.SerializeToString())


@pytest.fixture
def tiny_zoo(tiny_model: Path) -> Path:
    return tiny_model.parent  # tmp_path, holding the folder "tiny"


@pytest.fixture(autouse=True)
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This user's data folder, empty: the default user zoo is $XDG_DATA_HOME/edgert/models."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path / "xdg-data"


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if "__pycache__" not in p.parts}


# --- models list | info | verify -------------------------------------------------------------


def test_shipped_zoo_lists_and_verifies(capsys):
    assert edgert("models", "list") == 0
    out = capsys.readouterr().out
    for name in ("pilotnet", "pilotnet-fp16", "pilotnet-int8"):
        assert name in out
    assert edgert("models", "verify") == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == 3
    assert edgert("models", "info", "pilotnet-int8") == 0
    out = capsys.readouterr().out
    assert "sha256" in out and "image: float32 [1, 3, 66, 200]" in out and "markets:    sim" in out


def test_verify_sha256_mismatch_fails_with_reason(tiny_zoo, capsys):
    write_manifest(tiny_zoo / "tiny", sha="0" * 64)
    assert edgert("models", "verify", "tiny", "--zoo", str(tiny_zoo)) == 1
    err = capsys.readouterr().err
    assert "does not match the manifest" in err and "1 of 1 model(s) failed" in err


def test_verify_graph_io_mismatch(tiny_zoo, capsys):
    write_manifest(tiny_zoo / "tiny", input_name="img")
    assert edgert("models", "verify", "--zoo", str(tiny_zoo)) == 1
    assert "manifest declares inputs ['img'], the graph has ['image']" in capsys.readouterr().err


def test_verify_unknown_model(tiny_zoo, capsys):
    assert edgert("models", "verify", "nope", "--zoo", str(tiny_zoo)) == 1
    err = capsys.readouterr().err
    assert "no model 'nope'" in err and re.search(r"models: pilotnet, pilotnet-fp16, pilotnet-int8, tiny$", err, re.M)


def test_info_unknown_model_names_the_models(tiny_zoo, capsys):
    assert edgert("models", "info", "nope", "--zoo", str(tiny_zoo)) == 2
    assert "no model 'nope'" in capsys.readouterr().err


# --- models add ------------------------------------------------------------------------------


def test_add_writes_skeleton_that_load_manifest_rejects(tmp_path, capsys):
    src = tmp_path / "steer.onnx"
    make_steer_model(src)
    z = tmp_path / "zoo"
    z.mkdir()
    assert edgert("models", "add", str(src), "--zoo", str(z)) == 0
    assert "TODO" in capsys.readouterr().out
    d = z / "steer"
    assert (d / "model.onnx").read_bytes() == src.read_bytes()
    text = (d / "manifest.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["inputs"] == [{"name": "image", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert raw["outputs"] == [{"name": "steer", "shape": [1, 1], "dtype": "float32"}]
    with pytest.raises(ModelError, match="TODO"):
        load_manifest(d)
    assert edgert("models", "verify", "steer", "--zoo", str(z)) == 1
    assert "still has TODO values" in capsys.readouterr().err
    # Filling in the TODOs makes it a valid, verifiable zoo model.
    fixed = (text.replace('src_format = "TODO"', 'src_format = "bgr"').replace('resize = "TODO"', 'resize = "area"')
             .replace('color = "TODO"', 'color = "rgb"').replace('kind = "TODO"', 'kind = "steering"'))
    (d / "manifest.toml").write_text(fixed)
    assert edgert("models", "verify", "steer", "--zoo", str(z)) == 0


def test_add_dynamic_dims_marked_todo(tmp_path):
    src = tmp_path / "dyn.onnx"
    make_dynamic_model(src)
    d = zoo.add_model(src, "dyn", zoo=tmp_path)
    text = (d / "manifest.toml").read_text()
    assert '"TODO:N"' in text and "dynamic dims" in text
    with pytest.raises(ModelError):
        load_manifest(d)


def test_add_errors(tmp_path, tiny_zoo, capsys):
    assert edgert("models", "add", str(tmp_path / "missing.onnx"), "--zoo", str(tiny_zoo)) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG not a model at all \xff\xfe" * 10)
    assert edgert("models", "add", str(junk), "--zoo", str(tiny_zoo)) == 2
    assert "not an ONNX file" in capsys.readouterr().err
    assert edgert("models", "add", str(tiny_zoo / "tiny" / "model.onnx"), "--name", "tiny", "--zoo", str(tiny_zoo)) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--name" in err
    assert edgert("models", "add", str(tiny_zoo / "tiny" / "model.onnx"), "--name", "Bad Name", "--zoo",
                  str(tiny_zoo)) == 2
    assert "model name" in capsys.readouterr().err


def test_add_without_zoo_writes_the_user_zoo_which_loads_after_the_bundled_one(tmp_path, user_data, capsys):
    from edgert.runtime.config import MODELS_DIR, from_dict

    bundled_before = _tree(zoo.ZOO)
    src = tmp_path / "steer.onnx"
    make_steer_model(src)
    assert edgert("models", "add", str(src)) == 0
    d = user_data / "edgert" / "models" / "steer"
    assert (d / "model.onnx").read_bytes() == src.read_bytes() and (d / "manifest.toml").is_file()
    write_manifest(d)  # the TODOs filled in
    capsys.readouterr()
    assert edgert("models", "list") == 0
    out = capsys.readouterr().out
    assert re.search(r"^steer\s+user\s", out, re.M) and re.search(r"^pilotnet\s+bundled\s", out, re.M)
    assert f"user zoo:    {user_data / 'edgert' / 'models'}" in out
    assert from_dict({"infer": {"model": "steer"}}).model_dir() == d  # found after the bundled zoo
    assert from_dict({}).model_dir() == MODELS_DIR / "pilotnet"
    assert _tree(zoo.ZOO) == bundled_before, "the bundled zoo was written"


def test_a_user_model_never_shadows_a_bundled_one(tmp_path, user_data, capsys):
    from edgert.runtime.config import MODELS_DIR, from_dict

    src = tmp_path / "pilotnet.onnx"
    make_steer_model(src)
    assert edgert("models", "add", str(src)) == 2
    assert "'pilotnet' is a bundled model's name" in capsys.readouterr().err
    # One put there by hand is listed as shadowed and never loaded by that name.
    d = user_data / "edgert" / "models" / "pilotnet"
    d.mkdir(parents=True)
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    assert edgert("models", "list") == 1
    out = capsys.readouterr().out
    assert re.search(r"^pilotnet\s+user\s.*shadowed: the bundled 'pilotnet' is loaded by that name; rename", out, re.M)
    assert from_dict({"infer": {"model": "pilotnet"}}).model_dir() == MODELS_DIR / "pilotnet"
    assert zoo.model_dir("pilotnet") == MODELS_DIR / "pilotnet"


def test_a_configured_user_zoo_resolves_against_the_config_file(tmp_path, tiny_zoo, capsys):
    from edgert.runtime.config import ConfigError, load

    cfg_dir = tmp_path / "vehicle"
    cfg_dir.mkdir()
    (cfg_dir / "p.toml").write_text('[infer]\nmodel = "tiny"\nzoo = ".."\n')  # tmp_path, which holds tiny/
    assert load(cfg_dir / "p.toml").model_dir().resolve() == tiny_zoo / "tiny"
    (cfg_dir / "p.toml").write_text('[infer]\nmodel = "tiny"\n')
    with pytest.raises(ConfigError, match=r"no manifest.toml .*zoo's: pilotnet, pilotnet-fp16, pilotnet-int8 \(searched: "):
        load(cfg_dir / "p.toml")


def test_sign_refuses_a_bundled_model(tmp_path, capsys):
    sig = zoo.ZOO / "pilotnet" / "manifest.sig"
    before = sig.read_bytes()
    assert edgert("models", "sign", "pilotnet", "--key", str(tmp_path / "k.pem")) == 2
    assert "bundled model" in capsys.readouterr().err and sig.read_bytes() == before


# --- infer -----------------------------------------------------------------------------------


def test_infer_round_trip_bare_onnx_npz(tmp_path, capsys):
    model = tmp_path / "two.onnx"
    make_two_input_model(model)
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 3), dtype=np.float32), rng.random((2, 3), dtype=np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "in.npz"),
                  "--output", str(tmp_path / "out.npz"), "--providers", "CPUExecutionProvider") == 0
    assert "using CPUExecutionProvider" in capsys.readouterr().out
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == ["double", "sum"]
        assert np.array_equal(z["sum"], want[0]) and np.array_equal(z["double"], want[1])


def test_infer_npy_single_input_and_zoo_dir(tiny_model, tmp_path):
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for model in (tiny_model / "model.onnx", tiny_model):  # by file (manifest beside it) and by folder
        assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "x.npy"),
                      "--output", str(tmp_path / "y.npz")) == 0
        with np.load(tmp_path / "y.npz") as z:
            assert z["steer"][0, 0] == pytest.approx(0.5 * x.mean(), rel=1e-5)


def test_infer_zoo_model_keeps_sha256_check(tiny_model, tmp_path, capsys):
    write_manifest(tiny_model, sha="0" * 64)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert edgert("infer", "--model", str(tiny_model / "model.onnx"), "--input", str(tmp_path / "x.npy"),
                  "--output", str(tmp_path / "y.npz")) == 2
    assert "does not match the manifest" in capsys.readouterr().err


def test_infer_dynamic_batch_from_input(tmp_path):
    model = tmp_path / "dyn.onnx"
    make_dynamic_model(model)
    x = np.array([[-1, 2, -3, 4]] * 5, np.float32)
    np.save(tmp_path / "x.npy", x)
    out, _ = zoo.infer(model, tmp_path / "x.npy", tmp_path / "y.npz", ["CPUExecutionProvider"])
    assert np.array_equal(out["y"], np.maximum(x, 0))


@pytest.mark.parametrize("arrays, match", [
    ({"image": np.zeros((1, 3, 8, 8), np.float64)}, r"is float64, the model wants float32; convert it"),
    ({"image": np.zeros((1, 3, 8, 9), np.float32)}, r"has shape \[1, 3, 8, 9\], the model wants \[1, 3, 8, 8\]"),
    ({"img": np.zeros((1, 3, 8, 8), np.float32)}, r"missing \['image'\], unknown \['img'\]"),
])
def test_infer_input_errors(tiny_model, tmp_path, capsys, arrays, match):
    np.savez(tmp_path / "in.npz", **arrays)
    bare = tmp_path / "bare.onnx"  # no manifest beside it: the manifest is derived from the graph
    bare.write_bytes((tiny_model / "model.onnx").read_bytes())
    for model in (tiny_model, bare):
        assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "in.npz"),
                      "--output", str(tmp_path / "out.npz")) == 2
        assert re.search(match, capsys.readouterr().err)


def test_infer_file_errors(tmp_path, capsys):
    model = tmp_path / "two.onnx"
    make_two_input_model(model)
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "a.npy"), "--output",
                  str(tmp_path / "o.npz")) == 2
    assert "a .npy holds one array, the model has inputs ['a', 'b']" in capsys.readouterr().err
    assert edgert("infer", "--model", str(tmp_path / "nope.onnx"), "--input", str(tmp_path / "a.npy"), "--output",
                  str(tmp_path / "o.npz")) == 2
    assert "no such file" in capsys.readouterr().err
    assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "missing.npz"), "--output",
                  str(tmp_path / "o.npz")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert edgert("infer", "--model", str(model), "--input", str(tmp_path / "a.npy"), "--output",
                  str(tmp_path / "o.txt")) == 2
    assert "must end in .npz" in capsys.readouterr().err


# --- variants --------------------------------------------------------------------------------


def _variants_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("pilotnet_variants", ROOT / "models/pilotnet/variants.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_variant_within_stated_tolerance(variant):
    """A few fresh held-out frames (demo road, another draw than the card's): every one within tolerance."""
    v = _variants_module()
    d = ROOT / "models" / f"pilotnet-{variant}"
    acc = tomllib.loads((d / "manifest.toml").read_text())["accuracy"]
    frames = v.held_out_frames(4, rng_seed=123)
    ref = v.steer(ROOT / "models/pilotnet/model.onnx", frames)
    m = load_manifest(d)
    got = v.steer(m.path, frames)
    m.read_verified()  # the shipped variant is the one the manifest's sha256 names
    err_mrad = np.abs(got - ref) * 1000
    assert err_mrad.max() <= acc["tolerance_mrad"], (variant, err_mrad)
    card = (d / "MODEL_CARD.md").read_text()
    assert f"{acc['rmse_mrad']:.4f} mrad" in card and f"{acc['tolerance_mrad']} mrad" in card


def test_nan_output_is_an_error(tmp_path, capsys):
    d = tmp_path / "nan"
    d.mkdir()
    make_steer_model(d / "model.onnx", op="NaN")
    write_manifest(d)
    assert edgert("models", "verify", "nan", "--zoo", str(tmp_path)) == 1
    assert "NaN or Inf" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert edgert("infer", "--model", str(d), "--input", str(tmp_path / "x.npy"), "--output",
                  str(tmp_path / "y.npz")) == 1
    assert "NaN or Inf" in capsys.readouterr().err


def test_list_marks_invalid_manifest(tiny_zoo, capsys):
    (tiny_zoo / "broken").mkdir()
    (tiny_zoo / "broken" / "manifest.toml").write_text("[model\n")
    assert edgert("models", "list", "--zoo", str(tiny_zoo)) == 1
    out = capsys.readouterr().out
    assert "tiny" in out and "invalid: " in out and "not valid TOML" in out


def test_add_refuses_external_data(tmp_path):
    from onnx import numpy_helper

    src = tmp_path / "ext.onnx"
    make_steer_model(src)
    m = onnx.load(str(src))
    raw = [numpy_helper.from_array(numpy_helper.to_array(t), t.name) for t in m.graph.initializer]
    del m.graph.initializer[:]
    m.graph.initializer.extend(raw)  # raw_data tensors, which onnx can move out of the file
    onnx.save(m, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").is_file()
    with pytest.raises(ModelError, match="external data"):
        zoo.add_model(src, "ext", zoo=tmp_path / "zoo")


def test_the_scripts_that_made_the_shipped_models_write_their_manifests():
    """train.py and variants.py share one manifest template; what they would write today must be the
    committed manifest (same keys and values, publisher included), or the zoo has drifted from its recipe."""
    import tomllib

    ZOO = zoo.ZOO
    sys.path.insert(0, str(ZOO / "pilotnet"))
    try:
        import train
        import variants
    finally:
        sys.path.remove(str(ZOO / "pilotnet"))

    def parsed(text: str) -> dict:
        d = tomllib.loads(text)
        d["preprocess"] = PreprocessSpec.from_dict(d["preprocess"])  # defaults written or not: the same spec
        return d

    m = tomllib.loads((ZOO / "pilotnet" / "manifest.toml").read_text())
    assert parsed(train.pilotnet_manifest(m["model"]["sha256"], 0)) == parsed(
        (ZOO / "pilotnet" / "manifest.toml").read_text())
    for v in variants.VARIANTS:
        text = (ZOO / f"pilotnet-{v}" / "manifest.toml").read_text()
        m = tomllib.loads(text)
        a = m["accuracy"]
        made = variants.variant_manifest(v, m["model"]["sha256"], m["model"]["provenance"], a["frames"],
                                         a["rmse_mrad"], a["max_mrad"], a["tolerance_mrad"])
        assert parsed(made) == parsed(text)
