"""`edgert run`: run a pipeline from its TOML config until its duration or a signal."""

from __future__ import annotations

import argparse
import logging

from edgert.runtime.config import DEFAULT_CONFIG, choices, load
from edgert.runtime.logs import setup_logging

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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("run", help="run a pipeline from its TOML config")
    r.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG),
                   help=f"pipeline config (default: the simulator closed loop, {DEFAULT_CONFIG.name})")
    r.add_argument("--duration", type=float, default=None, help="seconds to run (default: config, 0 = until stopped)")
    r.add_argument("--mode", choices=choices("pipeline.mode"), default=None, help="override pipeline.mode")
    r.add_argument("--report", help="also write the summary as JSON to this file")
    r.set_defaults(func=cmd_run)
