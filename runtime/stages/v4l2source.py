"""capture (camera.source = "v4l2"): a V4L2 camera (camera.device, e.g. a USB/UVC camera).

At setup the device is probed (runtime/v4l2.py), the pixel format chosen from camera.format (the
pool slot's format: YUYV for yuyv, NV12/NV12M for nv12, YU12/YUV420M for i420, BGR3 or RGB3 for
bgr/rgb) or MJPEG with camera.device_format = "mjpeg" (decoded into a bgr/rgb slot), and the
size and rate set; what was asked and what the driver gave are logged. A device that is missing,
busy or lacks the format or size fails setup with an error listing what it offers.

Each tick dequeues the newest filled driver buffer (older ones still queued are skipped and
counted as dropped: a camera does not queue frames), copies it once into a pool slot (row pitch
dropped, planes packed; MJPEG: decoded) and publishes it stamped with the driver's capture time
(CLOCK_MONOTONIC, see `v4l2.capture_ns`). Gaps in the driver's sequence numbers count as dropped.

A camera that stops delivering (unplugged, stalled, only corrupt frames) for longer than the
control deadline is reported with `camera_lost`; one gone for RECONNECT_AFTER_S, or unplugged,
is closed and reopened with a `Backoff`, and `camera_back` follows the first frame after.
"""

from __future__ import annotations

import time

import numpy as np

from edgert.runtime import v4l2
from edgert.runtime.backoff import Backoff
from edgert.runtime.stages.source import CameraSource
from edgert.runtime.wire import Stamp

RECONNECT_AFTER_S = 1.0  # no frame this long from an open device: close it and reopen (a wedged driver)
N_BUFFERS = 4  # driver buffers: one being copied, the rest for the driver to fill meanwhile


class V4L2Stage(CameraSource):
    """camera.source = "v4l2" (runtime/sources.py)."""

    def setup(self) -> None:
        self.capture: v4l2.Capture | None = None  # first: teardown runs after a failed setup too
        self.src: list[list[np.ndarray]] = []
        cam = self.cfg.camera
        self.path = cam.device
        self.width, self.height, self.fps = cam.width, cam.height, cam.fps
        self.slot_format = cam.format
        self.mjpeg = cam.device_format == "mjpeg"
        self.period_ns = int(1e9 / cam.fps)
        self.open_camera(v4l2.slot_shape(self.slot_format, cam.width, cam.height))
        self.parts = [v4l2.slot_parts(v, self.slot_format, cam.width, cam.height) for v in self.output.views]
        self.stamps = np.zeros_like(self.output.msg["stamps"])
        self.stall_ns = max(self.cfg.deadline_ns, 2 * self.period_ns)
        self.backoff = Backoff()
        self.lost = False
        self.corrupt = 0
        self.host_stamped = 0  # frames stamped at dequeue, the driver's stamp not being monotonic or sane
        self._open()  # a device missing, busy or lacking the format at start is the user's to fix: setup fails

    # -- the device ------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            dev = v4l2.probe(self.path)
        except OSError as e:
            raise v4l2.open_error(self.path, e) from None
        if dev is None:
            raise v4l2.CameraError(f"camera.device {self.path}: not a video capture device (a metadata or output "
                                   "node); `edgert cameras` lists the capture devices")
        if self.mjpeg:
            fmt = v4l2.choose(dev, v4l2.MJPEG_FOURCCS, self.width, self.height, 'camera.device_format = "mjpeg"')
        else:
            fmt = v4l2.choose(dev, v4l2.FOURCCS[self.slot_format], self.width, self.height,
                              f'camera.format = "{self.slot_format}"')
        cap = v4l2.Capture(dev, fmt, self.width, self.height, self.fps, N_BUFFERS)
        g = cap.geometry
        try:
            self.src = [] if self.mjpeg else [v4l2.source_views(g, bufs, self.slot_format) for bufs in cap.buffers]
        except ValueError as e:
            cap.close()
            raise v4l2.CameraError(f"camera.device {self.path}: {e}") from None
        self.capture = cap
        self.last_frame_ns = time.monotonic_ns()
        self.last_seq = -1
        self.log.info("%s (%s, %s): asked %s %dx%d at %g fps for a %s slot; the driver gave %s %dx%d, row pitch %s, "
                      "at %s; %d memory-mapped buffers%s", self.path, dev.card, dev.driver, "/".join(
                          v4l2.MJPEG_FOURCCS if self.mjpeg else v4l2.FOURCCS[self.slot_format]), self.width,
                      self.height, self.fps, self.slot_format, g.fourcc, g.width, g.height,
                      "n/a (compressed)" if self.mjpeg else "/".join(str(p.pitch) for p in g.planes),
                      f"{cap.fps_given:g} fps" if cap.fps_given else "a rate it does not report",
                      len(cap.buffers), ", decoded with OpenCV" if self.mjpeg else ", copied once into the slot")
        self._check_yuv(cap.yuv)
        if cap.fps_given and abs(cap.fps_given - self.fps) > 0.01 * self.fps:
            self.log.warning("%s runs at %g fps, not camera.fps = %g: frames come %s than the pipeline's period",
                             self.path, cap.fps_given, self.fps, "less often" if cap.fps_given < self.fps else "faster")

    def _check_yuv(self, driver: tuple[str | None, str]) -> None:
        """A YUV slot decodes as camera.yuv_matrix/yuv_range say: warn where the driver says otherwise."""
        if self.slot_format not in ("yuyv", "nv12", "i420"):
            return
        cam = self.cfg.camera
        ours = (cam.yuv_matrix, cam.yuv_range)
        matrix, rng = driver
        if matrix is None:
            self.log.warning("%s reports a YCbCr matrix the kernels do not decode (BT.2020 or SMPTE 240M); "
                             "frames decode as %s", self.path, ours[0])
        elif (matrix, rng) != ours:
            self.log.warning("%s reports %s %s range; camera.yuv_matrix/yuv_range decode it as %s %s: set "
                             "yuv_matrix = \"%s\", yuv_range = \"%s\" for true colours", self.path, matrix, rng,
                             *ours, matrix, rng)

    def _drop(self) -> None:
        """Close the device (after it vanished or stalled); the views into its buffers go first."""
        self.src = []
        if self.capture is not None:
            self.capture.close()
            self.capture = None

    def teardown(self) -> None:
        self._drop()
        super().teardown()

    # -- loop ------------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Frames the driver filled while the pipeline was starting are stale: requeue them unseen."""
        cap = self.capture
        if cap is not None:
            try:
                while (i := cap.read(0)) >= 0:
                    cap.release(i)
            except v4l2.CameraGone as e:
                self._gone(str(e))
        self.last_frame_ns = time.monotonic_ns()
        self.log.info("started: %s %dx%d into %s slots at %g fps", self.path, self.width, self.height,
                      self.slot_format, self.fps)

    def _gone(self, why: str) -> None:
        self.lost = True
        self.camera_lost(why)
        self._drop()
        self.backoff.failed(time.monotonic_ns())

    def _reconnect(self, now: int) -> None:
        if not self.backoff.due(now):
            self.ctx.stop.wait(0.02)
            return
        try:
            self._open()
        except (v4l2.CameraError, OSError) as e:
            wait = self.backoff.failed(now)
            (self.log.warning if self.backoff.attempts <= 2 else self.log.debug)(
                "reopening %s failed (%s); next try in %.1f s", self.path, e, wait)

    def tick(self) -> None:
        now = time.monotonic_ns()
        cap = self.capture
        if cap is None:
            self._reconnect(now)
            return
        try:
            idx = cap.read(50)
            while idx >= 0:  # a newer frame ready too: skip the older one (counted here, not as a sequence gap)
                seq = cap.sequence
                nxt = cap.read(0)
                if nxt < 0:
                    break
                cap.release(idx)
                self._sequence(seq)
                self.dropped += 1
                idx = nxt
        except v4l2.CameraGone as e:
            self._gone(str(e))
            return
        if idx < 0:
            self._stalled(time.monotonic_ns())
            return
        try:
            published = self._publish(idx, cap)
        finally:
            try:
                cap.release(idx)
            except v4l2.CameraGone as e:
                self._gone(str(e))
        if published and self.capture is not None:  # (not gone while the buffer went back)
            self.last_frame_ns = time.monotonic_ns()
            if self.lost:
                self.lost = False
                self.backoff.reset()
                self.camera_back()
        elif self.capture is not None:
            self._stalled(time.monotonic_ns())

    def _stalled(self, now: int) -> None:
        quiet = now - self.last_frame_ns
        if quiet > self.stall_ns and not self.lost:
            self.lost = True
            self.camera_lost(f"no good frame from {self.path} for {quiet / 1e6:.0f} ms")
        if quiet > RECONNECT_AFTER_S * 1e9 and self.capture is not None:
            self.log.warning("%s: no frame for %.1f s; reopening it", self.path, quiet / 1e9)
            self._drop()

    def _publish(self, idx: int, cap: v4l2.Capture) -> bool:
        """The dequeued buffer into a slot, stamped and published; False for a corrupt frame."""
        self._sequence(cap.sequence)
        if cap.flags & v4l2.BUF_FLAG_ERROR or not cap.used:
            self._corrupt(f"the driver flagged frame {cap.sequence} as corrupt")
            return False
        slot, view = self.output.acquire()
        if self.mjpeg:
            if not v4l2.decode_mjpeg(memoryview(cap.buffers[idx][0])[: cap.used], view, self.slot_format == "rgb"):
                self._corrupt(f"MJPEG frame {cap.sequence} does not decode to {self.width}x{self.height}")
                return False  # the slot stays marked mid-write: no reader takes it
        else:
            v4l2.copy_frame(self.src[idx], self.parts[slot])
        now = time.monotonic_ns()
        ts, from_driver = v4l2.capture_ns(cap.flags, cap.secs, cap.usecs, now)
        if not from_driver:
            self.host_stamped += 1
            if self.host_stamped == 1:
                self.log.warning("%s: buffer timestamps are not CLOCK_MONOTONIC (flags 0x%x) or not sane; frames are "
                                 "stamped when dequeued instead", self.path, cap.flags)
        self.stamps[Stamp.CAPTURE] = ts
        self.output.publish(slot, self.id_base + self.frames + 1, self.stamps)
        self.frames += 1
        return True

    def _sequence(self, seq: int) -> None:
        """Frame `seq` came from the driver: numbers it skipped (it had no free buffer) count as dropped."""
        if self.last_seq >= 0 and seq > self.last_seq + 1:
            self.dropped += seq - self.last_seq - 1
        self.last_seq = seq

    def _corrupt(self, why: str) -> None:
        self.corrupt += 1
        self.dropped += 1
        self.reject(f"{self.path}: {why}")
