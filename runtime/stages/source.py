"""What every camera source shares (runtime/sources.py lists them): the camera stream's output,
the wait for the supervisor's start signal, frame ids, and skipping ticks a camera missed.

A source subclasses `CameraSource`, calls `open_camera()` in its setup and writes `tick()`: one
frame (or a wait) per call once the pipeline runs. Every source publishes the same stream and
topics, so the rest of the pipeline does not know which one runs.

A camera that goes away is the source's to say (`camera_lost`), and to reconnect in place with a
`Backoff`; the camera's state goes out on the `camera_state` topic, from which control hands over
with TakeoverReason.CAMERA_LOST (docs/decisions.md, "A lost camera"). A source that publishes no
frame for `stall_after_ns` says so itself, and a published frame after a loss means it is back.
"""

from __future__ import annotations

import time

from edgert.runtime import wire
from edgert.runtime.config import ConfigError
from edgert.runtime.frameinput import FrameOutput
from edgert.runtime.node import Node
from edgert.runtime.topics import CAMERA_STREAM, StreamLayout, layout
from edgert.runtime.transport import LatestReader, Publisher, latest_reader, publisher
from edgert.runtime.wire import CameraState, MsgType, Stamp

STATE_RESEND_NS = 250_000_000  # while lost, the camera's state goes out again this often (a late reader learns it)


class CameraSource(Node):
    name = "capture"

    period_ns = 0  # the camera's nominal frame period; 0 = none (frame ids come from elsewhere)
    # A tick that publishes no frame for one deadline (control.deadline) is a stalled camera
    # (`camera_lost` is called for it); False for a source whose gaps are by design
    # (benchmark pacing that waits for the pipeline's commands).
    detect_stalls = True
    layout: StreamLayout
    output: FrameOutput
    supervisor: LatestReader
    state_pub: Publisher

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
        self.state_pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "camera_state"))
        self.state_msg = wire.new_message(MsgType.CAMERA)
        self.lost_since_ns = 0  # 0 = frames flow
        self.losses = 0  # camera losses of this stage instance
        self.lost_ns = 0  # time they lasted, ended ones only
        self.stall_after_ns = 0  # set at the start
        self._frame_seen_ns = 0  # when the newest frame published was first seen, for stall detection
        self._state_sent_ns = 0
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
            self._watch_camera()
        elif self.is_start_signal(self.supervisor.recv(50)):  # frames flow only once every stage is ready
            self.started = True
            self.next_tick = time.monotonic_ns()
            if self.period_ns:
                # Frame ids count frames from a base on the host's clock (in frame periods), so they
                # stay consecutive yet keep increasing after a restart of this stage: a camera cannot
                # produce frames faster than periods pass.
                self.id_base = self.next_tick // self.period_ns
            self._frame_seen_ns = self.next_tick
            # one deadline: a gap that long is a takeover anyway, and this names its cause (CAMERA_LOST)
            # within that deadline rather than after it
            self.stall_after_ns = self.cfg.deadline_ns
            # the state at the start: a control that heard this stage's previous instance lose the
            # camera learns whether this one has it (a lost camera says so from its first tick)
            self._send_state(self.next_tick)
            self.on_start()

    # -- a camera that goes away -----------------------------------------------------------------
    def camera_lost(self, why: str) -> None:
        """The camera stopped delivering: unplugged, stalled, a stream that dropped, corrupt frames.
        Call it with what happened and the device or file name; calling it again while lost is
        harmless. Control hands over with TakeoverReason.CAMERA_LOST at once (within one deadline
        of the last good frame); this stage is not restarted: reconnect from `tick()` with a
        `Backoff` (runtime/backoff.py). The first frame published afterwards ends the loss (or
        call `camera_back()`), and control recovers after `control.recover_after` good results."""
        if self.lost_since_ns:
            return
        now = time.monotonic_ns()
        self.lost_since_ns = now
        self.losses += 1
        self.log.error("camera lost: %s; reconnecting", why)
        self.state_msg["why"] = wire.encode_why(why)
        self._send_state(now)

    def camera_back(self) -> None:
        """Frames flow again after `camera_lost`: logged with how long the camera was gone. Called
        for you when a frame is published after a loss; a source may call it earlier."""
        since = self.lost_since_ns
        if since:
            now = time.monotonic_ns()
            self.lost_since_ns = 0
            self.lost_ns += now - since
            self._frame_seen_ns = now  # the stall clock starts again
            self.log.warning("camera back after %.1f s", (now - since) / 1e9)
            self.state_msg["why"] = b""
            self._send_state(now)

    @property
    def last_frame(self) -> tuple[int, int]:
        """(frame id, capture stamp) of the newest frame published, (0, 0) before the first."""
        out = getattr(self, "output", None)  # a baseline that publishes otherwise has none
        if out is None:
            return 0, 0
        return int(out.msg["frame_id"]), int(out.msg["stamps"][Stamp.CAPTURE])

    def _watch_camera(self) -> None:
        """After each tick: a new frame ends a loss; none for `stall_after_ns` starts one; while lost,
        the state goes out again every STATE_RESEND_NS."""
        if not (self.detect_stalls or self.lost_since_ns):
            return
        now = time.monotonic_ns()
        fid = int(self.state_msg["frame_id"])
        newest, capture_ns = self.last_frame
        if newest != fid:
            self.state_msg["frame_id"], self.state_msg["capture_ns"] = newest, capture_ns
            self._frame_seen_ns = now
            if self.lost_since_ns:
                self.camera_back()
            return
        if self.lost_since_ns:
            if now - self._state_sent_ns >= STATE_RESEND_NS:
                self._send_state(now)
        elif self.detect_stalls and now - self._frame_seen_ns > self.stall_after_ns:
            self.camera_lost(f"no frame for {(now - self._frame_seen_ns) / 1e6:.0f} ms (stalled)")

    def _send_state(self, now: int) -> None:
        m = self.state_msg
        m["frame_id"], m["capture_ns"] = self.last_frame
        m["state"] = int(CameraState.LOST if self.lost_since_ns else CameraState.OK)
        m["since_ns"] = self.lost_since_ns or now
        m["t_ns"] = self._state_sent_ns = now
        self.state_pub.send(wire.encode(m))

    def skip_missed(self, now: int) -> None:
        """After advancing `next_tick`: if it is due already, skip the ticks missed (a camera does not
        queue frames), counted as dropped."""
        late = now - self.next_tick
        if late > 0:
            missed = 1 + late // self.period_ns
            self.dropped += int(missed)
            self.next_tick += missed * self.period_ns
