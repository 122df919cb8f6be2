"""Caches cannot change what a signed model computes: seals under a key only this user can read.

Whoever can write the cache folder can replace a cached file and anything written beside it;
only a seal made with the user's key (runtime/cacheseal.py) tells the runtime's own files apart.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_steer_model, write_manifest

from edgert.runtime.engine import Engine
from edgert.runtime.manifest import load_manifest

X = np.full((1, 3, 8, 8), 0.5, np.float32)  # mean 0.5: model A answers 0.25, model B 2.5


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch) -> Path:
    """This test's user config folder (so its cache key), not the real one."""
    cfg = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    return cfg / "edgert" / "cache.key"


def _model(d: Path, weight: float):  # type: ignore[no-untyped-def]
    d.mkdir()
    make_steer_model(d / "model.onnx", weight=weight)
    write_manifest(d)
    return load_manifest(d)


def _steer(eng: Engine) -> float:
    return float(eng.run(eng.bind({"image": X}))["steer"][0, 0])


def _cpu(m, cache: Path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine(m, providers=["CPUExecutionProvider"], cache_dir=cache)


def test_swapped_cached_graph_and_seal_are_refused_and_the_models_own_output_is_produced(tmp_path):
    """Another model's optimised graph, with the seal the runtime made for it, copied over model
    A's cache files (what anyone who can write the cache folder can do): A's engine must not load
    it, and must answer as A."""
    cache = tmp_path / "cache"
    a, b = _model(tmp_path / "a", 0.5), _model(tmp_path / "b", 5.0)
    assert _steer(_cpu(a, cache)) == pytest.approx(0.25)
    assert _steer(_cpu(b, cache)) == pytest.approx(2.5)
    a_files = sorted(cache.glob(f"{a.sha256[:24]}*"))
    b_files = sorted(cache.glob(f"{b.sha256[:24]}*"))
    assert len(a_files) == len(b_files) >= 2, (a_files, b_files)  # the graph and what vouches for it
    for f in b_files:  # B's graph and its side file(s), under A's names
        shutil.copy(f, f.with_name(f.name.replace(b.sha256[:24], a.sha256[:24])))
    swapped = _cpu(a, cache)
    assert not swapped.cache_hit, "model B's cached graph was loaded for model A"
    assert _steer(swapped) == pytest.approx(0.25)
    assert _cpu(a, cache).cache_hit  # rebuilt and sealed again: the next start is warm


def test_graph_sealed_with_another_key_is_refused(tmp_path, own_key):
    from edgert.runtime import cacheseal, ortcache

    cache = tmp_path / "cache"
    a, b = _model(tmp_path / "a", 0.5), _model(tmp_path / "b", 5.0)
    _cpu(b, cache)
    graph_b = ortcache.cache_path(cache, b.sha256, ["CPUExecutionProvider"]).read_bytes()
    path_a = ortcache.cache_path(cache, a.sha256, ["CPUExecutionProvider"])
    for seal in (cacheseal.seal_of(b"k" * 32, path_a.name, graph_b),  # an attacker's own key
                 hashlib.sha256(graph_b).hexdigest(),  # the plain checksum the seal replaced
                 ""):
        cacheseal.write_sealed(path_a, graph_b, b"k" * 32, path_a.name)
        Path(f"{path_a}.seal").write_text(seal)
        eng = _cpu(a, cache)
        assert not eng.cache_hit and _steer(eng) == pytest.approx(0.25), seal
    assert stat.S_IMODE(own_key.stat().st_mode) == 0o600 and len(own_key.read_bytes()) == 32


@pytest.mark.parametrize("spoil,why", [
    (lambda k: k.chmod(0o644),
     r"is readable by others \(mode 644\); remove it \(a new one is made\) .*can forge cache seals"),
    (lambda k: os.chown(k, 65534, -1), r"belongs to uid 65534, not to this user"),
    (lambda k: (k.unlink(), k.symlink_to(k.with_name("elsewhere"))), r"cannot be opened as a plain file"),
    (lambda k: k.parent.chmod(0o777), r"folder .*edgert is writable by group or others \(mode 777\)"),
    (lambda k: k.write_bytes(b"short"), r"holds 5 bytes, not 32"),
])
def test_a_key_that_cannot_be_trusted_is_refused_with_the_fix(tiny_model, tmp_path, own_key, spoil, why, caplog):
    from edgert.runtime.cacheseal import CacheKeyError, load_key

    m = load_manifest(tiny_model)
    assert _cpu(m, tmp_path / "cache").cache_hit is False  # makes the key and the cache
    assert _cpu(m, tmp_path / "cache").cache_hit  # ... which the next start uses
    if os.geteuid() != 0 and "uid" in why:
        pytest.skip("chown to another user needs root")
    spoil(own_key)
    with pytest.raises(CacheKeyError, match=why):
        load_key()
    # the caches only save time: the engine says why and runs from the verified model, touching no cache
    with caplog.at_level("WARNING", logger="edgert.runtime.engine"):
        eng = _cpu(m, tmp_path / "cache")
    assert not eng.cache_hit and _steer(eng) == pytest.approx(0.5 * 0.5)
    assert any(re.search(why, r.getMessage()) and "without its caches" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]


def test_tensorrt_caches_reach_the_provider_only_through_a_verified_private_copy(tmp_path):
    """ONNX Runtime's TensorRT provider reads its caches by path: it is pointed at a private copy
    holding only files whose seal verifies for this model; what it writes is sealed back. (The
    provider itself needs a GPU; this is the part around it, on real files.)"""
    from edgert.runtime import cacheseal
    from edgert.runtime.profiles import resolve
    from edgert.runtime.trtcache import TrtCaches, wants_caches

    key = cacheseal.load_key()
    trt = resolve("x86-nvidia", tmp_path / "cache").provider_options["TensorrtExecutionProvider"]
    assert wants_caches(trt)
    assert not wants_caches(resolve("x86-nvidia", None).provider_options["TensorrtExecutionProvider"])
    model_a, model_b = "a" * 64, "b" * 64
    first = TrtCaches(trt, model_a, key)
    assert first.options["trt_engine_cache_path"] == first.options["trt_timing_cache_path"] == str(first.private)
    assert stat.S_IMODE(first.private.stat().st_mode) == 0o700
    assert first.options["trt_fp16_enable"] == trt["trt_fp16_enable"]  # other options untouched
    (first.private / "tiny_123_sm90.engine").write_bytes(b"engine for A")  # what the provider builds
    (first.private / "tiny.timing").write_bytes(b"timings")
    assert first.publish() == ["tiny.timing", "tiny_123_sm90.engine"]
    assert first.publish() == []  # nothing new
    shared_a = tmp_path / "cache" / "trt" / model_a[:24]
    assert sorted(p.name for p in shared_a.iterdir()) == ["tiny.timing", "tiny.timing.seal", "tiny_123_sm90.engine",
                                                           "tiny_123_sm90.engine.seal"]
    first.close()
    assert not first.private.exists()

    second = TrtCaches(trt, model_a, key)  # the next start gets the sealed files
    assert (second.private / "tiny_123_sm90.engine").read_bytes() == b"engine for A"
    second.close()

    # another model's engine (and seal) moved into A's folder, and a forged engine: neither is handed on
    other = TrtCaches(trt, model_b, key)
    (other.private / "tiny_123_sm90.engine").write_bytes(b"engine for B")
    other.publish()
    other.close()
    shared_b = tmp_path / "cache" / "trt" / model_b[:24]
    for name in ("tiny_123_sm90.engine", "tiny_123_sm90.engine.seal"):
        shutil.copy(shared_b / name, shared_a / name)
    (shared_a / "tiny.timing").write_bytes(b"forged timings")
    third = TrtCaches(trt, model_a, key)
    assert sorted(p.name for p in third.private.iterdir()) == []
    assert not (shared_a / "tiny_123_sm90.engine").exists()  # deleted: the provider rebuilds it
    third.close()


def test_engine_gives_tensorrt_only_the_verified_copy_and_seals_what_it_builds(tiny_model, tmp_path, monkeypatch):
    """The Engine's wiring: the TensorRT provider (a stand-in here: it needs a GPU) is given the
    private folder, finds there only sealed engines, and what it writes is sealed for the next start."""
    import onnxruntime as ort

    import edgert.runtime.engine as engine_mod
    from edgert.runtime.profiles import resolve
    from edgert.runtime.providers import ProviderPlan

    real, given = ort.InferenceSession, []

    def session(model, sess_options=None, providers=None):  # type: ignore[no-untyped-def]
        folder = Path(dict(providers)["TensorrtExecutionProvider"]["trt_engine_cache_path"])
        given.append((folder, sorted(p.name for p in folder.iterdir())))
        if not given[-1][1]:
            (folder / "tiny_1_sm90.engine").write_bytes(b"built engine")  # what TensorRT writes on a build
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(engine_mod.ort, "InferenceSession", session)
    monkeypatch.setattr(engine_mod, "plan", lambda req: ProviderPlan(
        list(req), ["TensorrtExecutionProvider", "CPUExecutionProvider"], {}))
    prof = resolve("x86-nvidia", tmp_path / "cache")
    m = load_manifest(tiny_model)

    def engine() -> Engine:
        return Engine(m, providers=list(prof.providers), provider_options=prof.provider_options)

    first = engine()
    shared = tmp_path / "cache" / "trt" / m.sha256[:24]
    assert given[0][0] != shared and given[0][1] == []
    assert (shared / "tiny_1_sm90.engine").read_bytes() == b"built engine"
    assert _steer(first) == pytest.approx(0.25)
    engine()
    assert given[1][1] == ["tiny_1_sm90.engine"]  # the sealed engine is handed on
    (shared / "tiny_1_sm90.engine").write_bytes(b"evil engine")  # replaced in the shared folder
    third = engine()
    assert given[2][1] == [], "a replaced engine reached TensorRT"
    assert (shared / "tiny_1_sm90.engine").read_bytes() == b"built engine"  # rebuilt and sealed again
    assert _steer(third) == pytest.approx(0.25)


@pytest.mark.parametrize("planted", ["fifo", "symlink", "folder"])
def test_a_fifo_link_or_folder_at_the_cached_graphs_name_neither_hangs_nor_stops_the_engine(tmp_path, planted):
    """Whoever can write the cache folder plants something at the graph's name: the engine must
    neither block on it (a FIFO), read through it (a link to any file), nor fail to start."""
    cache = tmp_path / "cache"
    a = _model(tmp_path / "a", 0.5)
    assert _steer(_cpu(a, cache)) == pytest.approx(0.25)
    graph = next(f for f in cache.glob(f"{a.sha256[:24]}*") if not f.name.endswith(".seal"))
    graph.unlink()
    if planted == "fifo":
        os.mkfifo(graph)
    elif planted == "symlink":
        (tmp_path / "elsewhere.onnx").write_bytes(b"\0" * 64)
        graph.symlink_to(tmp_path / "elsewhere.onnx")
    else:
        graph.mkdir()
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(eng=_cpu(a, cache)), daemon=True)
    t.start()
    t.join(120)  # a bound for a hung test only: a blocking open would never return
    assert not t.is_alive(), f"the engine blocked on a {planted} at the cached graph's name"
    eng = result["eng"]
    assert not eng.cache_hit and _steer(eng) == pytest.approx(0.25)  # type: ignore[attr-defined]
