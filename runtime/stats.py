"""Latency statistics in the one shape every report uses (see docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np

PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


def summarize_ns(samples_ns: np.ndarray) -> dict[str, float]:
    """n, p50/p90/p99/p99.9, max and mean in milliseconds, from nanosecond samples."""
    x = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if x.size == 0:
        return {"n": 0, **{k: float("nan") for k in PERCENTILES}, "max_ms": float("nan"), "mean_ms": float("nan")}
    q = np.percentile(x, list(PERCENTILES.values()))
    return {"n": int(x.size), **{k: float(v) for k, v in zip(PERCENTILES, q)},
            "max_ms": float(x.max()), "mean_ms": float(x.mean())}


class Samples:
    """An append-only float64 buffer that grows by doubling (amortised, off the pipeline's path)."""

    def __init__(self, width: int = 1, capacity: int = 4096) -> None:
        self._buf = np.empty((capacity, width), dtype=np.float64)
        self.n = 0

    def append(self, row: np.ndarray | float) -> None:
        if self.n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.empty_like(self._buf)])
        self._buf[self.n] = row
        self.n += 1

    @property
    def data(self) -> np.ndarray:
        return self._buf[: self.n]
