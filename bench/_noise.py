"""The machine's own jitter, as baselines for a kernel's tail (p99/p50).

A kernel's tail is its own only beyond what the machine does to any work of the same length. Two
baselines, both measured in the benchmark's own run:

- `interruptions()`: how often, and for how long, each core is taken from a thread that never
  blocks (timer ticks, interrupts, a hypervisor running someone else). A thread reads the clock
  in a tight loop pinned to each core in turn; any step longer than `gap_ns` is time it lost.
- `FixedWork`: pure arithmetic (no memory traffic) calibrated to a given duration, on 1 or N
  threads (a fork/join like `prange`'s). Its p99/p50 is the tail that the interruptions alone
  give work of that length, in the same run and the same interleaving as the kernel.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from numba import prange

from edgert.bench.report import time_ns
from edgert.kernels.jitcache import njit  # cached under the user cache, never beside the installed sources


def interruptions(seconds_per_core: float = 0.5, gap_ns: int = 5_000) -> dict[str, dict[str, float]]:
    """Per core: gaps longer than `gap_ns` per second, % of time lost, gap p50/p99/max in us."""
    clock = time.perf_counter_ns
    before = os.sched_getaffinity(0)
    out: dict[str, dict[str, float]] = {}
    try:
        for core in sorted(before):
            os.sched_setaffinity(0, {core})
            gaps: list[int] = []
            prev = start = clock()
            end = start + int(seconds_per_core * 1e9)
            while prev < end:
                t = clock()
                if t - prev > gap_ns:
                    gaps.append(t - prev)
                prev = t
            g = np.asarray(gaps, dtype=np.float64) / 1e3
            span_s = (prev - start) / 1e9
            out[f"cpu{core}"] = {
                "per_s": round(len(g) / span_s, 1),
                "lost_pct": round(float(g.sum()) / (span_s * 1e4), 3),
                "p50_us": round(float(np.median(g)), 1) if len(g) else 0.0,
                "p99_us": round(float(np.percentile(g, 99)), 1) if len(g) else 0.0,
                "max_us": round(float(g.max()), 1) if len(g) else 0.0,
            }
    finally:
        os.sched_setaffinity(0, before)
    return out


def interruptions_line(stats: dict[str, dict[str, float]], gap_ns: int = 5_000) -> str:
    """The report's note for `interruptions()`'s result (measured with the same `gap_ns`)."""
    per_core = "; ".join(f"{k}: {v['per_s']:.0f}/s, {v['lost_pct']:.2f} % lost, gap p50 {v['p50_us']:.0f} us, "
                         f"p99 {v['p99_us']:.0f} us, max {v['max_us']:.0f} us" for k, v in stats.items())
    return (f"machine jitter (a clock-reading loop pinned to each core; gaps > {gap_ns / 1000:g} us are time the core "
            f"was taken away): {per_core}")


@njit(nogil=True, cache=True)
def _spin(n: int) -> float:
    x = 1.0
    for _ in range(n):
        x = x * 1.0000001 + 1e-9  # a dependent chain: LLVM can neither vectorise nor fold it
    return x


@njit(nogil=True, cache=True, parallel=True)
def _spin_parallel(n: int, parts: int) -> float:
    acc = np.zeros(parts)
    for p in prange(parts):
        acc[p] = _spin(n)
    return acc.sum()


class FixedWork:
    """Arithmetic that takes `target_ns` (median) on `threads` threads: a jitter baseline."""

    def __init__(self, target_ns: float, threads: int = 1, calls: int = 101) -> None:
        self.threads = threads
        self.n = 20_000
        for _ in range(3):  # calibrate on the median of `calls` calls; a few rounds settle it within a few %
            p50 = float(np.median(time_ns(self, calls, warmup=3)))
            self.n = max(1, int(self.n * target_ns / p50))

    def __call__(self) -> Any:
        if self.threads > 1:
            return _spin_parallel(self.n, self.threads)
        return _spin(self.n)
