"""`edgert bench NAME|all`: which benchmarks there are, running one, and `all`'s combined report.

A benchmark is a public module of bench/ with `run(quick=...) -> Report` (helpers are private
modules, `_name.py`, and report.py). `pipeline` runs one scenario per report; `all` runs each
benchmark and every pipeline scenario in turn with a progress bar, writes each report's files,
and then DIR/index.md: the machine once, then every report's tables and plots. A benchmark
that fails does not stop the others; the index says it failed and why.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from edgert.bench.report import Report, write_index
from edgert.runtime.errors import MissingExtra
from edgert.runtime.paths import bundled
from edgert.runtime.procenv import OPENCV_NO_SPIN

log = logging.getLogger("edgert.bench")
# OpenCV's thread pool busy-waits after each parallel call (its defaults: 2,000 rounds per
# worker, 10,000 for the caller) before sleeping. In a benchmark that interleaves cv2 baselines
# with our kernels, the spinning threads hold the 2-core machine's cores while the next case
# runs. Two back-to-back `bench preprocess` runs, spinning on / off (docs/kernels.md): the
# two-thread kernel's p99 on fresh 1080p frames 1.18 / 0.36 ms and on NV12 4.34 / 0.53 ms,
# and blobFromImage's own p50 on fresh frames 1.03 / 0.72 ms. OpenCV reads these variables
# when it loads (setting them after `import cv2` changed nothing, measured), so they are set
# before any benchmark module is imported. Stage processes get them from the supervisor
# anyway (runtime/procenv.py); this is for the benchmark's own process.
_opencv: dict[str, Any] = {}  # what quiet_opencv_pool found and did, for the reports


def quiet_opencv_pool() -> None:
    """Turn OpenCV's busy-waiting off for this process and the stage processes it starts; a
    value the user set is kept. Where cv2 is already loaded without them, this process keeps
    OpenCV's default (said once, and recorded)."""
    if _opencv:
        return
    late = "cv2" in sys.modules and any(k not in os.environ for k in OPENCV_NO_SPIN)
    for k, v in OPENCV_NO_SPIN.items():
        os.environ.setdefault(k, v)
    _opencv.update(env={k: os.environ[k] for k in OPENCV_NO_SPIN}, in_this_process=not late)
    if late:
        log.warning("OpenCV was loaded before edgert bench could turn its busy-waiting thread pool off: it "
                    "stays on in this process (stage processes started from here get %s)", _opencv["env"])


def opencv_pool() -> dict[str, Any]:
    """For a report's config: OpenCV's pool settings and whether this process runs with them."""
    env = {k: os.environ.get(k, "default") for k in OPENCV_NO_SPIN}
    return {"env": env, "in_this_process": _opencv.get("in_this_process", "cv2" not in sys.modules)}


BENCH_EXTRA = ("matplotlib", "psutil", "tqdm")  # pyproject's `bench` extra: plots, stage CPU/RSS, progress bars


def require_bench_extra() -> None:
    """Say which `bench` extra packages are missing, and how to add them, before a run starts."""
    missing = [m for m in BENCH_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"benchmarks need {', '.join(missing)}, from the `bench` extra, which this install "
                           "lacks; install it: pip install 'edgert[bench]'")


PIPELINE_OPTIONS = ("scenario", "cameras", "fps", "arrival", "min_count", "min_duration_s", "compare_zmq", "video")


def benchmarks() -> list[str]:
    """The benchmark names, from the public modules of bench/."""
    here = bundled(__package__ or "edgert.bench")
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem != "report")


def run_one(name: str, quick: bool, **pipeline_opts: Any) -> Report:
    """One benchmark's report (for `pipeline`, one scenario: pipeline_opts["scenario"])."""
    quiet_opencv_pool()

    require_bench_extra()
    module = importlib.import_module(f"edgert.bench.{name}")
    if name == "pipeline":
        return module.run(quick=quick, **pipeline_opts)
    return module.run(quick=quick)


def steps() -> list[tuple[str, dict[str, Any]]]:
    """What `all` runs, in order: every benchmark, the pipeline once per scenario."""
    from edgert.bench.pipeline import SCENARIOS

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
    require_bench_extra()
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
