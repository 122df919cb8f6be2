"""The naive baseline: the same four stage processes, built the way one writes them by hand.

    capture     a fresh copy of the frame (what cv2.VideoCapture.read returns), pickled through
                ZeroMQ with send_pyobj
    preprocess  recv_pyobj, then the cv2 + NumPy chain (a YUV camera.format decoded with cvtColor
                first, then crop, resize, cvtColor, astype, normalise, transpose:
                kernels.reference_preprocess), pickled on
    infer       recv_pyobj, plain `session.run(None, {name: ndarray})`, outputs pickled on
    control     recv_pyobj, decode and clamp the steering, publish the product's COMMAND message

Every stage reads its input in order, one message after another, as a plain `recv` loop
does (no latest-only reading: a backlog queues, up to a high-water mark of HWM messages a socket).
The stamps are taken at the same points as edgert's, and the commands go out on the same
`commands` topic in the same wire format, so telemetry, the closed-loop pacing and the
benchmark read both pipelines alike. The session uses edgert's SessionOptions (one intra-op
thread, no spinning), so the comparison is of the pipeline, not of ONNX Runtime's settings
(`bench infer` compares those).

PICKLE IS FORBIDDEN ON THE PRODUCT WIRE (docs/wire.md): it stays in this module, which only the
benchmark runs, and only over ipc:// or inproc:// sockets of the benchmark's own run (a 0700
run directory); `_sockets_allowed` refuses tcp://.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnxruntime as ort
import zmq

from edgert.kernels import reference_preprocess
from edgert.runtime import wire
from edgert.runtime.engine import session_options
from edgert.runtime.providers import plan
from edgert.runtime.signing import approved_manifest
from edgert.runtime.stage import Stage
from edgert.runtime.stages.frames import FramesStage
from edgert.runtime.transport import publisher
from edgert.runtime.wire import CommandFlags, MsgType, Stamp

# ZeroMQ's default high-water mark (1000 messages) would let a backlog of 1080p frames (6-25 MB
# each) grow to gigabytes; 4 bounds it and still queues, as a plain recv loop does.
HWM = 4

STAGE_CLASSES = {
    "capture": "edgert.bench._naive:NaiveCapture",
    "preprocess": "edgert.bench._naive:NaivePreprocess",
    "infer": "edgert.bench._naive:NaiveInfer",
    "control": "edgert.bench._naive:NaiveControl",
}


def _sockets_allowed(stage: Stage) -> None:
    if stage.ctx.endpoints.transport not in ("ipc", "inproc"):
        raise RuntimeError(f"the naive baseline pickles frames; it runs over ipc:// or inproc:// only, "
                           f"not {stage.ctx.endpoints.transport}:// (set pipeline.transport = \"ipc\")")


def _pub(stage: Stage, topic: str) -> zmq.Socket:
    _sockets_allowed(stage)
    sock = stage.own(stage.ctx.zmq.socket(zmq.PUB))  # as written by hand, but for the high-water mark:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.bind(stage.ctx.endpoints(topic))
    return sock


def _sub(stage: Stage, topic: str) -> zmq.Socket:
    _sockets_allowed(stage)
    sock = stage.own(stage.ctx.zmq.socket(zmq.SUB))
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.connect(stage.ctx.endpoints(topic))
    return sock


class _NaiveStage(Stage):
    """recv_pyobj in order, do the work, send_pyobj on: subclasses fill in `work`."""

    in_topic = out_topic = ""

    def setup(self) -> None:
        self.manifest = approved_manifest(self.cfg, pin=self.ctx.manifest_sha256)  # as edgert loads it
        self.inp = _sub(self, self.in_topic)
        self.out = _pub(self, self.out_topic) if self.out_topic else None
        self.prepare()

    def prepare(self) -> None:
        pass

    def work(self, msg: dict) -> None:
        raise NotImplementedError

    def step(self) -> None:
        if not self.inp.poll(100):
            return
        msg = self.inp.recv_pyobj()  # benchmark-only; see the module docstring
        if not self.accept_frame_id(int(msg["frame_id"])):
            return
        self.work(msg)
        self.frames += 1


class NaiveCapture(FramesStage):
    """The frames source's pacing, publishing pickled copies instead of pool descriptors."""

    def open_output(self) -> None:
        self.sock = _pub(self, "frames")
        self.stamps = np.zeros(wire.N_STAMPS, np.uint64)

    def publish(self, frame_id: int, index: int) -> None:
        k = len(self._image_views)
        if self.n_cams == 1:
            frame = self._image_views[index].copy()
        else:
            frame = np.stack([self._image_views[(index + j) % k] for j in range(self.n_cams)])
        stamps = np.zeros(wire.N_STAMPS, np.uint64)
        stamps[Stamp.CAPTURE] = time.monotonic_ns()
        self.sock.send_pyobj({"frame_id": frame_id, "stamps": stamps, "frame": frame})


class NaivePreprocess(_NaiveStage):
    name = "preprocess"
    in_topic, out_topic = "frames", "tensors"

    def prepare(self) -> None:
        cam = self.cfg.camera  # the camera's own format, decoded as a user would (cv2.cvtColor)
        self.spec = dataclasses.replace(self.manifest.preprocess, src_format=cam.format,
                                        yuv_matrix=cam.yuv_matrix, yuv_range=cam.yuv_range)

    def work(self, msg: dict) -> None:
        t = time.monotonic_ns()
        frame, spec = msg["frame"], self.spec
        frames = [frame] if self.cfg.camera.cameras == 1 else list(frame)
        tensor = np.concatenate([reference_preprocess(spec, f) for f in frames])
        msg["stamps"][Stamp.PRE_RECV] = t
        msg["stamps"][Stamp.PRE_DONE] = time.monotonic_ns()
        assert self.out is not None  # it has an out_topic
        self.out.send_pyobj({"frame_id": msg["frame_id"], "stamps": msg["stamps"], "tensor": tensor})


class NaiveInfer(_NaiveStage):
    name = "infer"
    in_topic, out_topic = "tensors", "results"

    def prepare(self) -> None:
        threads = self.cfg.infer.intra_op_threads or 1
        self.session = ort.InferenceSession(self.manifest.read_verified(), sess_options=session_options(threads),
                                            providers=plan(self.cfg.infer.providers).chosen)
        self.input_name = self.manifest.inputs[0].name
        zeros = np.zeros(self.manifest.inputs[0].shape, self.manifest.inputs[0].dtype)
        for _ in range(self.cfg.infer.warmup_runs):
            self.session.run(None, {self.input_name: zeros})

    def work(self, msg: dict) -> None:
        t = time.monotonic_ns()
        outputs = self.session.run(None, {self.input_name: msg["tensor"]})
        msg["stamps"][Stamp.INFER_RECV] = t
        msg["stamps"][Stamp.INFER_DONE] = time.monotonic_ns()
        assert self.out is not None  # it has an out_topic
        self.out.send_pyobj({"frame_id": msg["frame_id"], "stamps": msg["stamps"], "outputs": outputs})


class NaiveControl(_NaiveStage):
    """Decode, clamp, publish: no deadline watchdog or rate limit (the naive version has none)."""

    name = "control"
    in_topic = "results"

    def prepare(self) -> None:
        dec = self.manifest.decoder
        names = [o.name for o in self.manifest.outputs]
        self.output_index, self.value_index, self.scale = names.index(dec.output), dec.index, dec.scale
        self.max_steer = self.cfg.control.max_steer_rad
        self.pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "commands"))
        self.cmd = wire.new_message(MsgType.COMMAND)
        self.cmd["seq"] = time.monotonic_ns() // 1_000_000

    def work(self, msg: dict) -> None:
        t = time.monotonic_ns()
        value = float(np.asarray(msg["outputs"][self.output_index]).reshape(-1)[self.value_index]) * self.scale
        c = self.cmd
        c["seq"] += 1
        c["frame_id"] = msg["frame_id"]
        c["steer"] = min(max(value, -self.max_steer), self.max_steer)
        c["flags"] = int(CommandFlags.NONE)
        c["stamps"][:] = msg["stamps"]
        c["stamps"][Stamp.CTRL_RECV] = t
        sent = time.monotonic_ns()
        c["stamps"][Stamp.CTRL_SEND] = sent
        c["age_ns"] = sent - int(c["stamps"][Stamp.CAPTURE])
        self.pub.send(wire.encode(c))
