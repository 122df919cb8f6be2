"""A stage's frames in and out: `FrameInput` takes the newest descriptor only, validated, then the
slot it names; `FrameOutput` fills a slot and publishes its descriptor.

Shared by every stage that consumes or produces a frame pool (a stream of runtime/topics.py), so
the checks are made once, the same way: wire validation, the stream and the exact shape/dtype
the stage was built for, frame ids moving forward, and the slot's seqlock before and after use;
and a descriptor is built in one place.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from edgert.runtime import wire
from edgert.runtime.framepool import FramePool, SlotError
from edgert.runtime.stage import Stage
from edgert.runtime.topics import StreamLayout, stream
from edgert.runtime.transport import Publisher, latest_reader, publisher
from edgert.runtime.wire import MsgType, Stamp, WireError


class FrameInput:
    def __init__(self, stage: Stage, topic: str, pool: FramePool, stream_id: int,
                 shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        self.stage = stage
        self.pool = pool
        self.stream_id = stream_id
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.dtype_code = wire.CODE_OF_DTYPE[self.dtype]
        self.reader = stage.own(latest_reader(stage.ctx.zmq, stage.ctx.endpoints, topic))
        self.overwritten = 0  # slot reused by the writer before or while we read it

    @classmethod
    def of(cls, stage: Stage, name: str, layout: StreamLayout) -> FrameInput:
        """The input of stream `name` (runtime/topics.py): its pool, its topic, its layout in this run."""
        s = stream(name)
        pool = stage.own(FramePool.attach(stage.ctx.run_id, name))
        return cls(stage, s.topic, pool, s.stream_id, layout.shape, layout.dtype)

    def next(self, timeout_ms: int) -> tuple[np.void, np.ndarray] | None:
        """The newest valid frame as (descriptor, slot view), or None."""
        msg = self.reader.recv(timeout_ms)
        if msg is None:
            return None
        try:
            rec, current = self._check(msg)
        except (WireError, SlotError) as e:
            self.stage.reject(e)
            return None
        if not current:  # overwritten already; the id gap it leaves is counted as a drop
            self.overwritten += 1
            return None
        # Only a descriptor whose slot really holds that frame may advance the frame id,
        # so a bogus id cannot lock the stage out of the real ones.
        if not self.stage.accept_frame_id(int(rec["frame_id"])):
            return None
        return rec, self.pool.view(int(rec["slot"]), self.shape, self.dtype)

    def _check(self, msg: bytes) -> tuple[np.void, bool]:
        """The validated descriptor, and whether its slot still holds that frame. Counts nothing."""
        rec = wire.decode(msg, MsgType.FRAME)
        ndim = int(rec["ndim"])
        shape = tuple(int(d) for d in rec["shape"][:ndim])
        if int(rec["stream"]) != self.stream_id or shape != self.shape or int(rec["dtype"]) != self.dtype_code:
            raise WireError(f"descriptor for stream {int(rec['stream'])} {shape} dtype code {int(rec['dtype'])}; "
                            f"this stage reads stream {self.stream_id} {self.shape} {self.dtype}")
        return rec, self.pool.is_current(int(rec["slot"]), int(rec["generation"]))

    def still_valid(self, rec: np.void) -> bool:
        """After using the slot: False (and counted as dropped) if the writer lapped us mid-read."""
        if self.pool.is_current(int(rec["slot"]), int(rec["generation"])):
            return True
        self.overwritten += 1
        self.stage.dropped += 1
        return False


class FrameOutput:
    """A stage's output of frames on stream `name`: a slot to fill, then its descriptor, published.

    `acquire` gives a slot and a view of it (views made once, in setup: nothing allocated per
    frame); `publish` completes the slot (its seqlock) and sends the descriptor on the stream's
    topic. A source that drops a frame it filled (a lossy link) calls `commit` and no `send`."""

    def __init__(self, stage: Stage, name: str, layout: StreamLayout) -> None:
        s = stream(name)
        self.shape = tuple(layout.shape)
        self.dtype = np.dtype(layout.dtype)
        self.pool = stage.own(FramePool.attach(stage.ctx.run_id, name))
        self.views = [self.pool.view(i, self.shape, self.dtype) for i in range(self.pool.n_slots)]
        self.msg = wire.new_message(MsgType.FRAME)
        self.msg["stream"] = s.stream_id
        self.msg["dtype"] = wire.CODE_OF_DTYPE[self.dtype]
        self.msg["ndim"] = len(self.shape)
        self.msg["shape"][: len(self.shape)] = self.shape
        self.pub: Publisher = stage.own(publisher(stage.ctx.zmq, stage.ctx.endpoints, s.topic))

    def acquire(self) -> tuple[int, np.ndarray]:
        """A free slot (never one a reader holds) and its view, to fill."""
        slot = self.pool.acquire()
        return slot, self.views[slot]

    def commit(self, slot: int) -> int:
        """The slot is filled: readers may take it. Its generation."""
        return self.pool.publish(slot)

    def send(self, slot: int, generation: int, frame_id: int, stamps: np.ndarray | None = None,
             flags: int = 0) -> None:
        """Publish the slot's descriptor. Without `stamps`, CAPTURE is stamped now (a source)."""
        f = self.msg
        f["slot"], f["generation"], f["frame_id"], f["flags"] = slot, generation, frame_id, flags
        if stamps is None:
            f["stamps"][:] = 0
            f["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        else:
            f["stamps"][:] = stamps
        self.pub.send(wire.encode(f))

    def publish(self, slot: int, frame_id: int, stamps: np.ndarray | None = None, flags: int = 0) -> None:
        """commit + send."""
        self.send(slot, self.commit(slot), frame_id, stamps, flags)
