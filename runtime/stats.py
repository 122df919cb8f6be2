"""Latency statistics in the one shape every report uses (see docs/benchmarks.md)."""

from __future__ import annotations

import bisect
import math
from typing import Any

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
    """A float64 row buffer that grows by doubling (amortised, off the pipeline's path).

    With `limit`, it grows to `limit` rows and then keeps the newest `limit` (a ring), so a run
    of any length holds bounded memory; `n` still counts every row appended."""

    def __init__(self, width: int = 1, capacity: int = 4096, limit: int | None = None) -> None:
        self.limit = limit
        self._buf = np.empty((capacity if limit is None else min(capacity, limit), width), dtype=np.float64)
        self.n = 0

    def append(self, row: np.ndarray | float) -> None:
        i = self.n if self.limit is None else self.n % self.limit
        if i == len(self._buf) and (self.limit is None or len(self._buf) < self.limit):
            grown = 2 * len(self._buf) if self.limit is None else min(2 * len(self._buf), self.limit)
            self._buf = np.concatenate([self._buf, np.empty((grown - len(self._buf), self._buf.shape[1]))])
        self._buf[i] = row
        self.n += 1

    @property
    def data(self) -> np.ndarray:
        """The rows held, oldest first: all of them, or with `limit` the newest `limit`."""
        if self.limit is None or self.n <= self.limit:
            return self._buf[: self.n]
        i = self.n % self.limit
        return np.concatenate([self._buf[i:], self._buf[:i]])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 counted over every row ever appended; a ValueError if the ring has
        already overwritten some of them (raise `limit`)."""
        first = self.n - len(self.data)
        if not first <= start <= stop <= self.n:
            raise ValueError(f"rows {start}..{stop} requested, rows {first}..{self.n} held (the newest {self.limit})")
        return self.data[start - first: stop - first]


class LatencyStats:
    """The `summarize_ns` numbers of a stream of samples in fixed memory, whatever its length:
    n, mean and max exact; percentiles from a `LogHistogram`, so within half a bucket (1.2 %
    at the default 100 buckets a decade) of the exact value between its lo_ns and hi_ns."""

    def __init__(self, lo_ns: float = 1e3, hi_ns: float = 1e11, per_decade: int = 100) -> None:
        self.hist = LogHistogram(lo_ns, hi_ns, per_decade)
        self.n = 0
        self.sum = 0.0
        self.max = -math.inf

    def record(self, x_ns: float) -> None:
        self.hist.record_one(x_ns)
        self.n += 1
        self.sum += x_ns
        if x_ns > self.max:
            self.max = x_ns

    def summary(self) -> dict[str, float]:
        """In summarize_ns's shape and units (ms)."""
        if not self.n:
            return summarize_ns(np.empty(0))
        return {"n": self.n, **{k: self.hist.percentile(q) / 1e6 for k, q in PERCENTILES.items()},
                "max_ms": self.max / 1e6, "mean_ms": self.sum / self.n / 1e6}


class LogHistogram:
    """Latency counts in log-spaced buckets: mergeable across stages, runs and processes.

    Bucket i >= 1 holds [lo * r^(i-1), lo * r^i) with r = 10^(1/per_decade) (100 per decade:
    buckets 2.3 % wide); bucket 0 holds everything below `lo`, the last everything from `hi`
    on. Two histograms with the same layout merge by adding counts, so the histogram of
    concatenated samples is the sum of the parts, and a percentile read from it is within one
    bucket of the exact one. (hdrhistogram does the same for integers with a C extension; this
    one is a few NumPy lines and records whole arrays at once.)
    """

    def __init__(self, lo_ns: float = 1e3, hi_ns: float = 1e11, per_decade: int = 100) -> None:
        if not 0 < lo_ns < hi_ns or per_decade < 1:
            raise ValueError(f"LogHistogram: need 0 < lo_ns < hi_ns and per_decade >= 1, got {lo_ns}, {hi_ns}, "
                             f"{per_decade}")
        self.lo, self.hi, self.per_decade = float(lo_ns), float(hi_ns), int(per_decade)
        n_log = int(math.ceil(math.log10(self.hi / self.lo) * per_decade))
        self.edges = self.lo * 10.0 ** (np.arange(n_log + 1) / per_decade)  # ns; bucket i is [edges[i-1], edges[i])
        self._edges = self.edges.tolist()  # for record_one: bisect on a list beats NumPy on one value
        self.counts = np.zeros(n_log + 2, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def record(self, samples_ns: np.ndarray | float) -> None:
        x = np.asarray(samples_ns, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(self.edges, x, side="right")  # 0 below lo, len(edges) at or above hi
        np.add.at(self.counts, idx, 1)

    def record_one(self, x_ns: float) -> None:
        """One sample (what `record` does for an array, without its per-call NumPy overhead)."""
        self.counts[bisect.bisect_right(self._edges, x_ns)] += 1

    def _check_layout(self, other: LogHistogram) -> None:
        if (self.lo, self.hi, self.per_decade) != (other.lo, other.hi, other.per_decade):
            raise ValueError(f"cannot merge histograms with different buckets: {(self.lo, self.hi, self.per_decade)} "
                             f"vs {(other.lo, other.hi, other.per_decade)}; build both with the same lo/hi/per_decade")

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add `other`'s counts to this one (same layout); returns self."""
        self._check_layout(other)
        self.counts += other.counts
        return self

    def percentile(self, q: float) -> float:
        """The q-th percentile (nearest rank) in ns: the geometric middle of its bucket."""
        n = self.n
        if n == 0:
            return float("nan")
        rank = max(1, math.ceil(q / 100.0 * n))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i == 0:
            return self.lo
        if i >= len(self.edges):
            return self.hi
        return float(math.sqrt(self.edges[i - 1] * self.edges[i]))

    def to_dict(self) -> dict[str, object]:
        """Sparse JSON form: layout and the non-empty buckets."""
        nz = np.flatnonzero(self.counts)
        return {"lo_ns": self.lo, "hi_ns": self.hi, "per_decade": self.per_decade,
                "buckets": {str(int(i)): int(self.counts[i]) for i in nz}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogHistogram:
        h = cls(float(d["lo_ns"]), float(d["hi_ns"]), int(d["per_decade"]))
        for i, c in d["buckets"].items():
            h.counts[int(i)] = int(c)
        return h


def ipdv_ns(capture_ns: np.ndarray, sent_ns: np.ndarray) -> np.ndarray:
    """Jitter of a command stream: |change in latency| between consecutive commands (RFC 3393 IPDV).

    Equal to |interval between commands - interval between their frames|, so it measures what the
    pipeline adds whatever the source's pacing (fixed, Poisson or closed loop).
    """
    lat = np.asarray(sent_ns, np.int64) - np.asarray(capture_ns, np.int64)
    return np.abs(np.diff(lat))
