"""Entry point of one stage process: `python -m runtime.stage_main STAGE RUN_DIR RUN_ID`.

The process names itself edgert-<stage> (ps, top), dies with its supervisor
(PR_SET_PDEATHSIG), leaves SIGINT to the supervisor (a terminal Ctrl-C reaches the
whole process group; the supervisor orders the shutdown) and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import setproctitle
import zmq

from runtime.config import PipelineConfig
from runtime.logs import setup_logging
from runtime.stage import StageContext, run_stage
from runtime.stages import stage_class
from runtime.transport import Endpoints

PR_SET_PDEATHSIG = 1


def _die_with_parent(supervisor_pid: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: rely on the supervisor's own shutdown
        return
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        sys.exit(f"edgert: supervisor {supervisor_pid} is gone; not starting")


def apply_affinity(cores: list[int] | None, log: logging.Logger) -> None:
    if cores:
        os.sched_setaffinity(0, cores)
        log.info("pinned to cores %s", cores)


def main(argv: list[str] | None = None) -> int:
    name, run_dir, run_id = (argv if argv is not None else sys.argv[1:])[:3]
    setproctitle.setproctitle(f"edgert-{name}")
    _die_with_parent(int(run_id.split(".")[0]))  # the run id starts with the supervisor's pid
    cfg = PipelineConfig.from_json((Path(run_dir) / "pipeline.json").read_text())
    setup_logging(cfg.pipeline.log_level)
    log = logging.getLogger(f"edgert.{name}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    apply_affinity(cfg.pipeline.affinity.get(name), log)
    ctx = zmq.Context()
    endpoints = Endpoints.for_run(cfg, run_id, run_dir)
    auth = None
    if endpoints.curve_dir:  # this process binds sockets too: only the run's own keys may connect
        from runtime.curve import start_authenticator

        auth = start_authenticator(ctx, endpoints.curve_dir)
    try:
        return run_stage(stage_class(name, cfg.camera.source)(StageContext(name, cfg, run_id, endpoints, ctx, stop)))
    finally:
        if auth is not None:
            auth.stop()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
