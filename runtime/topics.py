"""The data plane, declared once: every topic (who publishes it, what it carries, how often)
and every stream (the frame pools whose slots the frame descriptors name).

Like openpilot's cereal/services.py, these two tables are the single place a reader looks to
see the data flow; the supervisor creates the pools and mailboxes from them, and transport
endpoints, routes (runtime/transport.py) and telemetry are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgert.runtime.wire import MsgType


@dataclass(frozen=True)
class Topic:
    name: str
    msg: MsgType
    publisher: str  # stage name; "*" = every stage (connects to the supervisor's bound socket)
    rate_hz: float  # nominal, at the default camera rate
    bound_by_subscriber: bool = False  # many publishers -> one subscriber binds
    mailbox: bool = False  # one host: stages read it from a shared-memory mailbox (runtime/mailbox.py)


TOPICS: dict[str, Topic] = {t.name: t for t in (
    Topic("frames", MsgType.FRAME, "capture", 30.0, mailbox=True),       # descriptor of a camera slot
    Topic("tensors", MsgType.FRAME, "preprocess", 30.0, mailbox=True),   # descriptor of a model-input slot
    Topic("results", MsgType.RESULT, "infer", 30.0, mailbox=True),       # model outputs, validated
    Topic("commands", MsgType.COMMAND, "control", 30.0, mailbox=True),   # steering commands / takeover requests
    Topic("vehicle", MsgType.VEHICLE, "capture", 30.0, mailbox=True),    # simulator ground truth (pose, lane error)
    Topic("heartbeat", MsgType.HEARTBEAT, "*", 10.0, bound_by_subscriber=True),  # stages -> supervisor
    Topic("supervisor", MsgType.HEARTBEAT, "supervisor", 10.0),  # supervisor -> stages (start signal)
    # the camera descriptor of each frame the recorder is done with (copied, or counted as lost): a
    # max-speed replay (replay.speed = 0) waits for it, so it never outruns its own recording
    Topic("recorded", MsgType.FRAME, "recorder", 30.0, mailbox=True),
    # the camera source's state (frames flow, or the camera is lost and why): on every change, at the
    # start, and 4 times a second while lost; control hands over with TakeoverReason.CAMERA_LOST
    Topic("camera_state", MsgType.CAMERA, "capture", 4.0, mailbox=True),
)}


def topic(name: str) -> Topic:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; topics are: {', '.join(TOPICS)}") from None



@dataclass(frozen=True)
class Stream:
    """A frame pool: shared-memory slots one stage fills and later stages read, each frame named
    by a descriptor (MsgType.FRAME) on `topic`. Its shape and dtype follow from the run's config
    and model (`layout`); `slots` is the config field that sizes it."""

    name: str  # the pool's name in shared memory (runtime/framepool.py)
    stream_id: int  # the descriptor's "stream" field: a reader refuses another stream's descriptors
    topic: str  # where its descriptors go
    writer: str  # the stage that fills it
    slots: str  # "section.field" of the config holding the slot count
    what: str


STREAMS: dict[str, Stream] = {s.name: s for s in (
    Stream("camera", 1, "frames", "capture", "camera.pool_slots",
           "camera images in camera.format, uint8: bgr/rgb (H, W, 3), nv12/i420 (H * 3 // 2, W), yuyv "
           "(H, W, 2); (N, ...) of those for N cameras in lock-step"),
    Stream("tensor", 2, "tensors", "preprocess", "infer.pool_slots",
           "model inputs, the model's first input's shape and dtype"),
)}
CAMERA_STREAM = "camera"
TENSOR_STREAM = "tensor"
STREAM_IDS = {s.name: s.stream_id for s in STREAMS.values()}


@dataclass(frozen=True)
class StreamLayout:
    """What one slot of a stream holds in a given run."""

    shape: tuple[int, ...]
    dtype: np.dtype
    slots: int

    @property
    def slot_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; streams are: {', '.join(STREAMS)}") from None


def frame_shape(fmt: str, height: int, width: int) -> tuple[int, ...]:
    """One camera image's array shape in pixel format `fmt` (camera.format), packed: the layouts of
    kernels/formats.py without row padding, which the fused kernel reads as they are."""
    h, w = int(height), int(width)
    if fmt in ("bgr", "rgb"):
        return (h, w, 3)
    if fmt in ("nv12", "i420"):  # Y rows, then the 4:2:0 chroma in H / 2 rows of W bytes
        return (h * 3 // 2, w)
    if fmt == "yuyv":  # Y0 U Y1 V per two pixels
        return (h, w, 2)
    raise ValueError(f"camera.format {fmt!r}: no frame layout; formats are bgr, rgb, nv12, i420, yuyv")


def image_size(fmt: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(cameras, height, width) of a camera slot of `shape` in `fmt`: frame_shape's inverse."""
    one = 2 if fmt in ("nv12", "i420") else 3
    n = int(shape[0]) if len(shape) == one + 1 else 1
    rows, w = int(shape[-one]), int(shape[-one + 1])
    return n, (rows * 2 // 3 if fmt in ("nv12", "i420") else rows), w


def layout(name: str, cfg: Any, model_input: Any = None) -> StreamLayout:
    """Shape, dtype and slot count of stream `name` in a run of `cfg` (a PipelineConfig).
    `model_input` is the model's first input (a manifest TensorSpec: .shape, .dtype), which the
    tensor stream needs; the one place these are computed, for the supervisor and every stage."""
    s = stream(name)
    section, field = s.slots.split(".")
    slots = int(getattr(getattr(cfg, section), field))
    if name == CAMERA_STREAM:
        cam = cfg.camera
        one = frame_shape(cam.format, cam.height, cam.width)
        return StreamLayout(one if cam.cameras == 1 else (int(cam.cameras), *one), np.dtype(np.uint8), slots)
    if model_input is None:
        raise ValueError(f"stream {name!r}: its layout is the model input's; pass the manifest's inputs[0]")
    return StreamLayout(tuple(int(d) for d in model_input.shape), np.dtype(model_input.dtype), slots)


# -- user nodes' topics ([[nodes]], runtime/node.py) -------------------------------------------
USER_TOPICS: set[str] = set()  # the names in TOPICS that user nodes publish (this run's)


def register_user_topics(topics: list[Topic]) -> None:
    """Make this run's user-node output topics known, after the built-in ones (so their tcp ports
    follow the built-ins'); the previous run's are dropped. Called by runtime/node.resolve_nodes."""
    for name in USER_TOPICS:
        TOPICS.pop(name, None)
    USER_TOPICS.clear()
    for t in topics:
        if t.name in TOPICS:
            raise ValueError(f"topic {t.name!r} is a built-in topic; a node's output needs another name")
        TOPICS[t.name] = t
        USER_TOPICS.add(t.name)
