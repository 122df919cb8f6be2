"""`edgert bench NAME|all`: run a benchmark against its same-run baselines; write JSON, Markdown, PNG."""

from __future__ import annotations

import argparse
import sys

from edgert.runtime.config import choices


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one benchmark (or `all`) and write NAME.json, NAME.md and NAME.png to --out (`all`: also index.md)."""
    from edgert.bench._suite import PIPELINE_OPTIONS, benchmarks, run_all, run_one

    names = benchmarks()
    opts = {k: getattr(args, k) for k in PIPELINE_OPTIONS if getattr(args, k) is not None}
    if args.name not in names and args.name != "all":
        print(f"edgert: error: no benchmark {args.name!r}; benchmarks: {', '.join(names) or 'none yet'}, all",
              file=sys.stderr)
        return 2
    if opts and args.name != "pipeline":
        print(f"edgert: error: --{next(iter(opts)).replace('_', '-')} applies to `edgert bench pipeline` only "
              f"(`all` runs every scenario with its defaults); remove it", file=sys.stderr)
        return 2
    if args.name == "all":
        index, failed = run_all(args.out, args.quick)
        print(index)
        for f in failed:
            print(f"edgert: error: benchmark {f}", file=sys.stderr)
        return 1 if failed else 0
    report = run_one(args.name, args.quick, **opts)  # a bad option value: UsageError/ConfigError, exit 2
    for path in report.write(args.out):
        print(path)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser("bench", help="run a benchmark against its same-run baselines; write JSON, Markdown, PNG")
    b.add_argument("name", help="a benchmark in bench/, or 'all'")
    b.add_argument("--quick", action="store_true", help="a short run (CI); the default is long enough for p99.9")
    b.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    # The scenarios are bench/pipeline.py's SCENARIOS, checked there (importing it here would slow
    # every command by a second): an unknown one is refused with the list.
    b.add_argument("--scenario", help="pipeline: LoadGen scenario, one of bench/pipeline.py's SCENARIOS "
                   "(default single-stream)")
    b.add_argument("--cameras", type=int, help="pipeline multi-stream: cameras in lock-step (default 4)")
    b.add_argument("--fps", type=float, help="pipeline: frame rate, or the cap in single-stream (default 30)")
    arrivals = [p for p in choices("camera.pacing") if p in ("fixed", "poisson")]  # the frames source's open loops
    b.add_argument("--arrival", choices=arrivals, help="pipeline server: arrival process (default poisson)")
    b.add_argument("--min-count", dest="min_count", type=int, help="pipeline: commands per run at least "
                   "(default 1024, quick 60)")
    b.add_argument("--min-duration", dest="min_duration_s", type=float, help="pipeline: seconds per run at least "
                   "(default 60, quick 2)")
    b.add_argument("--compare-zmq", dest="compare_zmq", action="store_true", default=None,  # None: not given
                   help="pipeline: also run edgert with ZeroMQ-only hops (pipeline.mailbox = false) "
                   "in the same rounds")
    b.add_argument("--video", help="pipeline single-stream: on this video file (camera.source = \"video\", looped), "
                   "with decode cost per frame and BGR against NV12 slots")
    b.set_defaults(func=cmd_bench)
