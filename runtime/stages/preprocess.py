"""preprocess: camera slot -> model input slot, in one fused Numba pass.

The kernel is specialised for the model's manifest spec and the camera's frame size,
and compiled (or loaded from Numba's cache) and warmed up in setup, never on a frame.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from edgert.kernels import Preprocessor
from edgert.runtime import wire
from edgert.runtime.camhealth import CameraHealth
from edgert.runtime.frameinput import FrameInput
from edgert.runtime.framepool import FramePool
from edgert.runtime.signing import approved_manifest
from edgert.runtime.node import Node
from edgert.runtime.stages.capture import CAMERA_STREAM, STREAM_IDS
from edgert.runtime.transport import publisher
from edgert.runtime.wire import MsgType, Stamp

TENSOR_STREAM = "tensor"


class PreprocessStage(Node):
    name = "preprocess"

    def setup(self) -> None:
        cam = self.cfg.camera
        # signed, unaltered, approved for pipeline.market, and the one the supervisor pinned at start
        manifest = approved_manifest(self.cfg, pin=self.ctx.manifest_sha256)
        self.src_shape = (cam.height, cam.width, 3)
        if self.cfg.preprocess.threads > 1:  # a serial kernel needs no thread pool
            numba.set_num_threads(min(self.cfg.preprocess.threads, numba.config.NUMBA_NUM_THREADS))
        # N cameras in lock-step (camera.cameras): one (N, H, W, 3) slot in, one batch-N tensor out
        self.pre = Preprocessor(manifest.preprocess, self.src_shape, threads=self.cfg.preprocess.threads,
                                batch=cam.cameras)
        self.pre.warmup()
        self.out_shape = tuple(manifest.inputs[0].shape)
        if tuple(self.pre.out_shape) != self.out_shape:
            fix = (f"use a model whose batch is camera.cameras = {cam.cameras}, or set camera.cameras to "
                   f"{self.out_shape[0]}" if tuple(self.pre.out_shape[1:]) == self.out_shape[1:]
                   else f"fix {manifest.dir}/manifest.toml")
            raise ValueError(f"model input {manifest.inputs[0].name!r} is {self.out_shape} but the manifest's "
                             f"preprocess spec produces {tuple(self.pre.out_shape)} for {cam.cameras} camera(s); {fix}")
        frame_shape = self.src_shape if cam.cameras == 1 else (cam.cameras, *self.src_shape)
        self.out_dtype = np.dtype(manifest.inputs[0].dtype)
        cam_pool = self.own(FramePool.attach(self.ctx.run_id, CAMERA_STREAM))
        self.tensors = self.own(FramePool.attach(self.ctx.run_id, TENSOR_STREAM))
        self.input = FrameInput(self, "frames", cam_pool, STREAM_IDS[CAMERA_STREAM], frame_shape, np.uint8)
        self.health = CameraHealth(int(np.prod(self.src_shape)), cam.dark_level, cam.frozen_frames,
                                   manifest.odd_mean_level, cameras=cam.cameras)
        if manifest.odd_mean_level is not None:
            lo, hi = manifest.odd_mean_level
            self.log.info("light check: frames with a mean level outside %g..%g (the model's [odd]) hand over", lo, hi)
        self.pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "tensors"))
        self.out = wire.new_message(MsgType.FRAME)
        self.out["stream"] = STREAM_IDS[TENSOR_STREAM]
        self.out["dtype"] = wire.CODE_OF_DTYPE[self.out_dtype]
        self.out["ndim"] = len(self.out_shape)
        self.out["shape"][: len(self.out_shape)] = self.out_shape

    def step(self) -> None:
        got = self.input.next(100)
        if got is None:
            return
        rec, src = got
        t_recv = time.monotonic_ns()
        slot = self.tensors.acquire()
        self.pre(src, self.tensors.view(slot, self.out_shape, self.out_dtype))
        health = self.health.check(src)  # black, repeated or out-of-domain image: FrameFlags (runtime/camhealth.py)
        if not self.input.still_valid(rec):
            return  # the camera overwrote the frame while we read it; the tensor slot is reused later
        gen = self.tensors.publish(slot)
        o = self.out
        o["slot"], o["generation"], o["frame_id"] = slot, gen, rec["frame_id"]
        o["flags"] = health
        o["stamps"][:] = rec["stamps"]
        o["stamps"][Stamp.PRE_RECV] = t_recv
        o["stamps"][Stamp.PRE_DONE] = time.monotonic_ns()
        self.pub.send(wire.encode(o))
        self.frames += 1
