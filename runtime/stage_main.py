"""Entry point of one stage process: `python -m edgert.runtime.stage_main STAGE RUN_DIR RUN_ID [MODULE:CLASS]`.

MODULE:CLASS, given by the supervisor only (its `stage_classes`), runs that class instead of the
registry's (a benchmark's baseline stage in the same process topology).

The process names itself edgert-<stage> (top; ps adds "run <run id>"), dies with its supervisor
(PR_SET_PDEATHSIG), leaves SIGINT to the supervisor (a terminal Ctrl-C reaches the
whole process group; the supervisor orders the shutdown) and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import setproctitle
import zmq

from edgert.runtime.config import PipelineConfig
from edgert.runtime.logs import setup_logging
from edgert.runtime.node import node_entries, resolve_nodes
from edgert.runtime.signals import set_on_signal
from edgert.runtime.stage import StageContext, run_stage
from edgert.runtime.stages import stage_class
from edgert.runtime.transport import Endpoints

PR_SET_PDEATHSIG = 1
MANIFEST_PIN = "manifest.sha256"  # in the run dir, beside pipeline.json: written by the supervisor


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


def load_stage_class(target: str) -> type:
    """The class named "package.module:Class"."""
    module, _, cls = target.partition(":")
    if not module or not cls:
        raise ValueError(f"stage class {target!r}: expected 'package.module:Class'")
    return getattr(importlib.import_module(module), cls)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    name, run_dir, run_id = args[:3]
    target = args[3] if len(args) > 3 else ""
    # ps shows which run a stage belongs to (two pipelines on one host: a replay beside a live run);
    # comm, what top and `edgert record trigger` match, stays the bare name (cut at 15 characters)
    setproctitle.setproctitle(f"edgert-{name} run {run_id}")
    setproctitle.setthreadtitle(f"edgert-{name}")
    _die_with_parent(int(run_id.split(".")[0]))  # the run id starts with the supervisor's pid
    cfg = PipelineConfig.from_json((Path(run_dir) / "pipeline.json").read_text())
    if name in node_entries(cfg):  # a user node: its and the other nodes' output topics, as the supervisor has them
        resolve_nodes(cfg)
    try:  # the sha256 of the manifest the supervisor approved at start: a stage loads no other
        pin = (Path(run_dir) / MANIFEST_PIN).read_text().strip()
    except FileNotFoundError:
        sys.exit(f"edgert-{name}: no {MANIFEST_PIN} in {run_dir}; stages are started by the supervisor")
    setup_logging(cfg.pipeline.log_level)
    log = logging.getLogger(f"edgert.{name}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_on_signal(signal.SIGTERM, stop)  # not stop.set() in the handler: runtime/signals.py says why
    apply_affinity(cfg.pipeline.affinity.get(name), log)
    ctx = zmq.Context()
    endpoints = Endpoints.for_run(cfg, run_id, run_dir)
    auth = None
    if endpoints.curve_dir:  # this process binds sockets too: only the run's own keys may connect
        from edgert.runtime.curve import start_authenticator

        auth = start_authenticator(ctx, endpoints.curve_dir)
    try:
        cls = load_stage_class(target) if target else stage_class(name, cfg.camera.source)
        return run_stage(cls(StageContext(name, cfg, run_id, endpoints, ctx, stop, manifest_sha256=pin)))
    finally:
        if auth is not None:
            auth.stop()
        ctx.term()


if __name__ == "__main__":
    code = main()
    # Everything the stage owned is closed by now. Skip the interpreter's own finalization: its
    # garbage collection over numba's and onnxruntime's objects took 5 s and more on a loaded
    # 2-core machine, past the supervisor's STOP_TIMEOUT_S, which then killed a clean stage.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
