"""`edgert bench infer`: the engine (I/O binding) against bare `InferenceSession.run`, per variant.

The question (issue 5): does the engine add anything to the model's own time? Both sides use
the same model bytes and the same SessionOptions (threads, optimisation level, no spinning),
so the only difference is the call path: bare `sess.run(None, {name: ndarray})`, which
allocates fresh outputs each call, against `run_with_iobinding` on preallocated buffers.
All cases are interleaved round-robin in one run, so a noisy spell on a shared machine hits
them alike. Ratios `engine_V/bare_V` at p50 and p99 must be <= 1.05.

Cold start: a fresh session plus its first inference, without and with ONNX Runtime's
optimised-model cache (`SessionOptions.optimized_model_filepath` written once, then loaded
with graph optimisations off). Measured in this process, so library loading is excluded.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgert.bench.report import Report, interleaved_ns
from edgert.runtime.deviceio import CUDA_PROVIDERS, GRAPH_OPTION
from edgert.runtime.engine import Engine, session_options
from edgert.runtime.manifest import ModelManifest, load_manifest
from edgert.runtime.providers import plan
from edgert.runtime.zoo import ZOO

VARIANTS = ("pilotnet", "pilotnet-fp16", "pilotnet-int8")
THREADS = 1  # the infer stage's default: one pinned core


def _short(variant: str) -> str:
    return variant.replace("pilotnet-", "").replace("pilotnet", "fp32")


def _inputs(m: ModelManifest, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in m.inputs}


def _cold_ns(make_session, inputs: dict[str, np.ndarray], n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty(n, np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        sess = make_session()
        sess.run(None, inputs)
        out[i] = time.perf_counter_ns() - t0
        del sess
    return out


def _device_cases(fns: dict, m: ModelManifest, prov: str, tag: str, x: dict[str, np.ndarray],
                  notes: list[str]) -> list:
    """`device_TAG`: the engine's device binding (host-to-device copy + run + read-back);
    `graph_TAG`: the same replaying a CUDA graph (CUDA provider only)."""
    keep = []
    for case, graph in ((f"device_{tag}", "0"), (f"graph_{tag}", "1")):
        eng = Engine(m, providers=[prov], intra_op_threads=THREADS,
                     provider_options={prov: {GRAPH_OPTION[prov]: graph}})
        if graph == "1" and not eng.cuda_graph:
            notes.append(f"{case}: no CUDA graph for this model (not every node runs on {prov}); left out")
            continue
        io = eng.bind_device()
        for name, arr in x.items():
            io.load(name, arr)
        io.run()  # a graph is captured here, before timing

        def step(io=io, x=x) -> None:  # type: ignore[no-untyped-def]
            for name, arr in x.items():
                io.load(name, arr)
            io.run()
        fns[case] = step
        keep += [eng, io]
    return keep


def run(quick: bool = False, n: int | None = None, cold_n: int | None = None,
        variants: tuple[str, ...] = VARIANTS, zoo: Path = ZOO) -> Report:
    """Warm latency (bare vs engine, interleaved) and cold start (with and without cache) per variant."""
    n = n or int(os.environ.get("EDGERT_BENCH_N", 1000 if quick else 20000))
    cold_n = cold_n or (5 if quick else 20)
    pl = plan(["auto"])
    providers = pl.chosen
    rep = Report("infer", {"n": n, "cold_n": cold_n, "variants": list(variants), "providers": providers,
                           "intra_op_threads": THREADS, "input": "random normal, the model's shape and dtype"})
    for prov, why in pl.skipped.items():
        if prov in CUDA_PROVIDERS:
            rep.notes.append(f"{prov} not measured: {why}")
    fns: dict[str, Callable[[], object]] = {}
    cold, keep = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            m = load_manifest(zoo / variant)
            data = m.read_verified()
            x = _inputs(m)
            for prov in providers:
                tag = f"{_short(variant)}_{prov.replace('ExecutionProvider', '').lower()}"
                eng = Engine(m, providers=[prov], intra_op_threads=THREADS)
                if eng.providers[0] != prov:
                    rep.notes.append(f"{tag}: {prov} did not initialise ({eng.provider_note}); skipped")
                    continue
                bare = ort.InferenceSession(data, sess_options=session_options(THREADS), providers=[prov])
                binding = eng.bind(x)
                keep += [eng, bare, binding]  # alive until the timing ends
                feed = dict(x)
                fns[f"bare_{tag}"] = (lambda s=bare, f=feed: s.run(None, f))  # type: ignore[misc]
                fns[f"engine_{tag}"] = (lambda e=eng, b=binding: e.run(b))  # type: ignore[misc]
                if eng.device != "cpu":  # on a GPU: tensors on the device, with and without a CUDA graph
                    keep += _device_cases(fns, m, prov, tag, x, rep.notes)
                # Same answer both ways, or the timing compares different work.
                got, want = eng.run(binding), bare.run(None, feed)
                for (k, v), w in zip(got.items(), want):
                    if not np.array_equal(v, w):
                        raise AssertionError(f"{tag}: engine output {k} differs from session.run")
                cache = Path(tmp) / f"{tag}.opt.onnx"
                ort.InferenceSession(data, sess_options=session_options(THREADS, save_to=cache), providers=[prov])
                cold[f"cold_{tag}"] = _cold_ns(
                    lambda d=data, p=prov: ort.InferenceSession(d, sess_options=session_options(THREADS),
                                                                providers=[p]),
                    feed, cold_n)
                cold[f"cold_cached_{tag}"] = _cold_ns(
                    lambda c=cache, p=prov: ort.InferenceSession(
                        str(c), sess_options=session_options(THREADS, optimize=False), providers=[p]), feed, cold_n)
        samples = interleaved_ns(fns, n, warmup=max(10, n // 20))
    for case, s in samples.items():
        rep.add(case, s)
    for case, s in cold.items():
        rep.add(case, s)
    for case in samples:
        if case.startswith("engine_"):
            tag = case[len("engine_"):]
            for p99 in (False, True):
                r = rep.ratio(case, f"bare_{tag}", p99=p99)
                if r > 1.05:
                    rep.notes.append(f"{case}/bare_{tag}{'_p99' if p99 else ''} = {r:.3f} exceeds the 1.05 target")
            rep.ratio(f"cold_cached_{tag}", f"cold_{tag}")
            if f"graph_{tag}" in samples:
                rep.ratio(f"graph_{tag}", f"device_{tag}")
                rep.ratio(f"device_{tag}", f"bare_{tag}")
    rep.notes.append("cold = new session from the verified bytes + first run, in a warm process; cold_cached = "
                     "the same from ORT's saved optimised model (graph optimisations off)")
    return rep
