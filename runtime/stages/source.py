"""What every camera source shares (runtime/sources.py lists them): the camera stream's output,
the wait for the supervisor's start signal, frame ids, and skipping ticks a camera missed.

A source subclasses `CameraSource`, calls `open_camera()` in its setup and writes `tick()`: one
frame (or a wait) per call once the pipeline runs. Every source publishes the same stream and
topics, so the rest of the pipeline does not know which one runs.
"""

from __future__ import annotations

import time

from edgert.runtime.config import ConfigError
from edgert.runtime.frameinput import FrameOutput
from edgert.runtime.node import Node
from edgert.runtime.topics import CAMERA_STREAM, StreamLayout, layout
from edgert.runtime.transport import LatestReader, latest_reader


class CameraSource(Node):
    name = "capture"

    period_ns = 0  # the camera's nominal frame period; 0 = none (frame ids come from elsewhere)
    layout: StreamLayout
    output: FrameOutput
    supervisor: LatestReader

    def open_camera(self, shape: tuple[int, ...] | None = None) -> None:
        """In setup: the start signal's reader and the camera stream's output (`open_output`).
        `shape` is what this source's frames are, checked against the stream's layout in this run."""
        self.layout = layout(CAMERA_STREAM, self.cfg)
        if shape is not None and tuple(shape) != self.layout.shape:
            raise ConfigError(f"frames of shape {tuple(shape)} do not fit the camera stream's {self.layout.shape} "
                             "(camera.width/height/cameras)")
        self.supervisor = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "supervisor"))
        self.started = False
        self.next_tick = 0
        self.id_base = 0
        self.open_output()

    def open_output(self) -> None:
        """The camera stream's pool and descriptor (a baseline that publishes otherwise overrides this)."""
        self.output = FrameOutput(self, CAMERA_STREAM, self.layout)

    def on_start(self) -> None:
        """Called once, when the supervisor says every stage is ready (logging what starts)."""

    def tick(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        if self.started:
            self.tick()
        elif self.is_start_signal(self.supervisor.recv(50)):  # frames flow only once every stage is ready
            self.started = True
            self.next_tick = time.monotonic_ns()
            if self.period_ns:
                # Frame ids count frames from a base on the host's clock (in frame periods), so they
                # stay consecutive yet keep increasing after a restart of this stage: a camera cannot
                # produce frames faster than periods pass.
                self.id_base = self.next_tick // self.period_ns
            self.on_start()

    # -- a camera that goes away (interface; the signalling to control is issue 19's CAMERA_LOST) ---
    def camera_lost(self, why: str) -> None:
        """The camera stopped delivering: unplugged, stalled, a stream that dropped, corrupt frames.
        Say so (once per loss), so control hands over with TakeoverReason.CAMERA_LOST within one
        deadline rather than a generic DEADLINE; the source then reconnects with a `Backoff`
        (runtime/backoff.py) from its own tick, and calls `camera_back()` once frames flow."""
        if not getattr(self, "lost_since_ns", 0):
            self.lost_since_ns = time.monotonic_ns()
            self.log.error("camera lost: %s; reconnecting", why)

    def camera_back(self) -> None:
        """Frames flow again after `camera_lost`: logged with how long the camera was gone."""
        since = getattr(self, "lost_since_ns", 0)
        if since:
            self.lost_since_ns = 0
            self.log.warning("camera back after %.1f s", (time.monotonic_ns() - since) / 1e9)

    def skip_missed(self, now: int) -> None:
        """After advancing `next_tick`: if it is due already, skip the ticks missed (a camera does not
        queue frames), counted as dropped."""
        late = now - self.next_tick
        if late > 0:
            missed = 1 + late // self.period_ns
            self.dropped += int(missed)
            self.next_tick += missed * self.period_ns
