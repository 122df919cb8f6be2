"""capture (camera.source = "video"): a recorded video file or a stream URL, decoded by FFmpeg.

`camera.uri` names a file (MP4, MKV, MPEG-TS, raw H.264/H.265, MJPEG; a relative path resolves
against the config's folder) or a stream (rtsp://, http(s)://, ...). Frames are decoded through
PyAV on a thread of this stage (runtime/video.py `DecodeThread`; hardware decoding where a device
answers, software otherwise, logged once with why), and each is written straight into a pool slot
in camera.format (runtime/video.py `SlotWriter`: plane copies for I420/NV12, swscale for BGR/RGB,
scaled where the video's size is not camera.width/height; swscale runs on the decoding thread, the
stage's thread only copies into the slot). Its CAPTURE stamp is when it is published. The
pipeline's frame ids count frames published, from a base on the host's clock.

Pacing (camera.pacing):
  stream  (default) a file at its own rate, from each frame's presentation time; a stream URL as
          frames arrive (waiting on timestamps would only add latency to a live camera). A stream
          never waits for the pipeline: a frame not taken before two newer ones is dropped (counted).
          A file whose rate is not camera.fps (within 5 %) is refused at setup (the deadlines and
          the stall check follow camera.fps); a stream's is a warning
  fixed   a frame every 1/camera.fps, whatever the video's rate
  closed  the next frame once the command for the last one is out (the frames source's closed
          loop: never sooner than 1/camera.fps after the last frame; a command not seen within
          the deadline counts the frame as dropped)

A file that ends (camera.loop = false) is logged as "end of video FILE after N frames (T s)"; once
the last frame's command is out (or a second has passed) the stage exits with INPUT_ENDED and the
supervisor ends the run. A file shorter than its header says is reported as truncated. Corrupt
data is reported with the file, frame index and time and is `camera_lost` at once (control hands
over with CAMERA_LOST); every frame up to the next keyframe is dropped (counted as rejected: FFmpeg
would conceal the damage, and the model must not act on a guessed picture), and the first good
keyframe published is `camera_back`. A file that cannot be read on ends the run, also when it
loops. A stream that fails or ends is `camera_lost` and reopened with back-off
(runtime/backoff.py); `camera_back` once frames flow.
"""

from __future__ import annotations

import logging
import time

from edgert.runtime.backoff import Backoff
from edgert.runtime.stages.source import CameraSource
from edgert.runtime.transport import latest_reader
from edgert.runtime.video import Decoded, DecodeThread, SlotWriter, VideoError, is_stream, open_video
from edgert.runtime.wire import MsgType

DRAIN_NS = 1_000_000_000  # at the end of a file: how long the last frame's command may take
LATE_RESYNC_NS = 1_000_000_000  # stream/fixed pacing this far behind: the schedule restarts from now
ID_PERIOD_NS = 1_000_000  # frame ids: at most one frame a millisecond, so ids keep rising across a restart
RATE_TOLERANCE = 0.05  # stream pacing: a video's rate this far from camera.fps is refused (a file) or warned of


class _NotReconnecting(logging.Filter):
    """A file is not reconnected: the base class's "camera lost: ...; reconnecting" line loses its tail."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("camera lost: ") and text.endswith("; reconnecting"):
            record.msg, record.args = text[:-len("; reconnecting")], None
        return True


class VideoStage(CameraSource):
    # CameraSource's stall check (no frame for max(deadline, 10 periods at camera.fps): camera lost):
    # on for stream and fixed pacing; off for closed pacing (it waits for commands by design) and
    # once a file has ended (the run is ending, the camera is not lost)
    detect_stalls = True

    def setup(self) -> None:
        cam = self.cfg.camera
        self.uri = self.cfg.video_uri()
        self.label = self.uri if is_stream(self.uri) else self.cfg.camera.uri  # as the user wrote it
        self.live = is_stream(self.uri)
        self.loop = cam.loop
        self.pacing = cam.pacing or "stream"
        self.detect_stalls = self.pacing != "closed"
        self.frame_ns = int(1e9 / cam.fps)  # fixed pacing's period, closed pacing's cap
        self.period_ns = ID_PERIOD_NS
        self.deadline_ns = self.cfg.deadline_ns
        self.open_camera()  # the slot's shape is camera.format's layout (topics.layout)
        yuv = (getattr(cam, "yuv_matrix", "bt601"), getattr(cam, "yuv_range", "limited"))  # branch fmt's keys
        self.write = SlotWriter(cam.format, cam.width, cam.height, self.label, yuv)
        self.commands = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "commands"))
        self.backoff = Backoff()
        self.stream_lost = False  # between camera_lost and camera_back
        # a file must be readable now (a clear error at start-up); a stream may come later
        opened = None if self.live else open_video(self.uri)
        self._first_opened = opened  # closed by teardown, also when the check below refuses it
        if opened is not None:
            self.header_frames = int(opened.stream.frames or 0)
            self._check_rate(opened.rate, refuse=True)
        else:
            self.header_frames = 0
        self.decoder: DecodeThread | None = None
        self.pass_frames = 0  # frames published in this pass over the file
        self.corrupt = 0
        self.pass_damaged = 0  # frames of this pass dropped after corrupt data
        self.first_t: float | None = None  # stream pacing: the presentation time of the first frame of this pass
        self.offset_ns = 0  # stream pacing: where this pass starts on the schedule (loops add up)
        self.last_t = 0.0
        self.awaiting = 0  # the frame id whose command we wait for (closed pacing; the end's drain)
        self.sent_ns = 0
        self.ended_ns = 0  # when the file ended (without loop): draining the last command
        self.end_line = ""
        self.pending: Decoded | None = None  # a frame decoded, waiting for its time

    def _check_rate(self, rate: float, refuse: bool) -> None:
        """Stream pacing plays the video at its own rate, while the deadlines and the stall check
        (CameraSource) follow camera.fps: a file at another rate would be a lost camera between
        frames (refused: VideoError); a live stream's rate is what the camera sends (a warning)."""
        fps = self.cfg.camera.fps
        if self.pacing != "stream" or not rate or abs(rate - fps) <= RATE_TOLERANCE * fps:
            return
        what = (f"{self.label}: the video runs at {rate:g} fps, camera.fps is {fps:g}: with stream pacing the "
                f"deadlines and the stall check would not fit its frames; set camera.fps = {rate:g}, or "
                f"camera.pacing = \"fixed\" to play it at camera.fps")
        if refuse:
            raise VideoError(what)
        self.log.warning("%s", what)

    def camera_lost(self, why: str, reconnecting: bool | None = None) -> None:
        """The base class's; its log line says "reconnecting" only where this source reconnects: a
        stream (by default), not a file, nor corrupt data (which waits for a keyframe)."""
        if self.live if reconnecting is None else reconnecting:
            super().camera_lost(why)
            return
        quiet = _NotReconnecting()
        self.log.addFilter(quiet)
        try:
            super().camera_lost(why)
        finally:
            self.log.removeFilter(quiet)

    def on_start(self) -> None:
        self.log.info("started: %s, %s pacing%s%s", self.label, self.pacing,
                      f" at {self.cfg.camera.fps:g} fps" if self.pacing != "stream" else "",
                      ", looping" if self.loop else "")
        self._start_decoder()

    def _start_decoder(self) -> None:
        self.decoder = DecodeThread(self.uri, self._first_opened, loop=self.loop and not self.live,
                                    prepare=self.write.prepare)
        self.skipped_seen = 0  # of the decoder's `skipped` (written by its thread only)
        self.damaged_seen = 0  # of the decoder's `damaged` (likewise)
        self._first_opened = None

    def teardown(self) -> None:
        if getattr(self, "decoder", None) is not None:
            self.decoder.close()  # type: ignore[union-attr]
        elif getattr(self, "_first_opened", None) is not None:
            self._first_opened.close()  # type: ignore[union-attr]
        super().teardown()

    # -- loop ---------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.ended_ns:
            self._drain()
            return
        if self.decoder is None:  # a stream lost: reopen once the back-off allows
            if self.backoff.due(time.monotonic_ns()):
                self._start_decoder()
            else:
                self.ctx.stop.wait(0.05)
            return
        if self.awaiting and not self._command_seen():
            return
        if self.pending is None:
            self.pending = self.decoder.get(0.05)
            if self.pending is None:
                return
        item = self.pending
        if item.kind == "frame":
            if self._due(item):
                self.pending = None
                self._publish(item)
            return
        self.pending = None
        if item.kind == "opened":
            self.log.info("%s: %s", self.label, item.text)
            if self.live:
                self._check_rate(item.rate, refuse=False)
        elif item.kind == "corrupt":
            self.corrupt += 1
            self.reject(f"{self.label}: corrupt data at frame {item.index} ({item.time_s:.3f} s): {item.text}; "
                        "frames dropped up to the next keyframe")
            self.camera_lost(f"corrupt data in {self.label} at frame {item.index} ({item.time_s:.3f} s); "
                             "waiting for the next keyframe", reconnecting=False)
        elif item.kind == "end":
            self._end_of_pass(item)
        else:  # "lost"
            self._lost(item.text)

    def _due(self, item: Decoded) -> bool:
        """Whether the decoded frame may go out now, by the pacing (False: wait, call again)."""
        now = time.monotonic_ns()
        if self.pacing == "closed":
            return self.wait_until(self.sent_ns + self.frame_ns) if self.sent_ns else True
        if not self.frames:  # the schedule starts with the first frame decoded, not at the start signal:
            self.next_tick = max(self.next_tick, now)  # else the frames after it catch up its decode time in a burst
        if self.pacing == "fixed":
            due = self.next_tick
        elif self.live:
            return True
        else:
            if self.first_t is None:
                self.first_t = item.time_s
            due = self.next_tick + self.offset_ns + int((item.time_s - self.first_t) * 1e9)
        if now - due > LATE_RESYNC_NS:  # far behind (a slow machine): go on from now, not in a burst
            self.next_tick += now - due
            return True
        return self.wait_until(due)

    def _publish(self, item: Decoded) -> None:
        self._count_skipped()
        slot, view = self.output.acquire()
        self.write.write(item.frame, view)  # converted already, on the decoding thread (SlotWriter.prepare)
        frame_id = self.id_base + self.frames + 1
        self.output.publish(slot, frame_id)
        self.frames += 1
        self.pass_frames += 1
        self.last_t = item.time_s
        self.sent_ns = time.monotonic_ns()
        if self.pacing == "fixed":
            self.next_tick += self.frame_ns
        if self.pacing == "closed":
            self.awaiting = frame_id
        if self.stream_lost:
            self.stream_lost = False
            self.camera_back()
            self.backoff.reset()

    def _count_skipped(self) -> None:
        """A live stream's frames the decoder dropped for newer ones: counted as dropped; frames it
        dropped after corrupt data (up to a keyframe): counted as rejected."""
        d = self.decoder
        if d is not None and d.skipped != self.skipped_seen:
            self.dropped += d.skipped - self.skipped_seen
            self.skipped_seen = d.skipped
        if d is not None and d.damaged != self.damaged_seen:
            self.rejected += d.damaged - self.damaged_seen
            self.pass_damaged += d.damaged - self.damaged_seen
            self.damaged_seen = d.damaged

    def _command_seen(self) -> bool:
        """Is the command for the awaited frame out (or will it never come, within the deadline)?"""
        msg = self.commands.recv(5)
        if msg is not None:
            rec = self.decode(msg, MsgType.COMMAND)
            if rec is not None and int(rec["frame_id"]) >= self.awaiting:
                self.awaiting = 0
                return True
        if time.monotonic_ns() - self.sent_ns > self.deadline_ns:
            self.dropped += 1  # a frame whose command never came
            self.awaiting = 0
            return True
        return False

    def _end_of_pass(self, item: Decoded) -> None:
        self._count_skipped()
        n, t = self.pass_frames, self.last_t
        if self.header_frames and n + self.corrupt + self.pass_damaged < self.header_frames:
            self.log.warning("%s: truncated: it ends after %d of the %d frames its header lists (at %.3f s)",
                             self.label, n, self.header_frames, t)
        if self.loop:
            self.log.info("%s: end of video after %d frames (%.2f s); looping", self.label, n, t)
            if self.first_t is not None:  # the next pass starts a frame period after this one's last frame
                period_ns = int(1e9 / item.rate) if item.rate else self.frame_ns  # the rate the "end" carries
                self.offset_ns += int((t - self.first_t) * 1e9) + period_ns
            self.first_t, self.pass_frames, self.corrupt, self.pass_damaged = None, 0, 0, 0
            return
        self.detect_stalls = False
        self.end_line = f"end of video {self.label} after {self.frames} frames ({t:.2f} s)"  # all passes
        self.log.info("%s", self.end_line)
        self.ended_ns = time.monotonic_ns()
        if self.frames and not self.awaiting and self.pacing != "closed":
            self.awaiting = self.id_base + self.frames  # the last frame's command, before the run ends

    def _drain(self) -> None:
        """The file ended: wait for the last frame's command (at most DRAIN_NS), then end the run."""
        if self.awaiting and time.monotonic_ns() - self.ended_ns < DRAIN_NS:
            msg = self.commands.recv(20)
            rec = self.decode(msg, MsgType.COMMAND) if msg is not None else None
            if rec is None or int(rec["frame_id"]) < self.awaiting:
                return
        self.input_ended = self.end_line
        self.ctx.stop.set()  # run_stage returns INPUT_ENDED: the supervisor ends the run

    def _lost(self, why: str) -> None:
        if not self.live:  # a file that cannot be read on (its decoding thread ended): the run ends, looping or not
            self.log.error("%s: cannot read on after frame %d (%.3f s): %s", self.label, self.pass_frames,
                           self.last_t, why)
            if self.loop:  # opening it again failed, or a pass of a loop: not a truncated file, not a loop now
                self.loop, self.header_frames = False, 0
            self._end_of_pass(Decoded("end", index=self.pass_frames, time_s=self.last_t))
            self.end_line += f"; it cannot be read on: {why}"
            return
        why = why if self.uri in why else f"{self.label}: {why}"
        again = self.stream_lost  # a reconnect that failed: camera_lost said so the first time
        self.stream_lost = True
        self.camera_lost(why)
        self._count_skipped()
        if self.decoder is not None:
            self.decoder.close()
            self.decoder = None
        self.pending = None
        wait = self.backoff.failed(time.monotonic_ns())
        if again:
            self.log.warning("reconnect failed: %s; next try in %.1f s", why, wait)
        else:
            self.log.info("%s: next try in %.1f s", self.label, wait)
