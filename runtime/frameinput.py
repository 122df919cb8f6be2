"""A stage's input of frames: newest descriptor only, validated, then the slot it names.

Shared by every stage that consumes a frame pool, so the checks are made once, the
same way: wire validation, the stream and the exact shape/dtype the stage was built
for, frame ids moving forward, and the slot's seqlock before and after use.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgert.runtime import wire
from edgert.runtime.framepool import FramePool, SlotError
from edgert.runtime.stage import Stage
from edgert.runtime.transport import latest_reader
from edgert.runtime.wire import MsgType, WireError


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
