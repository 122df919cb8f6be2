"""Latency statistics: percentiles, the mergeable log histogram, command-stream jitter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.runtime.stats import LogHistogram, ipdv_ns, summarize_ns


def _latencies(seed: int, n: int) -> np.ndarray:
    """Lognormal around 2 ms with a heavy tail, in ns: the shape pipeline latencies have."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(mean=math.log(2e6), sigma=0.4, size=n)
    x[rng.random(n) < 0.01] *= 20  # 1 % stalls
    return x


def test_percentiles_of_a_known_distribution():
    s = summarize_ns(np.arange(1, 1001) * 1_000_000)  # 1..1000 ms
    assert s["n"] == 1000 and s["max_ms"] == 1000.0
    assert s["p50_ms"] == pytest.approx(500.5) and s["p90_ms"] == pytest.approx(900.1)
    assert s["p99_ms"] == pytest.approx(990.01) and s["p999_ms"] == pytest.approx(999.001)


def test_merged_histograms_equal_the_histogram_of_all_samples():
    parts = [_latencies(seed, n) for seed, n in ((1, 5000), (2, 300), (3, 12000))]
    merged = LogHistogram()
    for p in parts:
        h = LogHistogram()
        h.record(p)
        merged.merge(h)
    whole = LogHistogram()
    whole.record(np.concatenate(parts))
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.n == sum(len(p) for p in parts)


@pytest.mark.parametrize("q", [50, 90, 99, 99.9])
def test_histogram_percentiles_within_one_bucket_of_exact(q):
    x = _latencies(4, 20000)
    h = LogHistogram(per_decade=100)
    h.record(x)
    exact = float(np.percentile(x, q, method="inverted_cdf"))  # nearest rank, as the histogram counts
    ratio = h.percentile(q) / exact
    width = 10 ** (1 / h.per_decade)  # one bucket: 2.3 %
    assert 1 / width <= ratio <= width, (q, h.percentile(q), exact)


def test_histogram_edges_underflow_overflow_and_json_round_trip():
    h = LogHistogram(lo_ns=1e3, hi_ns=1e6, per_decade=10)
    h.record(np.array([1.0, 999.0, 1e3, 5e4, 1e6, 1e9]))
    assert h.counts[0] == 2 and h.counts[-1] == 2 and h.n == 6  # below lo, at/above hi
    assert h.percentile(0) == h.lo and h.percentile(100) == h.hi
    back = LogHistogram.from_dict(h.to_dict())
    assert np.array_equal(back.counts, h.counts)
    assert math.isnan(LogHistogram().percentile(50))


def test_histograms_with_different_buckets_refuse_to_merge():
    with pytest.raises(ValueError, match="same lo/hi/per_decade"):
        LogHistogram(per_decade=100).merge(LogHistogram(per_decade=50))
    with pytest.raises(ValueError, match="lo_ns < hi_ns"):
        LogHistogram(lo_ns=10, hi_ns=1)


def test_jitter_is_the_change_of_latency_whatever_the_pacing():
    capture = np.array([0, 33, 66, 100, 250]) * 1_000_000  # irregular arrivals
    latency = np.array([2, 2, 5, 3, 3]) * 1_000_000
    j = ipdv_ns(capture, capture + latency)
    assert j.tolist() == [0, 3_000_000, 2_000_000, 0]
    # a constant latency has no jitter, however the frames arrived
    assert not ipdv_ns(capture, capture + 7).any()
