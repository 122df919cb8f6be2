"""capture (camera.source = "frames"): the same pre-rendered frames at a benchmark's pacing.

A benchmark needs identical input every run and a source whose per-frame cost is what a
camera driver's is (the image lands in a frame-pool slot), so that what is measured is the
pipeline. At setup this stage renders `camera.frames` distinct road images with the simulator
(poses along the road, a few lateral offsets); each tick copies the next one into a pool slot,
stamps CAPTURE and publishes the descriptor. The images are rendered in BGR and converted once,
at setup, to camera.format (runtime/pixconvert.py), so a tick's copy is a camera's whatever the
format. With `camera.cameras` = N > 1 the N cameras run in lock-step: one slot holds N images
((N, H, W, 3) in BGR), camera j showing image (i + j) mod K, and the preprocess stage turns it
into one batched tensor.

Pacing (`camera.pacing`), the scenarios of MLPerf LoadGen:
  fixed    a tick every 1/fps, like a camera; a tick missed by a whole period is skipped and
           counted as dropped (a camera does not queue frames)
  poisson  exponential gaps with mean 1/fps (seeded by camera.seed): arrivals that do not wait
           for the pipeline (LoadGen "server"); an arrival this stage is late for goes out late
           (its CAPTURE stamp says when), unless the stage is a second behind
  closed   the next frame once the command for the last one is out (LoadGen "single-stream"),
           but never sooner than 1/fps after the last frame; a command not seen within the
           deadline (control.deadline_ms) will never come (control drops results that old), so
           that frame is counted as dropped and the next one goes out.
"""

from __future__ import annotations

import time

import numpy as np

from edgert.runtime.pixconvert import BgrTo
from edgert.runtime.sim import PinholeCamera, Renderer, Road, initial_state
from edgert.runtime.stages.source import CameraSource
from edgert.runtime.transport import latest_reader
from edgert.runtime.wire import MsgType

LATERAL_OFFSETS_M = (0.0, -0.6, 0.6, -1.0, 1.0)  # the poses cycle through these, so steering varies frame to frame
SPACING_M = 7.0  # road distance between consecutive pre-rendered frames


def render_frames(cfg, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """n camera images (n, H, W, 3) uint8 BGR of the config's road, from its start pose onwards."""
    cam, sim = cfg.camera, cfg.sim
    road = Road(seed=sim.road_seed, length_m=sim.road_length_m, lane_width_m=sim.lane_width_m)
    camera = PinholeCamera(width=cam.width, height=cam.height, hfov_deg=sim.hfov_deg,
                           height_m=sim.camera_height_m, pitch_deg=sim.camera_pitch_deg)
    renderer = Renderer(road, camera)
    out = np.empty((n, cam.height, cam.width, 3), np.uint8)
    for i in range(n):
        s = sim.start_s_m + 20.0 + i * SPACING_M
        lateral = sim.start_lateral_m + LATERAL_OFFSETS_M[i % len(LATERAL_OFFSETS_M)]
        st = initial_state(road, s=s, lateral_m=lateral, heading_err=sim.start_heading_rad, speed=sim.speed_mps)
        renderer.render(st.x, st.y, st.yaw, out[i], s_hint=s)
    return out


def camera_frames(cfg, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """`render_frames` in camera.format: (n, *one image's shape of runtime/topics.frame_shape)."""
    bgr = render_frames(cfg, n)
    cam = cfg.camera
    if cam.format == "bgr":
        return bgr
    conv = BgrTo(cam.format, cam.height, cam.width)
    out = np.empty((n, *conv.shape), np.uint8)
    for img, dst in zip(bgr, out):
        conv(img, dst)
    return out


class FramesStage(CameraSource):
    detect_stalls = False  # benchmark pacing (poisson, closed) leaves gaps by design

    def setup(self) -> None:
        cam = self.cfg.camera
        self.n_cams = cam.cameras
        self.period_ns = int(1e9 / cam.fps)
        self.pacing = cam.pacing or "fixed"  # "" = this source's own
        self.rng = np.random.default_rng(cam.seed)
        self.images = camera_frames(self.cfg, cam.frames)
        self._image_views = list(self.images)  # per-frame indexing creates no array objects
        self.shape = self.images.shape[1:] if self.n_cams == 1 else (self.n_cams, *self.images.shape[1:])
        self.deadline_ns = self.cfg.deadline_ns
        if self.pacing == "closed":  # only the closed loop waits for commands
            self.commands = self.own(latest_reader(self.ctx.zmq, self.ctx.endpoints, "commands"))
        self.open_camera(self.shape)
        self.index = 0  # next image
        self.awaiting = 0  # closed pacing: frame id whose command we wait for (0 = none)
        self.sent_ns = 0
        self.timeouts = 0  # closed pacing: commands never seen within the deadline

    # -- output: the frame pool (the naive baseline in bench/_naive.py overrides these two) --
    def open_output(self) -> None:
        super().open_output()
        self._slot_views = [[v] if self.n_cams == 1 else list(v) for v in self.output.views]

    def publish(self, frame_id: int, index: int) -> None:
        """Copy the tick's image(s) into a slot (as a camera's DMA would), stamp, publish the descriptor."""
        slot, _ = self.output.acquire()
        k = len(self._image_views)
        for j, dst in enumerate(self._slot_views[slot]):
            np.copyto(dst, self._image_views[(index + j) % k])
        self.output.publish(slot, frame_id)

    # -- loop ---------------------------------------------------------------------------
    def on_start(self) -> None:
        cam = self.cfg.camera
        self.log.info("started: %d x %dx%d %s frames, %s pacing at %.1f fps", self.n_cams, cam.width, cam.height,
                      cam.format, self.pacing, cam.fps)

    def _command_seen(self) -> bool:
        """Closed pacing: has the command for the awaited frame gone out (or will it never)?"""
        now = time.monotonic_ns()
        left_ns = self.sent_ns + self.deadline_ns - now
        msg = self.commands.recv(max(0, min(100, left_ns // 1_000_000 + 1)))
        if msg is not None:
            rec = self.decode(msg, MsgType.COMMAND)
            if rec is not None and int(rec["frame_id"]) >= self.awaiting:
                return True
        if time.monotonic_ns() - self.sent_ns > self.deadline_ns:
            self.timeouts += 1
            self.dropped += 1  # a frame whose command never came
            return True
        return False

    def tick(self) -> None:
        if self.awaiting:
            if not self._command_seen():
                return
            self.awaiting = 0
        if not self.wait_until(self.next_tick):
            return
        gap = int(self.rng.exponential(self.period_ns)) if self.pacing == "poisson" else self.period_ns
        now = time.monotonic_ns()
        if self.pacing == "closed":
            self.next_tick = now + gap  # the cap counts from this frame, not from a schedule
        else:
            self.next_tick += gap
            late = now - self.next_tick
            if self.pacing == "fixed":  # the next tick is due already: skip, as a camera would
                self.skip_missed(now)
            elif late > 1_000_000_000:  # poisson arrivals go out late rather than vanish, unless a second behind
                self.dropped += int(late // self.period_ns)
                self.next_tick = now
        frame_id = self.id_base + self.frames + 1
        self.publish(frame_id, self.index)
        self.index = (self.index + 1) % len(self._image_views)
        self.frames += 1
        if self.pacing == "closed":
            self.sent_ns = time.monotonic_ns()
            self.awaiting = frame_id

