"""`edgert bench pipeline --video FILE`: the single-stream scenario on decoded video.

The pipeline runs the video source (runtime/stages/videosource.py) on the file, looped, with
closed pacing; the standalone timings run on the file's first frames; and decode cost is timed
here, per frame, for each pool format: FFmpeg's decode plus the write into a packed slot
(runtime/video.py SlotWriter: swscale + one copy for BGR, plane copies for NV12).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgert.runtime.config import PipelineConfig, choices
from edgert.runtime.errors import UsageError

FORMATS = ("bgr", "nv12")  # what the decode cost is reported for (NV12 slots: (H * 3 // 2, W))


def video_config(cfg: PipelineConfig, path: str | Path) -> PipelineConfig:
    """The single-stream config with the video source on `path` (looped, closed pacing, the config's size)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--video {path}: no such file; make one with `edgert sim clip {path}`")
    return cfg.replace(camera={"source": "video", "uri": str(p.resolve()), "loop": True, "pacing": "closed",
                               "cameras": 1, "frames": 8})


def nv12_runs() -> bool:
    """Whether the pipeline takes NV12 camera slots in this build (camera.format)."""
    return "nv12" in choices("camera.format")


def _frames(path: str, n: int):  # type: ignore[no-untyped-def]
    """Decoded frames of the file, started over at its end, n in all (decode time included in the caller's)."""
    from edgert.runtime.video import open_video

    got = 0
    while got < n:
        o = open_video(path)
        try:
            for f in o.container.decode(o.stream):
                yield f
                got += 1
                if got >= n:
                    return
        finally:
            o.close()
        if got == 0:
            raise UsageError(f"--video {path}: no frame decodes")


def decode_images(cfg: PipelineConfig, n: int) -> np.ndarray:
    """The file's first n frames as the pipeline's BGR images (n, H, W, 3), for the standalone timings."""
    from edgert.runtime.video import SlotWriter

    cam = cfg.camera
    write = SlotWriter("bgr", cam.width, cam.height, cam.uri)
    out = np.empty((n, cam.height, cam.width, 3), np.uint8)
    for i, f in enumerate(_frames(cfg.camera.uri, n)):
        write(f, out[i])
    return out


def decode_cost(cfg: PipelineConfig, n: int) -> dict[str, np.ndarray]:
    """Per frame, ns: decode + write into a packed slot of each format ("decode:bgr", "decode:nv12")."""
    from edgert.runtime.video import SlotWriter

    cam = cfg.camera
    out = {}
    for fmt in FORMATS:
        shape = (cam.height, cam.width, 3) if fmt == "bgr" else (cam.height * 3 // 2, cam.width)
        slot = np.empty(shape, np.uint8)
        write = SlotWriter(fmt, cam.width, cam.height, cam.uri)
        times = np.empty(n, np.int64)
        it = _frames(cfg.camera.uri, n)
        for i in range(n):
            t0 = time.perf_counter_ns()
            f = next(it)
            write(f, slot)
            times[i] = time.perf_counter_ns() - t0
        out[f"decode:{fmt}"] = times
    return out


def kernel_cost(cfg: PipelineConfig, n: int, fmt: str = "nv12") -> np.ndarray:
    """The fused preprocess kernel alone on the file's frames in `fmt` slots, ns per frame (hot, in this
    process): beside standalone:preprocess (BGR), what the kernel's YUV decode costs."""
    import dataclasses

    from edgert.kernels import Preprocessor
    from edgert.runtime.signing import approved_manifest
    from edgert.runtime.topics import frame_shape
    from edgert.runtime.video import SlotWriter

    cam = cfg.camera
    shape = frame_shape(fmt, cam.height, cam.width)
    k = cam.frames
    images = np.empty((k, *shape), np.uint8)
    write = SlotWriter(fmt, cam.width, cam.height, cam.uri)
    for i, f in enumerate(_frames(cam.uri, k)):
        write(f, images[i])
    spec = dataclasses.replace(approved_manifest(cfg).preprocess, src_format=fmt, yuv_matrix=cam.yuv_matrix,
                               yuv_range=cam.yuv_range)
    pre = Preprocessor(spec, shape, threads=cfg.preprocess.threads)
    pre.warmup()
    dst = np.empty(pre.out_shape, np.float32)
    times = np.empty(n, np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        pre(images[i % k], dst)
        times[i] = time.perf_counter_ns() - t0
    return times
