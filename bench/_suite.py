"""`edgert bench NAME|all`: which benchmarks there are, running one, and `all`'s combined report.

A benchmark is a public module of bench/ with `run(quick=...) -> Report` (helpers are private
modules, `_name.py`, and report.py). `pipeline` runs one scenario per report; `all` runs each
benchmark and every pipeline scenario in turn with a progress bar, writes each report's files,
and then DIR/index.md: the machine once, then every report's tables and plots. A benchmark
that fails does not stop the others; the index says it failed and why.
"""

from __future__ import annotations

import importlib
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from bench.report import Report, write_index

log = logging.getLogger("edgert.bench")
# OpenCV's thread pool busy-waits after each parallel call (its defaults: 2,000 rounds per
# worker, 10,000 for the caller) before sleeping. In a benchmark that interleaves cv2 baselines
# with our kernels, those spinning workers hold both cores of the 2-core machine while the next
# case runs: the two-thread fused kernel right after blobFromImage had p99 4.3 ms against 0.13
# without (p50 0.095 against 0.089), and blobFromImage's own p50 did not move (0.666-0.669 ms
# either way). Read when the pool starts (its first parallel call), so set before any benchmark.
OPENCV_NO_SPIN = {"OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "0", "OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "0"}


def quiet_opencv_pool() -> dict[str, str]:
    """Turn OpenCV's busy-waiting off for this process and the stages it starts (a value the
    user set is kept); returns what is in effect, for the report."""
    for k, v in OPENCV_NO_SPIN.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in OPENCV_NO_SPIN}


PIPELINE_OPTIONS = ("scenario", "cameras", "fps", "arrival", "min_count", "min_duration_s", "spin_us", "warm_us",
                    "compare_zmq")


def benchmarks() -> list[str]:
    """The benchmark names, from the public modules of bench/."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem != "report")


def run_one(name: str, quick: bool, **pipeline_opts: Any) -> Report:
    """One benchmark's report (for `pipeline`, one scenario: pipeline_opts["scenario"])."""
    quiet_opencv_pool()
    module = importlib.import_module(f"bench.{name}")
    if name == "pipeline":
        return module.run(quick=quick, **pipeline_opts)
    return module.run(quick=quick)


def steps() -> list[tuple[str, dict[str, Any]]]:
    """What `all` runs, in order: every benchmark, the pipeline once per scenario."""
    from bench.pipeline import SCENARIOS

    out: list[tuple[str, dict[str, Any]]] = []
    for name in benchmarks():
        if name == "pipeline":
            out += [(name, {"scenario": s}) for s in SCENARIOS]
        else:
            out.append((name, {}))
    return out


def run_all(out_dir: str | Path, quick: bool, progress: bool = True,
            only: list[tuple[str, dict[str, Any]]] | None = None) -> tuple[Path, list[str]]:
    """Run every step, write each report and DIR/index.md; return (index path, failed steps)."""
    from tqdm import tqdm

    todo = only if only is not None else steps()
    reports: list[Report] = []
    failed: list[str] = []
    bar = tqdm(todo, desc="bench all", unit="benchmark", disable=None if progress else True)
    for name, opts in bar:
        label = name + (f" {opts['scenario']}" if "scenario" in opts else "")
        bar.set_postfix_str(label)
        try:
            rep = run_one(name, quick, **opts)
        except Exception as e:  # one broken benchmark must not cost the others' results
            log.error("benchmark %s failed: %s\n%s", label, e, traceback.format_exc())
            failed.append(f"{label}: {type(e).__name__}: {e}")
            continue
        rep.write(out_dir)
        reports.append(rep)
    bar.close()
    return write_index(reports, out_dir, quick=quick, failed=failed), failed
