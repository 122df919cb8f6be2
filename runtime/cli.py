"""`edgert`: the command line.

    edgert run [CONFIG.toml] [--duration S] [--mode processes|threads] [--report FILE]
    edgert echo TOPIC [--run RUN_ID] [--count N]
    edgert doctor
    edgert bench NAME|all [--quick] [--out DIR]
    edgert bench pipeline [--scenario single-stream|multi-stream|server] [--cameras N] [--fps F]
                          [--arrival poisson|fixed] [--min-count N] [--min-duration S]
    edgert models list | info NAME | verify [NAME] | add PATH.onnx [--name N] | keygen | sign NAME --key K
    edgert infer --model PATH.onnx|MODEL_DIR --input IN.npz|IN.npy --output OUT.npz
    edgert sim --scenario NAME [--added-latency-ms X] [--drop-rate P] | sim list | sim sweep --out DIR
    edgert replay FILE.mcap [--speed 1|max]      edgert record list [DIR] | trigger
    edgert fleet export CLIP... --to REGION | prune | audit verify | keygen REGION | encrypt | decrypt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, load
from edgert.runtime.logs import setup_logging
from edgert.runtime.manifest import ModelError

log = logging.getLogger("edgert")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args.config)  # config errors first, before the heavy imports
    from edgert.runtime.supervisor import StageFailed, Supervisor, dump_json, format_summary, install_signal_handlers

    setup_logging(cfg.pipeline.log_level)
    sup = Supervisor(cfg, duration_s=args.duration, mode=args.mode)
    install_signal_handlers(sup)
    try:
        summary = sup.run()
    except StageFailed as e:
        log.error("%s", e)
        return 1
    print(format_summary(summary), flush=True)
    if args.report:
        dump_json(summary, args.report)
        print(f"  report: {args.report}")
    bad = summary["leaked_segments"] or any(s["given_up"] for s in summary["stages"].values())
    return 1 if bad else 0


def cmd_echo(args: argparse.Namespace) -> int:
    """Print a live topic as JSON lines, like the topic tools of robotics stacks."""
    import zmq

    from edgert.runtime import shm, wire
    from edgert.runtime.config import PipelineConfig
    from edgert.runtime.topics import topic
    from edgert.runtime.transport import Endpoints, subscriber

    if topic(args.topic).bound_by_subscriber:
        print(f"edgert: error: {args.topic!r} is read by the supervisor, which binds its socket; echo would "
              "take that socket over. Its counters are in the run summary.", file=sys.stderr)
        return 2
    runs = [(d, rid) for d, rid, alive in shm.run_dirs()
            if alive and (d / "pipeline.json").is_file() and (args.run is None or f".{args.run}." in d.name)]
    if not runs:
        print("edgert: error: no running pipeline found; start one with `edgert run`", file=sys.stderr)
        return 1
    run_dir, run_id = runs[-1]
    cfg = PipelineConfig.from_json((run_dir / "pipeline.json").read_text())
    if cfg.pipeline.mode == "threads":
        print("edgert: error: a threads-mode pipeline uses inproc:// sockets, visible only inside its process",
              file=sys.stderr)
        return 1
    ctx = zmq.Context()
    sock = subscriber(ctx, Endpoints.for_run(cfg, run_id, run_dir), args.topic)
    n = 0
    try:
        while args.count == 0 or n < args.count:
            if not sock.poll(1000):
                continue
            try:
                rec = wire.decode(sock.recv())
            except wire.WireError as e:
                print(json.dumps({"rejected": str(e)}), flush=True)
                continue
            print(json.dumps(wire.to_dict(rec)), flush=True)
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine offers and what the provider policy would pick."""
    import numba
    import onnxruntime as ort

    from edgert.runtime.providers import PREFERENCE, plan

    p = plan(["auto"])
    chosen, skipped = p.chosen, p.skipped
    print(f"python {sys.version.split()[0]}, numba {numba.__version__}, onnxruntime {ort.__version__} "
          f"({ort.get_device()} build)")
    print(f"providers in this build: {', '.join(ort.get_available_providers())}")
    for name in PREFERENCE:
        mark = "try " if name in chosen else "skip"
        print(f"  {mark} {name}" + (f": {skipped[name]}" if name in skipped else ""))
    print(f"the policy would try, in order: {', '.join(chosen)}")
    if args.profile:
        from edgert.runtime.config import DEFAULT_CONFIG, load
        from edgert.runtime.profiles import resolve

        prof = resolve(args.profile, load(DEFAULT_CONFIG).cache_dir())
        tried = plan(list(prof.providers))
        print(f"profile {args.profile}: providers {', '.join(prof.providers)} -> here: {', '.join(tried.chosen)}")
        for name, opts in prof.provider_options.items():
            print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    return 0


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
    try:
        report = run_one(args.name, args.quick, **opts)
    except ValueError as e:  # a bad option value: the message names it and the fix
        print(f"edgert: error: {e}", file=sys.stderr)
        return 2
    for path in report.write(args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgert", description="Edge inference runtime for in-vehicle computers.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline from its TOML config")
    r.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG),
                   help=f"pipeline config (default: the simulator closed loop, {DEFAULT_CONFIG.name})")
    r.add_argument("--duration", type=float, default=None, help="seconds to run (default: config, 0 = until stopped)")
    r.add_argument("--mode", choices=("processes", "threads"), default=None, help="override pipeline.mode")
    r.add_argument("--report", help="also write the summary as JSON to this file")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("echo", help="print a live topic of a running pipeline as JSON lines")
    e.add_argument("topic")
    e.add_argument("--run", help="run id (default: the newest running pipeline)")
    e.add_argument("--count", type=int, default=0, help="stop after N messages (0 = until Ctrl-C)")
    e.set_defaults(func=cmd_echo)
    d = sub.add_parser("doctor", help="show the accelerators present and what the provider policy picks")
    d.add_argument("--profile", choices=("auto", "cpu", "x86-nvidia", "jetson-orin"),
                   help="also show what this device profile would ask for, and get here")
    d.set_defaults(func=cmd_doctor)
    from edgert.runtime import cli_fleet, cli_models, cli_replay, cli_sim

    cli_models.add_commands(sub)  # models list|info|verify|add|keygen|sign, infer
    cli_sim.add_commands(sub)  # sim --scenario NAME | list | sweep
    cli_fleet.add_commands(sub)  # fleet export|prune|audit|keygen|encrypt|decrypt
    cli_replay.add_commands(sub)  # replay FILE.mcap, record list|trigger
    b = sub.add_parser("bench", help="run a benchmark against its same-run baselines; write JSON, Markdown, PNG")
    b.add_argument("name", help="a benchmark in bench/, or 'all'")
    b.add_argument("--quick", action="store_true", help="a short run (CI); the default is long enough for p99.9")
    b.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    b.add_argument("--scenario", choices=("single-stream", "multi-stream", "server"),
                   help="pipeline: LoadGen scenario (default single-stream)")
    b.add_argument("--cameras", type=int, help="pipeline multi-stream: cameras in lock-step (default 4)")
    b.add_argument("--fps", type=float, help="pipeline: frame rate, or the cap in single-stream (default 30)")
    b.add_argument("--arrival", choices=("poisson", "fixed"), help="pipeline server: arrival process (default poisson)")
    b.add_argument("--min-count", dest="min_count", type=int, help="pipeline: commands per run at least "
                   "(default 1024, quick 60)")
    b.add_argument("--min-duration", dest="min_duration_s", type=float, help="pipeline: seconds per run at least "
                   "(default 60, quick 2)")
    b.add_argument("--compare-zmq", dest="compare_zmq", action="store_true", default=None,  # None: not given
                   help="pipeline: also run edgert with ZeroMQ-only hops (pipeline.mailbox = false) "
                   "in the same rounds")
    b.set_defaults(func=cmd_bench)
    args = ap.parse_args(argv)
    setup_logging("INFO")
    try:
        return args.func(args)
    except (ConfigError, ModelError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) else e
        print(f"edgert: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
