"""The supervisor: owns a pipeline run from start to a clean end.

Its lifecycle is explicit: `start()` creates the run's shared memory (the frame pools and
mailboxes the data-plane tables of runtime/topics.py and runtime/transport.py declare) and
socket directory, starts every stage (as processes named edgert-<stage>, or as threads) and
returns once all report ready; each `poll()` tells the camera to run, takes heartbeats,
restarts a dead stage with back-off (and gives up on one that keeps crashing), and says whether
the run goes on; `stop()` stops every stage, kills what does not stop, and removes the shared
memory and sockets whatever happened: no orphans, no leaks. `run()` is start, poll until the
duration ends or SIGINT/SIGTERM, stop. A caller that watches a run (bench, replay) drives
these itself and reads `counters()`, `telemetry` and `stage_pid()`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from edgert.runtime import shm, wire
from edgert.runtime.config import PipelineConfig
from edgert.runtime.errors import EdgertError
from edgert.runtime.framepool import FramePool
from edgert.runtime.mailbox import Mailbox
from edgert.runtime.node import node_entries, resolve_nodes
from edgert.runtime.procenv import stage_env
from edgert.runtime.signing import approved_manifest
from edgert.runtime.stage import INPUT_ENDED, RateLimitedLog, StageContext, run_stage
from edgert.runtime.stage_main import MANIFEST_PIN, load_stage_class
from edgert.runtime.stages import STAGE_NAMES, stage_class, stage_names
from edgert.runtime.telemetry import Telemetry
from edgert.runtime.topics import STREAMS, layout
from edgert.runtime.transport import Endpoints, Publisher, publisher, subscriber
from edgert.runtime.wire import MsgType, StageState, WireError

log = logging.getLogger("edgert.supervisor")

STOP_TIMEOUT_S = 5.0
HEARTBEAT_TIMEOUT_S = 2.0  # a stage alive but silent this long is hung: kill it, then restart it
MAX_RESTARTS = 3  # within RESTART_WINDOW_S: crashes days apart do not add up to giving up
RESTART_WINDOW_S = 60.0
BACKOFF_S = 0.5
HEARTBEAT_BATCH = 16  # heartbeats per stage one poll reads at most: a flood cannot hold the loop


class StageFailed(EdgertError, RuntimeError):
    """A stage could not start, or kept crashing; the message says which and why."""


class ProcessHandle:
    """A stage in its own process (`python -m edgert.runtime.stage_main`)."""

    def __init__(self, name: str, run_dir: Path, run_id: str, target: str = "") -> None:
        self.name, self.run_dir, self.run_id = name, run_dir, run_id
        self.target = target  # "module:Class" instead of the registry's class (Supervisor's stage_classes)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # The child inherits this thread's signal mask: SIGUSR1 (`edgert record trigger`) stays pending
        # until the stage that handles it unblocks it, instead of killing a process still starting up.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgert.runtime.stage_main", self.name,
                                          str(self.run_dir), self.run_id] + ([self.target] if self.target else []),
                                         env=stage_env())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exitcode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def join(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.kill()
            self.proc.wait()


class ThreadHandle:
    """A stage on a thread of the supervisor's process (threads mode, inproc:// sockets)."""

    def __init__(self, name: str, make_ctx: Any, target: str = "") -> None:
        self.name, self.make_ctx, self.target = name, make_ctx, target
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.code: int | None = None
        self.pid = None
        self.native_id: int | None = None  # the thread's id in the OS (its CPU time is per thread)

    def start(self) -> None:
        self.stop_event = threading.Event()
        self.code = None
        self.thread = threading.Thread(target=self._run, name=f"edgert-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        try:
            ctx = self.make_ctx(self.name, self.stop_event)
            cls = load_stage_class(self.target) if self.target else stage_class(self.name, ctx.config.camera.source)
            self.code = run_stage(cls(ctx))
        except Exception:
            log.exception("stage %s crashed", self.name)
            self.code = 1

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def exitcode(self) -> int | None:
        return None if self.alive() else self.code

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.alive()

    def kill(self) -> None:
        log.error("stage %s did not stop within %.0f s; a thread cannot be killed, abandoning it",
                  self.name, STOP_TIMEOUT_S)


@dataclass
class StageStatus:
    state: StageState = StageState.STARTING
    last_seen: float = 0.0
    counters: dict[str, int] | None = None  # of the current instance of the stage
    earlier: dict[str, int] | None = None  # summed over instances that died
    pid: int = 0
    restarts: int = 0  # over the whole run (reported)
    recent: list[float] | None = None  # when restarts happened, for the give-up budget
    given_up: bool = False
    restart_at: float = 0.0
    hung: int = 0  # instances killed for hanging: no heartbeat, or not ready within restart_timeout_s
    seen: tuple[StageState, float] | None = None  # the state _watch last saw, and since when
    silence_logged: float = 0.0  # threads mode: last_seen of the silence already reported (a thread is not killed)


class Supervisor:
    def __init__(self, config: PipelineConfig, duration_s: float | None = None, mode: str | None = None,
                 stage_classes: dict[str, str] | None = None) -> None:
        """`stage_classes` maps a stage name to a "module:Class" run in its place, in the same
        topology (benchmarks run their baseline stages this way, bench/_naive.py)."""
        self.cfg = config if mode is None else config.replace(pipeline={"mode": mode})
        self.stage_classes = dict(stage_classes or {})
        resolve_nodes(self.cfg)  # [[nodes]]: entry points import, outputs join the topic table (ConfigError if not)
        self.stage_classes.update({n: e for n, e in node_entries(self.cfg).items() if n not in self.stage_classes})
        names = stage_names(self.cfg)  # the recorder too, when enabled, and the [[nodes]]
        unknown = set(self.stage_classes) - set(names)
        if unknown:
            raise ValueError(f"stage_classes: unknown stage(s) {sorted(unknown)}; stages are {', '.join(names)}")
        self.duration_s = self.cfg.pipeline.duration_s if duration_s is None else duration_s
        self.mode = self.cfg.pipeline.mode
        self.run_id = shm.new_run_id()
        self.status = {name: StageStatus() for name in stage_names(self.cfg)}  # + recorder when enabled
        self.stop_requested = threading.Event()
        self.exit_reason = ""
        self.foreign_heartbeats = 0  # malformed, or not from a process this supervisor started (dropped)
        self._warn_foreign = RateLimitedLog(log)
        # the run's state, made by start() and released by stop()
        self.phase = "new"  # -> "starting" -> "running" -> "stopped"; a Supervisor runs once
        self.running = threading.Event()  # set once every stage is ready and poll() drives the run
        self.manifest_sha256 = ""
        self.pools: list[FramePool] = []
        self.mailboxes: list[Mailbox] = []
        self.handles: dict[str, ProcessHandle | ThreadHandle] = {}
        self.telemetry: Telemetry | None = None
        self.auth: Any = None
        self.zmq: zmq.Context | None = None
        self.run_dir: Path | None = None
        self.endpoints: Endpoints | None = None
        self.heartbeats: zmq.Socket | None = None
        self.pub: Publisher | None = None
        self.go = wire.new_message(MsgType.HEARTBEAT)
        self.go["stage"] = b"supervisor"
        self._run_lock: int | None = None
        self.ready_s = 0.0
        self.run_s = 0.0
        self.started_at: float | None = None
        self.polls = 0  # poll() calls while running
        self._end = math.inf
        self._last_go = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the pipeline to its end and return the summary (raises StageFailed at start-up)."""
        self.start()
        try:
            while self.poll():
                pass
        finally:
            summary = self.stop()
        return summary

    def start(self) -> None:
        """Create the run's resources, start every stage and return once all are ready. Raises
        StageFailed (or the model's ApprovalError/ModelError) with everything made removed again."""
        if self.phase != "new":
            raise RuntimeError(f"this Supervisor is {self.phase}: a Supervisor runs once; make a new one")
        self.phase = "starting"
        shm.sweep_stale()
        sweep_stale_run_dirs()
        # an unsigned, altered or unapproved model, or a corrupt file, fails here with one clear
        # error (ApprovalError / ModelError), before any stage starts
        manifest = approved_manifest(self.cfg)
        manifest.read_verified()
        self.manifest_sha256 = manifest.manifest_sha256  # pinned: every stage loads these bytes or refuses
        log.info("model %s %s approved; manifest sha256 %s pinned for the run", manifest.name, manifest.version,
                 self.manifest_sha256)
        self.zmq = zmq.Context()
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"edgert.{self.run_id}."))
        started = time.monotonic()
        try:  # from here on, whatever fails, stop() removes what was made
            self._run_lock = shm.hold_run_dir(self.run_dir)  # tells other runs this one lives (runtime/shm.py)
            (self.run_dir / "pipeline.json").write_text(self.cfg.to_json())
            (self.run_dir / MANIFEST_PIN).write_text(self.manifest_sha256)
            self.endpoints = Endpoints.for_run(self.cfg, self.run_id, self.run_dir)
            self._create_data_plane(manifest.inputs[0])
            if self.endpoints.curve_dir:
                from edgert.runtime import curve

                curve.make_keys(self.run_dir)
                self.auth = curve.start_authenticator(self.zmq, self.endpoints.curve_dir)
            self._start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - started
        self.started_at = time.monotonic()
        self._end = self.started_at + self.duration_s if self.duration_s else math.inf
        self.phase = "running"
        self.running.set()

    def _create_data_plane(self, model_input: Any) -> None:
        """Every stream's frame pool (runtime/topics.py STREAMS) and, where a topic's route in this run
        has one, its mailbox (transport.Endpoints.route): declared there, created here only."""
        assert self.endpoints is not None
        for name in STREAMS:
            lay = layout(name, self.cfg, model_input)
            self.pools.append(FramePool.create(self.run_id, name, lay.slots, lay.slot_bytes))
        for route in self.endpoints.routes():
            if route.mailbox:
                self.mailboxes.append(Mailbox.create(self.run_id, route.topic))

    def poll(self, timeout_ms: int = 20) -> bool:
        """One turn of the run: the start signal (every 100 ms), the stages' heartbeats (waiting up to
        `timeout_ms` for them), hung and dead stages. False once the run should end (its duration is
        reached, or a stop was requested: signal, `request_stop`, control given up)."""
        if self.phase != "running" or self.stop_requested.is_set():
            return False
        now = time.monotonic()
        if now >= self._end:
            self.exit_reason = self.exit_reason or f"duration {self.duration_s:g} s reached"
            return False
        if now - self._last_go >= 0.1:
            self.go["state"] = int(StageState.RUNNING)
            self.go["seq"] += 1
            self.go["t_ns"] = time.monotonic_ns()
            self.pub.send(wire.encode(self.go))  # type: ignore[union-attr]
            self._last_go = now
        self._poll_heartbeats(timeout_ms)
        self._watch(now)
        self.polls += 1
        return not self.stop_requested.is_set()

    def request_stop(self, reason: str = "") -> None:
        """Ask the run to end (from any thread); the next poll() returns False. `reason` goes to the summary."""
        if reason and not self.exit_reason:
            self.exit_reason = reason
        self.stop_requested.set()

    def stop(self) -> dict[str, Any]:
        """Stop every stage and remove everything the run made; safe to call again. The summary."""
        if self.phase in ("starting", "running"):
            if self.started_at is not None:
                self.run_s = time.monotonic() - self.started_at
            if not self.exit_reason:
                self.exit_reason = "stop requested (signal)"
            self.phase = "stopping"
            try:
                self._shutdown()
            finally:
                self.phase = "stopped"
                self.running.clear()
        elif self.phase == "new":
            self.phase = "stopped"
        return self.summary()

    # -- what a caller watching the run reads ----------------------------------------------
    def counters(self) -> dict[str, dict[str, int]]:
        """Per stage, frames/dropped/rejected/errors so far, summed over its restarted instances."""
        return {n: {k: (s.earlier or {}).get(k, 0) + (s.counters or {}).get(k, 0)
                    for k in ("frames", "dropped", "rejected", "errors")} for n, s in self.status.items()}

    def stage_pid(self, name: str) -> int | None:
        """The process of stage `name` now (None in threads mode or before it started)."""
        h = self.handles.get(name)
        return h.pid if isinstance(h, ProcessHandle) else None

    def stage_thread_id(self, name: str) -> int | None:
        """Threads mode: the OS id of stage `name`'s thread now (None otherwise)."""
        h = self.handles.get(name)
        return h.native_id if isinstance(h, ThreadHandle) else None

    def _make_ctx(self, name: str, stop: threading.Event) -> StageContext:
        return StageContext(name, self.cfg, self.run_id, self.endpoints, self.zmq, stop,  # type: ignore[arg-type]
                            manifest_sha256=self.manifest_sha256)

    def _start(self) -> None:
        assert self.zmq is not None and self.endpoints is not None and self.run_dir is not None  # start() made them
        self.heartbeats = subscriber(self.zmq, self.endpoints, "heartbeat")
        self.pub = publisher(self.zmq, self.endpoints, "supervisor")
        sim = self.cfg.sim
        self.telemetry = Telemetry(self.zmq, self.endpoints, self.cfg.control.max_steer_rad,
                                   (sim.lane_width_m - sim.vehicle_width_m) / 2, self.cfg.deadline_ns)
        self.telemetry.start()
        for name in self.status:
            target = self.stage_classes.get(name, "")
            h = (ThreadHandle(name, self._make_ctx, target) if self.mode == "threads"
                 else ProcessHandle(name, self.run_dir, self.run_id, target))
            h.start()
            self.handles[name] = h
        log.info("run %s: started %s in %s mode (%s%s)", self.run_id, ", ".join(self.status), self.mode,
                 self.endpoints("frames").split("://")[0] + "://",
                 ", inputs from shared-memory mailboxes" if self.endpoints.mailboxes else "")

    def _started_pid(self, name: str) -> int | None:
        """The pid of the process this supervisor started as stage `name` (its own in threads mode)."""
        h = self.handles.get(name)
        return None if h is None else h.pid if isinstance(h, ProcessHandle) else os.getpid()

    def _poll_heartbeats(self, timeout_ms: int) -> None:
        """Take the stages' heartbeats: only from the processes this supervisor started, each under
        the stage name it was started as; anything else is dropped and counted (foreign_heartbeats).
        Reads a bounded batch per call (the socket's fair queue takes each peer in turn), so a peer
        flooding the socket neither holds the loop nor crowds out the stages."""
        heartbeats = self.heartbeats
        if heartbeats is None or not heartbeats.poll(timeout_ms):
            return
        for _ in range(HEARTBEAT_BATCH * len(self.status)):
            try:
                msg = heartbeats.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                rec = wire.decode(msg, MsgType.HEARTBEAT)
            except WireError as e:
                self._foreign("rejected heartbeat: %s", e)
                continue
            name = bytes(rec["stage"]).decode()
            st = self.status.get(name)
            if st is None or int(rec["pid"]) != self._started_pid(name):
                self._foreign("dropped a heartbeat as stage %r from pid %d: not a process this supervisor "
                              "started (%s)", name, int(rec["pid"]), f"{name} is pid {self._started_pid(name)}"
                              if st is not None else "no such stage")
                continue
            if st.pid and int(rec["pid"]) != st.pid and st.counters:  # a restarted instance: keep the old counts
                st.earlier = {k: (st.earlier or {}).get(k, 0) + v for k, v in st.counters.items()}
            st.pid = int(rec["pid"])
            st.state = StageState(int(rec["state"]))
            st.last_seen = time.monotonic()
            st.counters = {k: int(rec[k]) for k in ("frames", "dropped", "rejected", "errors")}

    def _foreign(self, msg: str, *args: object) -> None:
        self.foreign_heartbeats += 1
        self._warn_foreign(msg, *args)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.pipeline.ready_timeout_s
        next_note = time.monotonic() + 10
        while True:
            self._poll_heartbeats(50)
            for name, h in self.handles.items():
                st = self.status[name]
                if st.state == StageState.FAILED or not h.alive():
                    raise StageFailed(f"stage {name} failed during start-up (exit code {h.exitcode()}); "
                                      "its log above says why")
            waiting = [n for n, s in self.status.items() if s.state not in (StageState.READY, StageState.RUNNING)]
            if not waiting:
                log.info("all stages ready")
                return
            if self.stop_requested.is_set():
                raise StageFailed("stopped by signal before the pipeline was ready")
            now = time.monotonic()
            if now > deadline:
                raise StageFailed(f"stages not ready after {self.cfg.pipeline.ready_timeout_s:.0f} s: "
                                  f"{', '.join(waiting)} (raise pipeline.ready_timeout_s if the machine is slow, "
                                  "or fix a setup that never returns)")
            if now > next_note:
                log.info("waiting for %s (a first run compiles the Numba kernels and caches them)", ", ".join(waiting))
                next_note = now + 10

    def _watch(self, now: float) -> None:
        """Kill a hung stage; restart a dead one with exponential back-off; give up after MAX_RESTARTS."""
        for name, h in self.handles.items():
            st = self.status[name]
            if st.seen is None or st.seen[0] != st.state:
                st.seen = (st.state, now)
            if (h.alive() and isinstance(h, ProcessHandle) and st.state in (StageState.READY, StageState.RUNNING)
                    and now - st.last_seen > HEARTBEAT_TIMEOUT_S):
                log.error("stage %s sent no heartbeat for %.1f s: hung, killing it (a step, or a node's callback, must "
                          "return within 0.1 s: docs/nodes.md)", name, now - st.last_seen)
                st.state = StageState.FAILED
                st.hung += 1
                h.kill()
            if (isinstance(h, ThreadHandle) and h.alive() and st.state in (StageState.READY, StageState.RUNNING)
                    and now - st.last_seen > HEARTBEAT_TIMEOUT_S and st.silence_logged != st.last_seen):
                st.silence_logged = st.last_seen  # once per silence: a thread cannot be killed, only reported
                log.error("stage %s sent no heartbeat for %.1f s: hung; a thread cannot be killed (a step, or a node's "
                          "callback, must return within 0.1 s: docs/nodes.md; processes mode restarts a hung stage)",
                          name, now - st.last_seen)
            if (h.alive() and not st.given_up and st.state not in (StageState.READY, StageState.RUNNING)
                    and now - st.seen[1] > self.cfg.pipeline.restart_timeout_s):
                self._kill_stuck(name, h, st, now)
            if h.alive() or st.given_up:
                continue
            # the camera source at the end of its input (a video file): the run is over. Only the source's:
            # another stage exiting with that code is a crash like any other
            if name == "capture" and h.exitcode() == INPUT_ENDED:
                self.request_stop(f"{name}: its input ended (logged above)")
                continue
            if st.restart_at == 0.0:
                code = h.exitcode()
                # a stage that hung is judged over a window its setup deadline longer, so one that hangs on
                # every restart is given up after MAX_RESTARTS, as one that crashes is
                window = RESTART_WINDOW_S + (self.cfg.pipeline.restart_timeout_s if st.hung else 0.0)
                st.recent = [t for t in (st.recent or []) if now - t < window]
                if len(st.recent) >= MAX_RESTARTS:
                    st.given_up = True
                    if name == "control":  # nothing would command the car: end the run
                        log.error("stage control keeps crashing (exit code %s, %d restarts in %.0f s): giving up "
                                  "and stopping the pipeline", code, len(st.recent), RESTART_WINDOW_S)
                        self.request_stop("control stage given up")
                    elif name not in STAGE_NAMES:  # optional, off the control path (the recorder)
                        log.error("stage %s keeps crashing (exit code %s, %d restarts in %.0f s): giving up on it; "
                                  "the pipeline and control run on without it", name, code, len(st.recent),
                                  RESTART_WINDOW_S)
                    else:
                        log.error("stage %s keeps crashing (exit code %s, %d restarts in %.0f s): giving up on it; "
                                  "control stays in fail-safe", name, code, len(st.recent), RESTART_WINDOW_S)
                    continue
                delay = BACKOFF_S * 2 ** len(st.recent)
                log.error("stage %s died (exit code %s); restarting in %.1f s", name, code, delay)
                st.restart_at = now + delay
            elif now >= st.restart_at:
                st.restarts += 1
                st.recent = (st.recent or []) + [now]
                st.restart_at = 0.0
                st.state = StageState.STARTING
                st.seen = (StageState.STARTING, now)  # its setup is timed from here, not from its predecessor's
                h.start()

    def _kill_stuck(self, name: str, h: ProcessHandle | ThreadHandle, st: StageStatus, now: float) -> None:
        """A stage that stays STARTING (a restart hung in setup), FAILED or STOPPING without exiting:
        kill it, to be restarted like a crash; a thread cannot be killed, so it is given up."""
        log.error("stage %s has been %s for %.1f s (pipeline.restart_timeout_s = %g): hung, killing it", name,
                  st.state.name, now - st.seen[1], self.cfg.pipeline.restart_timeout_s)  # type: ignore[index]
        st.state = StageState.FAILED
        st.hung += 1
        h.kill()
        if h.alive():  # a thread
            st.given_up = True
            if name == "control":
                self.request_stop("control stage hung")

    def _shutdown(self) -> None:
        handles = self.handles
        for h in handles.values():
            h.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, h in handles.items():
            if not h.join(max(0.0, deadline - time.monotonic())):
                log.warning("stage %s did not stop within %.0f s; killing it", name, STOP_TIMEOUT_S)
                h.kill()
        if self.heartbeats is not None:
            self._poll_heartbeats(0)  # the stages' final counters
        if self.telemetry is not None:
            self.telemetry.stop()
        for sock in (self.heartbeats, self.pub):
            if sock is not None:
                sock.close(linger=0)
        self.heartbeats = self.pub = None
        if self.auth is not None:
            self.auth.stop()
        if any(h.alive() for h in handles.values()):
            log.error("a stage thread is still running; leaving its ZeroMQ context open (term() would block)")
        elif self.zmq is not None:
            self.zmq.term()
        segments: list[FramePool | Mailbox] = [*self.pools, *self.mailboxes]
        for seg in segments:
            seg.close()
            seg.unlink()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._run_lock is not None:
            os.close(self._run_lock)
            self._run_lock = None
        leaked = shm.list_segments(self.run_id)
        if leaked:
            log.error("shared memory still present after shutdown: %s", leaked)

    # -- report ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        tel = self.telemetry.summary() if self.telemetry else {}
        run_s = self.run_s
        totals = self.counters()
        frames = totals["capture"]["frames"]
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "source": self.cfg.camera.source,
            "exit_reason": self.exit_reason,
            "ready_s": round(self.ready_s, 2),
            "duration_s": round(run_s, 2),
            "frames": frames,
            "fps": round(frames / run_s, 2) if run_s else 0.0,
            "stages": {n: {**totals[n], "restarts": s.restarts, "given_up": s.given_up, "hung": s.hung}
                       for n, s in self.status.items()},
            **tel,
            "leaked_segments": shm.list_segments(self.run_id),
            # what the transport refused: heartbeats not from a started stage, and CURVE clients without the run's key
            "transport": {"foreign_heartbeats": self.foreign_heartbeats,
                          "denied_peers": self.auth.denied if self.auth is not None else 0},
        }


def sweep_stale_run_dirs() -> None:
    """Remove socket/config directories of runs whose supervisor is dead (e.g. SIGKILLed)."""
    for d, _, alive in shm.run_dirs():
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def install_signal_handlers(sup: Supervisor) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        sup.request_stop()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable end-of-run report."""
    lines = [f"edgert run {s['run_id']} ({s['mode']}): {s['exit_reason']}",
             f"  ready in {s['ready_s']:.1f} s; ran {s['duration_s']:.1f} s; "
             f"{s['frames']} frames at {s['fps']:.1f} fps"]
    lines.append("  stage        frames  dropped  rejected  errors  restarts")
    for n, c in s["stages"].items():
        lines.append(f"  {n:<11} {c.get('frames', 0):>7} {c.get('dropped', 0):>8} {c.get('rejected', 0):>9} "
                     f"{c.get('errors', 0):>7} {c.get('restarts', 0):>9}")
    e2e = s.get("end_to_end", {})
    if e2e.get("n"):
        lines.append(f"  end-to-end latency (capture -> command), {e2e['n']} commands: p50 {e2e['p50_ms']:.2f} ms, "
                     f"p99 {e2e['p99_ms']:.2f} ms, max {e2e['max_ms']:.2f} ms")
        lines.append("  per stage (p50 / p99 / max, ms):")
        for name, st in s["stage_latency"].items():
            lines.append(f"    {name:<20} {st['p50_ms']:7.3f} {st['p99_ms']:7.3f} {st['max_ms']:7.3f}")
    c = s.get("commands", {})
    if c:
        reasons = ", ".join(f"{k.lower()} {v}" for k, v in c["takeover_reasons"].items())
        lines.append(f"  commands: {c['commands']} ({c['model_commands']} from the model, {c['failsafe_commands']} "
                     f"fail-safe in {c['takeover_events']} takeover request(s){': ' + reasons if reasons else ''}); "
                     f"out of range {c['out_of_range']}, stamps out of order {c['non_monotone_stamps']}")
    lane = s.get("lane", {})
    if lane.get("frames"):
        verdict = "stayed in lane" if lane["departures"] == 0 else f"LEFT THE LANE {lane['departures']} time(s)"
        lines.append(f"  lane error over {lane['frames']} frames: mean {lane['mean_abs_m']:.3f} m, "
                     f"rms {lane['rms_m']:.3f} m, max {lane['max_abs_m']:.3f} m -> {verdict} "
                     f"(departure = |error| > {lane['departure_threshold_m']:.2f} m)")
    elif lane and s.get("source") != "sim":  # no vehicle ground truth: only the simulator's car closes the loop
        lines.append(f"  lane keeping: not measured (camera.source = {s.get('source', '?')!r} has no vehicle ground "
                     "truth; the commands steer nothing)")
    act, faults = s.get("actuator_timeouts", {}), s.get("injected_faults", {})
    if act.get("events") or faults:
        injected = ", ".join(f"{k.lower()} {v['frames']} frame(s)" for k, v in faults.items()) or "none"
        lines.append(f"  simulator: actuator timeouts {act.get('events', 0)} ({act.get('frames', 0)} frames "
                     f"ramped to neutral by the actuator); injected faults: {injected}")
    cam = s.get("camera", {})
    if cam.get("losses"):
        lines.append(f"  camera lost {cam['losses']} time(s), {cam['lost_s']:.1f} s in all"
                     f"{' (still lost at the end)' if cam['lost_now'] else ''}; first: {cam['events'][0]['why']}")
    refused = s.get("transport", {})
    if refused.get("foreign_heartbeats") or refused.get("denied_peers"):
        lines.append(f"  transport: {refused['foreign_heartbeats']} heartbeat(s) dropped (not from a stage this "
                     f"supervisor started), {refused['denied_peers']} peer(s) without the run's CURVE key refused")
    if s.get("leaked_segments"):
        lines.append(f"  LEAKED shared memory: {s['leaked_segments']}")
    return "\n".join(lines)


def dump_json(summary: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, default=float))
