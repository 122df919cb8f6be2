"""The shared benchmark report: statistics, ratios from the same run, and the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgert.bench.report import Report, blocked_ns, interleaved_ns, time_ns
from edgert.runtime.stats import Samples, summarize_ns


def test_summarize_percentiles_known_distribution():
    x = np.arange(1, 100_001) * 1000  # 1..100000 us in ns
    s = summarize_ns(x)
    assert s["n"] == 100_000
    assert s["p50_ms"] == pytest.approx(50.0005, rel=1e-4)
    assert s["p99_ms"] == pytest.approx(99.001, rel=1e-4)
    assert s["p999_ms"] == pytest.approx(99.9001, rel=1e-4)
    assert s["max_ms"] == 100.0 and s["mean_ms"] == pytest.approx(50.0005)
    assert summarize_ns(np.array([]))["n"] == 0


def test_samples_grow_without_losing_rows():
    s = Samples(width=2, capacity=4)
    for i in range(100):
        s.append(np.array([i, -i]))
    assert s.n == 100 and s.data[99].tolist() == [99, -99] and s.data[0].tolist() == [0, 0]


def test_report_ratios_and_files(tmp_path):
    r = Report("unit", {"k": 1})
    r.add("fast", np.full(100, 1_000_000))
    r.add("slow", np.full(100, 3_000_000))
    assert r.ratio("slow", "fast") == pytest.approx(3.0)
    assert r.ratio("slow", "fast", p99=True) == pytest.approx(3.0)
    paths = r.write(tmp_path)
    data = json.loads(paths[0].read_text())
    assert set(data) >= {"benchmark", "machine", "config", "cases", "ratios"}
    assert set(data["cases"]["fast"]) == {"n", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"}
    assert data["ratios"] == {"slow/fast": 3.0, "slow/fast_p99": 3.0}
    assert {"cpu", "cores", "python", "numpy", "numba", "onnxruntime", "providers", "gpu"} <= set(data["machine"])
    assert "| slow/fast | 3.000 |" in paths[1].read_text()
    assert "| mean ms | p99/p50 |" in paths[1].read_text() and "| 3.0000 | 1.00 |" in paths[1].read_text()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timers_return_one_sample_per_call():
    calls = []
    t = time_ns(lambda: calls.append(1), n=20, warmup=3)
    assert t.shape == (20,) and (t >= 0).all() and len(calls) == 23
    d = interleaved_ns({"a": lambda: None, "b": lambda: None}, n=5, warmup=1)
    assert set(d) == {"a", "b"} and all(v.shape == (5,) for v in d.values())


def test_blocked_timer_runs_each_case_in_blocks_in_turn():
    order: list[str] = []
    d = blocked_ns({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, n=7, block=3, warmup=1,
                   block_warmup=1)
    assert all(v.shape == (7,) and (v >= 0).all() for v in d.values())
    # warm-up once each, then blocks of 3, 3 and the last 1 (each after one untimed call), the cases in turn
    assert "".join(order) == "ab" + "aaaabbbb" + "aaaabbbb" + "aabb"
