"""What every stage shares: its context, counters, heartbeats and main loop.

The same Stage code runs as its own process (processes mode) or as a thread beside
the others (threads mode); only the context differs (ipc:// vs inproc:// endpoints,
a signal-driven vs a shared stop event).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

from edgert.runtime import wire
from edgert.runtime.config import PipelineConfig
from edgert.runtime.transport import Endpoints, publisher
from edgert.runtime.wire import MsgType, StageState, WireError

HEARTBEAT_PERIOD_NS = 100_000_000
# run_stage's exit code for a source whose input ended (a video file without loop): the supervisor
# ends the run (its exit reason: the stage's `input_ended` line) instead of restarting the stage
INPUT_ENDED = 3


@dataclass
class StageContext:
    name: str
    config: PipelineConfig
    run_id: str
    endpoints: Endpoints
    zmq: zmq.Context
    stop: threading.Event
    manifest_sha256: str = ""  # the run's approved manifest (supervisor's pin); "" = a stage run alone


class RateLimitedLog:
    """Logs the first occurrence at once, then at most one line a second with a count."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        self.logger, self.level = logger, level
        self.last_ns = 0
        self.suppressed = 0

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic_ns()
        if now - self.last_ns >= 1_000_000_000:
            more = f" (+{self.suppressed} more like it)" if self.suppressed else ""
            self.logger.log(self.level, msg + more, *args)
            self.last_ns, self.suppressed = now, 0
        else:
            self.suppressed += 1


class Stage:
    """A pipeline stage: `setup` before ready, `step` in a loop, `teardown` at the end.

    `step` must return within ~100 ms (poll with a timeout) so stop requests and
    heartbeats are never delayed by a quiet input.
    """

    name: str = "stage"
    input_ended: str = ""  # a source whose input ended (a video file) says how here, then sets ctx.stop

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.log = logging.getLogger(f"edgert.{self.name}")
        self.frames = 0  # frames (messages) fully processed
        self.dropped = 0  # frames this stage never processed: skipped, overwritten or lost upstream
        self.rejected = 0  # malformed or invalid input messages
        self.errors = 0
        self._last_frame_id = 0
        self._warn_reject = RateLimitedLog(self.log)
        self._owned: list = []

    def own(self, resource):  # type: ignore[no-untyped-def]
        """Register a socket, reader or pool to close at teardown; returns it."""
        self._owned.append(resource)
        return resource

    def _open_io(self) -> None:
        """Before `setup`: the sockets a Node declares (runtime/node.py); nothing for a bare Stage."""

    def setup(self) -> None:
        """Open pools and sockets, compile kernels, warm up; runs before the stage reports ready."""

    def step(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Close everything the stage `own`ed, newest first; runs even after a failed step."""
        while self._owned:
            r = self._owned.pop()
            if isinstance(r, zmq.Socket):
                r.close(linger=0)
                continue
            r.close()

    # -- helpers for subclasses -------------------------------------------------------
    def reject(self, why: object) -> None:
        self.rejected += 1
        self._warn_reject("rejected input: %s", why)

    def decode(self, msg: bytes, msg_type: MsgType) -> np.void | None:
        """The validated message, or None after counting and logging why it was rejected."""
        try:
            return wire.decode(msg, msg_type)
        except WireError as e:
            self.reject(e)
            return None

    def wait_until(self, t_ns: int) -> bool:
        """Sleep towards the monotonic time t_ns; True once it has come. Sleeps at most 0.1 s per
        call (then False: call again), so heartbeats and stop requests are never held up."""
        wait_s = (t_ns - time.monotonic_ns()) / 1e9
        if wait_s > 0.1:
            self.ctx.stop.wait(0.1)
            return False
        return not (wait_s > 0 and self.ctx.stop.wait(wait_s))

    def is_start_signal(self, msg: bytes | None) -> bool:
        """True for the supervisor's start signal (RUNNING, sent once every stage is ready):
        sources publish frames, and control arms its watchdog, only from then on."""
        if msg is None:
            return False
        rec = self.decode(msg, MsgType.HEARTBEAT)
        return rec is not None and int(rec["state"]) == StageState.RUNNING

    def accept_frame_id(self, frame_id: int) -> bool:
        """Count frames never seen between this one and the last; refuse ids going backwards."""
        last = self._last_frame_id
        if frame_id <= last:
            self.reject(f"frame id {frame_id} not after {last} (repeated or reordered)")
            return False
        if last:
            self.dropped += frame_id - last - 1
        self._last_frame_id = frame_id
        return True


class Heartbeat:
    """Periodic liveness + counters to the supervisor, on the `heartbeat` topic."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.sock = publisher(stage.ctx.zmq, stage.ctx.endpoints, "heartbeat")
        self.rec = wire.new_message(MsgType.HEARTBEAT)
        self.rec["stage"] = stage.name.encode()
        self.rec["pid"] = os.getpid()
        self.last_ns = 0

    def send(self, state: StageState) -> None:
        s, r = self.stage, self.rec
        r["state"] = int(state)
        r["seq"] += 1
        r["t_ns"] = self.last_ns = time.monotonic_ns()
        r["frames"], r["dropped"], r["rejected"], r["errors"] = s.frames, s.dropped, s.rejected, s.errors
        try:
            self.sock.send(wire.encode(r), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the supervisor is gone or slow; heartbeats are periodic, the next one will do

    def maybe_send(self, state: StageState) -> None:
        if time.monotonic_ns() - self.last_ns >= HEARTBEAT_PERIOD_NS:
            self.send(state)

    def close(self) -> None:
        self.sock.close(linger=100)  # let the final counters reach the supervisor


def run_stage(stage: Stage) -> int:
    """Set up, report ready, loop until stopped; return a process exit code."""
    stop = stage.ctx.stop
    hb = Heartbeat(stage)
    hb.send(StageState.STARTING)
    try:
        stage._open_io()
        stage.setup()
    except Exception:
        stage.log.exception("setup failed; the stage cannot start")
        hb.send(StageState.FAILED)
        stage.teardown()
        hb.close()
        return 1
    stage.log.info("ready")
    hb.send(StageState.READY)
    code = 0
    try:
        while not stop.is_set():
            stage.step()
            hb.maybe_send(StageState.RUNNING)
    except Exception:
        stage.errors += 1
        stage.log.exception("stage failed")
        hb.send(StageState.FAILED)
        code = 1
    finally:
        stage.teardown()
        if code == 0 and stage.input_ended:
            code = INPUT_ENDED
        if code in (0, INPUT_ENDED):
            hb.send(StageState.STOPPING)
        hb.close()
    return code
