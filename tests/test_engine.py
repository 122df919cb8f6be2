"""Engine and provider policy on real ONNX Runtime sessions with small real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import make_steer_model, write_manifest

from edgert.runtime.engine import Engine
from edgert.runtime.manifest import ModelError, load_manifest
from edgert.runtime.providers import describe, nvidia_driver, plan
from edgert.runtime.zoo import ZOO


def test_io_binding_equals_plain_session_run(tiny_model):
    eng = Engine(load_manifest(tiny_model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    binding = eng.bind({"image": x})
    got = eng.run(binding)["steer"].copy()
    bare = ort.InferenceSession(str(tiny_model / "model.onnx"), providers=["CPUExecutionProvider"])
    (want,) = bare.run(None, {"image": x})
    assert np.array_equal(got, want)
    assert got[0, 0] == pytest.approx(0.5 * x.mean(), rel=1e-5)
    # The binding reads the caller's buffer in place: a new frame written there is seen on the next run.
    x[:] = 1.0
    assert eng.run(binding)["steer"][0, 0] == pytest.approx(0.5)


def test_sha256_mismatch_refused(tiny_model):
    write_manifest(tiny_model, sha="0" * 64)
    with pytest.raises(ModelError, match="sha256 .* does not match the manifest"):
        Engine(load_manifest(tiny_model))


def test_missing_model_file(tiny_model):
    (tiny_model / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model file .* is missing"):
        Engine(load_manifest(tiny_model))


def test_corrupt_model_with_matching_hash_refused_by_onnxruntime(tiny_model):
    (tiny_model / "model.onnx").write_bytes(b"this is not a protobuf")
    write_manifest(tiny_model)
    with pytest.raises(ModelError, match="onnxruntime .* cannot load it"):
        Engine(load_manifest(tiny_model))


def test_manifest_input_name_mismatch(tiny_model):
    write_manifest(tiny_model, input_name="img")
    with pytest.raises(ModelError, match=r"manifest declares inputs \['img'\], the graph has \['image'\]"):
        Engine(load_manifest(tiny_model))


def test_manifest_shape_mismatch(tiny_model):
    make_steer_model(tiny_model / "model.onnx", in_shape=(1, 3, 16, 16))
    write_manifest(tiny_model, in_shape=(1, 3, 8, 8))
    with pytest.raises(ModelError, match="has shape .*16, 16.* in the graph"):
        Engine(load_manifest(tiny_model))


def test_bind_rejects_wrong_buffer(tiny_model):
    eng = Engine(load_manifest(tiny_model))
    with pytest.raises(ModelError, match="expected a C-contiguous float32 array of shape"):
        eng.bind({"image": np.zeros((1, 3, 8, 8), np.float64)})
    with pytest.raises(ModelError, match="input 'image' not given"):
        eng.bind({})


def test_manifest_errors_name_the_key(tiny_model):
    text = (tiny_model / "manifest.toml").read_text()
    (tiny_model / "manifest.toml").write_text(text.replace('dtype = "float32"\n\n[[outputs]]',
                                                           'dtype = "float64"\n\n[[outputs]]'))
    with pytest.raises(ModelError, match=r"inputs\[0\].dtype: 'float64' is not one of"):
        load_manifest(tiny_model)
    (tiny_model / "manifest.toml").write_text(text.replace('resize = "area"', 'resize = "cubic"'))
    with pytest.raises(ModelError, match="resize"):
        load_manifest(tiny_model)


def test_provider_plan_always_ends_on_cpu_and_says_why():
    p = plan(["auto"])
    assert p.chosen[-1] == "CPUExecutionProvider"
    assert all(p.skipped.values())
    if nvidia_driver() is not None:  # no GPU here: CUDA/TensorRT must be skipped, with the reason
        gpu = [n for n in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if n in ort.get_available_providers()]
        for n in gpu:
            assert "no NVIDIA driver" in p.skipped[n]
        line = describe(p, ["CPUExecutionProvider"])
        assert line.startswith("using CPUExecutionProvider")
        if gpu:  # providers that share a reason are listed together before it
            assert f"{', '.join(gpu)} skipped: no NVIDIA driver" in line


def test_tensorrt_without_its_libraries_is_skipped_with_the_reason(monkeypatch):
    """onnxruntime-gpu lists TensorRT even where libnvinfer is absent (so it was on a lent H200):
    the plan leaves it out with the reason instead of letting every session fail over it."""
    from edgert.runtime import providers

    if providers.tensorrt_libraries() is None:
        pytest.skip("TensorRT is installed here")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build ({ort.get_device()}) has no TensorRT provider")
    monkeypatch.setattr(providers, "nvidia_driver", lambda: None)  # a driver, as on a GPU machine
    p = providers.plan(["auto"])
    assert "TensorrtExecutionProvider" not in p.chosen and "CUDAExecutionProvider" in p.chosen
    assert p.skipped["TensorrtExecutionProvider"].startswith("TensorRT 10 not installed (libnvinfer.so.10")


def test_unknown_provider_requested_is_skipped_not_fatal(tiny_model):
    eng = Engine(load_manifest(tiny_model), providers=["NoSuchExecutionProvider"])
    assert eng.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider skipped: not in this onnxruntime build" in eng.provider_note


@pytest.mark.gpu
def test_cuda_provider_used_when_a_gpu_is_present(tiny_model):
    if nvidia_driver() is not None:
        pytest.skip(f"needs an NVIDIA GPU: {nvidia_driver()}")
    eng = Engine(load_manifest(tiny_model), providers=["CUDAExecutionProvider"])
    assert eng.providers[0] == "CUDAExecutionProvider"


def test_manifest_decoder_index_and_scale_validated(tiny_model):
    text = (tiny_model / "manifest.toml").read_text()
    (tiny_model / "manifest.toml").write_text(text.replace('output = "steer"', 'output = "steer"\nindex = 1'))
    with pytest.raises(ModelError, match=r"decoder.index: 1 outside output 'steer' \(1 values"):
        load_manifest(tiny_model)
    (tiny_model / "manifest.toml").write_text(text.replace('output = "steer"', 'output = "steer"\nscale = inf'))
    with pytest.raises(ModelError, match="decoder.scale: inf must be finite and non-zero"):
        load_manifest(tiny_model)


def test_unsupported_opset_and_operator_named_without_cpp_noise(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("steer", TensorProto.FLOAT, [1, 1])
    for opset, op, match in ((99, "Relu", "Opset 99"), (17, "NoSuchOp", "No Op registered for NoSuchOp")):
        d = tmp_path / f"m{opset}"
        d.mkdir()
        g = helper.make_graph([helper.make_node(op, ["image"], ["steer"])], "g", [x], [y])
        (d / "model.onnx").write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                                                         ir_version=10).SerializeToString())
        write_manifest(d)
        with pytest.raises(ModelError, match=match) as info:
            Engine(load_manifest(d), providers=["CPUExecutionProvider"])
        assert "/onnxruntime_src/" not in str(info.value) and "or choose another provider" in str(info.value)


def test_optimised_model_cache_is_used_and_checked(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    m = load_manifest(tiny_model)
    first = Engine(m, providers=["CPUExecutionProvider"], cache_dir=cache)
    assert not first.cache_hit
    files = sorted(cache.glob("*.onnx"))
    assert len(files) == 1 and Path(f"{files[0]}.seal").is_file()  # sealed with the user's key (test_cache_integrity)
    second = Engine(m, providers=["CPUExecutionProvider"], cache_dir=cache)
    assert second.cache_hit
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    assert np.array_equal(first.run(first.bind({"image": x}))["steer"], second.run(second.bind({"image": x}))["steer"])
    files[0].write_bytes(files[0].read_bytes() + b"tampered")  # a corrupt cache is rebuilt, never loaded
    third = Engine(m, providers=["CPUExecutionProvider"], cache_dir=cache)
    assert not third.cache_hit and Engine(m, providers=["CPUExecutionProvider"], cache_dir=cache).cache_hit


def test_profiles_keep_every_vendor_and_set_nvidia_caches(tmp_path):
    from edgert.runtime.profiles import resolve

    auto = resolve("auto", tmp_path)
    assert auto.providers == ("auto",)  # the whole vendor-neutral preference, not NVIDIA-or-CPU
    orin = resolve("jetson-orin", tmp_path)
    trt = orin.provider_options["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] == "1" and trt["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert resolve("cpu", tmp_path).providers == ("CPUExecutionProvider",)
    off = resolve("jetson-orin", None).provider_options["TensorrtExecutionProvider"]  # infer.cache_dir = "off"
    assert not any("cache" in k for k in off), "with the cache off TensorRT must not write engines anywhere"
    with pytest.raises(ValueError, match="infer.profile: 'tpu' is not one of"):
        resolve("tpu", tmp_path)
    # NVIDIA options on a machine without NVIDIA are carried but unused; the session still runs on CPU.
    eng = Engine(load_manifest_for_tiny(tmp_path), providers=list(orin.providers),
                 provider_options=orin.provider_options)
    assert eng.providers[-1] == "CPUExecutionProvider"


def load_manifest_for_tiny(tmp_path):
    d = tmp_path / "tiny2"
    d.mkdir()
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    return load_manifest(d)


def test_device_binding_matches_session_run_and_checks_inputs(tiny_model):
    """The GPU binding path (OrtValues on the session's device) run with device "cpu", as here."""
    m = load_manifest(tiny_model)
    eng = Engine(m, providers=["CPUExecutionProvider"])
    assert eng.device == "cpu" and not eng.cuda_graph
    io = eng.bind_device()
    rng = np.random.default_rng(3)
    for _ in range(3):  # new inputs each run: the bound input is updated in place, outputs refreshed
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        io.load("image", x)
        got = io.run()["steer"].copy()
        assert np.array_equal(got, eng.session.run(None, {"image": x})[0])
    with pytest.raises(ModelError, match=r"input 'image': expected float32 \(1, 3, 8, 8\), got float64"):
        io.load("image", np.zeros((1, 3, 8, 8)))
    with pytest.raises(ModelError, match="input 'img' not bound"):
        io.load("img", x)


def test_cuda_graph_option_read_from_the_provider_that_runs():
    from edgert.runtime.deviceio import cuda_graph_enabled, session_device

    opts = {"CUDAExecutionProvider": {"enable_cuda_graph": "1"}, "TensorrtExecutionProvider": {}}
    assert cuda_graph_enabled(["CUDAExecutionProvider", "CPUExecutionProvider"], opts)
    assert not cuda_graph_enabled(["TensorrtExecutionProvider", "CUDAExecutionProvider"], opts)
    assert not cuda_graph_enabled(["CPUExecutionProvider"], opts)  # fell back: no graph on the CPU
    assert session_device(["TensorrtExecutionProvider"]) == "cuda" and session_device(["CPUExecutionProvider"]) == "cpu"


def test_cuda_graph_refused_by_the_model_runs_without_one(tiny_model, monkeypatch, caplog):
    """ORT refuses graph capture when a node stays on the CPU (seen on an H200 with the INT8 variant):
    the engine retries without the graph option and says so. The refusal itself needs a GPU, so
    here it is raised once by a stand-in; the retry runs a real session."""
    import edgert.runtime.engine as engine_mod

    real, calls = ort.InferenceSession, []

    def session(model, sess_options=None, providers=None):  # type: ignore[no-untyped-def]
        calls.append(providers)
        if len(calls) == 1:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : This session cannot use the graph capture feature "
                               "as requested by the user  as all compute graph nodes have not been partitioned to "
                               "the CUDAExecutionProvider")
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(engine_mod.ort, "InferenceSession", session)
    with caplog.at_level("WARNING", logger="edgert.runtime.engine"):
        eng = Engine(load_manifest(tiny_model), providers=["CPUExecutionProvider"],
                     provider_options={"CPUExecutionProvider": {"enable_cuda_graph": "1", "x": "1"},
                                       "CUDAExecutionProvider": {"enable_cuda_graph": "1"}})
    assert len(calls) == 2 and calls[1] == [("CPUExecutionProvider", {"enable_cuda_graph": "1", "x": "1"})]
    assert not eng.cuda_graph
    assert "CUDA graph requested but not possible (This session cannot use the graph capture" in caplog.text
    x = np.ones((1, 3, 8, 8), np.float32)
    assert np.isfinite(eng.run(eng.bind({"image": x}))["steer"]).all()


def test_other_load_errors_are_not_retried(tiny_model, monkeypatch):
    import edgert.runtime.engine as engine_mod

    def session(model, sess_options=None, providers=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed")

    monkeypatch.setattr(engine_mod.ort, "InferenceSession", session)
    with pytest.raises(ModelError, match="cannot load it with CPUExecutionProvider: Load model failed"):
        Engine(load_manifest(tiny_model), providers=["CPUExecutionProvider"],
               provider_options={"CUDAExecutionProvider": {"enable_cuda_graph": "1"}})


@pytest.mark.gpu
def test_int8_variant_with_a_graph_requested_runs_without_one_on_gpu():
    if nvidia_driver() is not None:
        pytest.skip(f"needs an NVIDIA GPU: {nvidia_driver()}")

    m = load_manifest(ZOO / "pilotnet-int8")
    eng = Engine(m, providers=["CUDAExecutionProvider"],
                 provider_options={"CUDAExecutionProvider": {"enable_cuda_graph": "1"}})
    assert eng.device == "cuda" and not eng.cuda_graph
    io = eng.bind_device()
    x = np.random.default_rng(5).standard_normal((1, 3, 66, 200)).astype(np.float32)
    io.load("image", x)
    cpu = ort.InferenceSession(m.read_verified(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(io.run()["steer"], cpu.run(None, {"image": x})[0], atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [False, True])
def test_device_binding_on_a_gpu_equals_session_run(tiny_model, graph):
    if nvidia_driver() is not None:
        pytest.skip(f"needs an NVIDIA GPU: {nvidia_driver()}")
    m = load_manifest(tiny_model)
    eng = Engine(m, providers=["CUDAExecutionProvider"],
                 provider_options={"CUDAExecutionProvider": {"enable_cuda_graph": "1" if graph else "0"}})
    assert eng.device == "cuda" and eng.cuda_graph == graph
    io = eng.bind_device()
    cpu = ort.InferenceSession(m.read_verified(), providers=["CPUExecutionProvider"])  # the reference
    rng = np.random.default_rng(4)
    for _ in range(4):  # with a graph: capture on the first run, replays after, each on fresh input
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        io.load("image", x)
        np.testing.assert_allclose(io.run()["steer"], cpu.run(None, {"image": x})[0], rtol=1e-5, atol=1e-6)


def test_manifest_operating_domain_is_parsed_and_checked(tiny_model):
    """[odd] mean_level: the light range the model was validated for (preprocess flags frames outside it)."""
    text = (tiny_model / "manifest.toml").read_text()
    assert load_manifest(tiny_model).odd_mean_level is None  # optional: no [odd], no light check
    (tiny_model / "manifest.toml").write_text(text + "\n[odd]\nmean_level = [100, 175.5]\n")
    assert load_manifest(tiny_model).odd_mean_level == (100.0, 175.5)
    for bad, why in (("mean_level = [175, 100]", r"odd.mean_level: \[175, 100\] must be \[lower, upper\]"),
                     ("mean_level = [-1, 100]", "0 <= lower < upper <= 255"),
                     ("mean_level = [100, 300]", "0 <= lower < upper <= 255"),
                     ("mean_level = [100]", r"must be \[lower, upper\]"),
                     ('mean_level = ["dark", 100]', r"must be \[lower, upper\]"),
                     ("mean_level = [true, 100]", r"must be \[lower, upper\]"),
                     ("light = [1, 2]", "odd: unknown key.s. light; known: mean_level")):
        (tiny_model / "manifest.toml").write_text(text + f"\n[odd]\n{bad}\n")
        with pytest.raises(ModelError, match=why):
            load_manifest(tiny_model)
    (tiny_model / "manifest.toml").write_text('odd = "daylight"\n' + text)  # top level, before any table
    with pytest.raises(ModelError, match="odd: expected a table"):
        load_manifest(tiny_model)


def test_the_shipped_models_declare_their_operating_domain():
    for name in ("pilotnet", "pilotnet-fp16", "pilotnet-int8"):
        assert load_manifest(ZOO / name).odd_mean_level == (105.0, 165.0), name
