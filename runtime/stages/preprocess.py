"""preprocess: camera slot -> model input slot, in one fused Numba pass.

The kernel is specialised for the model's manifest spec, the camera's frame size and its pixel
format (camera.format: a YUV slot is decoded in the same pass, BT.601/709 and the range per
camera.yuv_matrix / yuv_range), and compiled (or loaded from Numba's cache) and warmed up in
setup, never on a frame.
"""

from __future__ import annotations

import dataclasses
import time

import numba
import numpy as np

from edgert.kernels import Preprocessor
from edgert.runtime import wire
from edgert.runtime.camhealth import CameraHealth
from edgert.runtime.config import ConfigError
from edgert.runtime.frameinput import FrameInput, FrameOutput
from edgert.runtime.manifest import ModelError
from edgert.runtime.node import Node
from edgert.runtime.signing import approved_manifest
from edgert.runtime.topics import CAMERA_STREAM, TENSOR_STREAM, layout
from edgert.runtime.wire import Stamp

__all__ = ["PreprocessStage", "TENSOR_STREAM"]  # TENSOR_STREAM: re-exported for older imports


class PreprocessStage(Node):
    name = "preprocess"

    def setup(self) -> None:
        cam = self.cfg.camera
        # signed, unaltered, approved for pipeline.market, and the one the supervisor pinned at start
        manifest = approved_manifest(self.cfg, pin=self.ctx.manifest_sha256)
        cam_layout = layout(CAMERA_STREAM, self.cfg)
        self.src_shape = cam_layout.shape if cam.cameras == 1 else cam_layout.shape[1:]  # one camera's image
        if self.cfg.preprocess.threads > 1:  # a serial kernel needs no thread pool
            numba.set_num_threads(min(self.cfg.preprocess.threads, numba.config.NUMBA_NUM_THREADS))
        # The model's spec reads the camera's own format: the manifest says what the model wants
        # (crop, size, colour, normalisation), the camera what its bytes are.
        spec = dataclasses.replace(manifest.preprocess, src_format=cam.format, yuv_matrix=cam.yuv_matrix,
                                   yuv_range=cam.yuv_range)
        # N cameras in lock-step (camera.cameras): one (N, *image) slot in, one batch-N tensor out
        try:
            self.pre = Preprocessor(spec, self.src_shape, threads=self.cfg.preprocess.threads, batch=cam.cameras)
        except ValueError as e:
            raise ConfigError(f"camera.format = {cam.format!r} at {cam.width}x{cam.height}: the preprocessing "
                              f"kernel cannot read it ({e}); set camera.format/width/height to what the kernel "
                              "reads (docs/kernels.md)") from None
        self.pre.warmup()
        self.out_shape = tuple(manifest.inputs[0].shape)
        if tuple(self.pre.out_shape) != self.out_shape:
            fix = (f"use a model whose batch is camera.cameras = {cam.cameras}, or set camera.cameras to "
                   f"{self.out_shape[0]}" if tuple(self.pre.out_shape[1:]) == self.out_shape[1:]
                   else f"fix {manifest.dir}/manifest.toml")
            raise ModelError(f"model input {manifest.inputs[0].name!r} is {self.out_shape} but the manifest's "
                             f"preprocess spec produces {tuple(self.pre.out_shape)} for {cam.cameras} camera(s); {fix}")
        self.input = FrameInput.of(self, CAMERA_STREAM, cam_layout)
        self.health = CameraHealth(int(np.prod(self.src_shape)), cam.dark_level, cam.frozen_frames,
                                   manifest.odd_mean_level, cameras=cam.cameras, fmt=cam.format,
                                   yuv_range=cam.yuv_range)
        if manifest.odd_mean_level is not None:
            lo, hi = manifest.odd_mean_level
            self.log.info("light check: frames with a mean level outside %g..%g (the model's [odd]) hand over", lo, hi)
        self.output = FrameOutput(self, TENSOR_STREAM, layout(TENSOR_STREAM, self.cfg, manifest.inputs[0]))
        self.stamps = np.zeros(wire.N_STAMPS, self.output.msg["stamps"].dtype)

    def step(self) -> None:
        got = self.input.next(100)
        if got is None:
            return
        rec, src = got
        t_recv = time.monotonic_ns()
        slot, dst = self.output.acquire()
        self.pre(src, dst)
        health = self.health.check(src)  # black, repeated or out-of-domain image: FrameFlags (runtime/camhealth.py)
        if not self.input.still_valid(rec):
            return  # the camera overwrote the frame while we read it; the tensor slot is reused later
        st = self.stamps
        st[:] = rec["stamps"]
        st[Stamp.PRE_RECV] = t_recv
        st[Stamp.PRE_DONE] = time.monotonic_ns()
        self.output.publish(slot, int(rec["frame_id"]), st, health)
        self.frames += 1
