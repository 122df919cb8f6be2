"""A road video from the simulator (`edgert sim clip`, and the video tests' clips).

Open loop: the camera rides along the seeded road at the simulator's speed, weaving gently
about the lane centre (WEAVE_M at WEAVE_PERIOD_S) so that the model's steering varies; no
controller and no vehicle model run. Encoded with FFmpeg through PyAV (H.264 or MPEG-4) at a
known frame count and rate, so a test knows exactly what a run on the clip must account for.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgert.runtime.config import PipelineConfig
from edgert.runtime.video import require_av

WEAVE_M = 0.5  # lateral amplitude about the lane centre
WEAVE_PERIOD_S = 4.0
CODECS = {"h264": ("libx264", "mp4"), "mpeg4": ("mpeg4", "mp4")}  # --codec -> (FFmpeg encoder, default container)


def render_drive(cfg: PipelineConfig, n: int, fps: float, width: int, height: int):  # type: ignore[no-untyped-def]
    """Yield n BGR frames (height, width, 3) of the road drive at `fps` (one buffer, rewritten each time)."""
    from edgert.runtime.sim import PinholeCamera, Renderer, Road, initial_state

    sim = cfg.sim
    road = Road(seed=sim.road_seed, length_m=sim.road_length_m, lane_width_m=sim.lane_width_m)
    camera = PinholeCamera(width=width, height=height, hfov_deg=sim.hfov_deg, height_m=sim.camera_height_m,
                           pitch_deg=sim.camera_pitch_deg)
    renderer = Renderer(road, camera)
    out = np.empty((height, width, 3), np.uint8)
    speed = sim.speed_mps or 15.0
    for i in range(n):
        t = i / fps
        s = (sim.start_s_m + speed * t) % sim.road_length_m
        lateral = sim.start_lateral_m + WEAVE_M * math.sin(2 * math.pi * t / WEAVE_PERIOD_S)
        st = initial_state(road, s=s, lateral_m=lateral, heading_err=0.0, speed=speed)
        renderer.render(st.x, st.y, st.yaw, out, s_hint=s)
        yield out


def write_clip(path: str | Path, frames, fps: float, codec: str = "h264",  # type: ignore[no-untyped-def]
               pix_fmt: str = "yuv420p", gop: int = 0) -> int:
    """Encode BGR frames into a video file at `fps`; the number of frames written. `gop`: a keyframe
    every so many frames (0: the encoder's default).

    MP4/MOV files get their index at the front (faststart), as streaming servers write them: a
    copy cut short is then still readable up to the cut, as a recording interrupted would be."""
    av = require_av()
    from fractions import Fraction

    encoder, _ = CODECS[codec]
    path = Path(path)
    opts = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    n = 0
    with av.open(str(path), "w", options=opts) as out:
        stream = None
        for img in frames:
            if stream is None:
                stream = out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = img.shape[:2]
                stream.pix_fmt = pix_fmt
                if gop:
                    stream.codec_context.gop_size = gop
                if encoder == "libx264":
                    stream.options = {"preset": "veryfast", "tune": "zerolatency"}  # no B-frame delay
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n


def road_clip(path: str | Path, cfg: PipelineConfig, seconds: float = 10.0, fps: float = 30.0,
              size: tuple[int, int] = (1920, 1080), codec: str = "h264") -> int:
    """The simulator's road drive as a video file (`edgert sim clip`); the number of frames."""
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"--size {w}x{h}: H.264 and MPEG-4 in yuv420p need an even width and height")
    n = max(1, round(seconds * fps))
    return write_clip(path, render_drive(cfg, n, fps, w, h), fps, codec)
