"""bench/_noise.py: the jitter baselines a kernel's tail is judged against (no timing asserted)."""

from __future__ import annotations

import os

import numba

from edgert.bench._noise import FixedWork, interruptions, interruptions_line


def test_interruptions_probes_every_core_and_restores_affinity():
    before = os.sched_getaffinity(0)
    stats = interruptions(seconds_per_core=0.02)
    assert os.sched_getaffinity(0) == before
    assert set(stats) == {f"cpu{c}" for c in before}
    for s in stats.values():
        assert set(s) == {"per_s", "lost_pct", "p50_us", "p99_us", "max_us"}
        assert s["per_s"] >= 0 and 0 <= s["lost_pct"] <= 100 and s["p50_us"] <= s["p99_us"] <= s["max_us"]
    assert "cpu" in interruptions_line(stats)


def test_fixed_work_scales_with_its_target_on_one_or_more_threads():
    short, long = FixedWork(20_000), FixedWork(400_000)
    assert long.n > 4 * short.n  # 20x the target: far more iterations, whatever the machine's noise
    assert short() == short()  # deterministic arithmetic, returns a float
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    par = FixedWork(100_000, threads)
    assert par.threads == threads and par.n >= 1 and isinstance(par(), float)
