"""Shared-memory frame pool: N fixed slots per stream, each guarded by a seqlock.

Frames never travel through ZeroMQ on one host: the writer fills a slot in place and
publishes a small descriptor (slot, generation). A slot's generation is odd while it
is being written and even once complete. A reader checks the generation before and
after it uses the slot; if it changed, the writer lapped it and the frame is dropped
rather than read torn. The writer never waits for readers (latest-only semantics).

Layout of the segment (all little-endian):
    [0, 64)                header: magic "EDFP", version u32, n_slots u32, slot_bytes u64, data_offset u64
    [64, 64 + 64*n_slots)  one cache line per slot; its first u64 is the generation
    [data_offset, ...)     slot data, each slot page-aligned

Aligned 8-byte loads and stores of the generation are single accesses on x86-64 and aarch64;
their order against the data is kept by `edgert.runtime.fence.fence()` on both sides (a no-op on
x86-64, `dmb ish` on Arm; see runtime/fence.py and docs/decisions.md).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgert.runtime.errors import EdgertError
from edgert.runtime.fence import fence
from edgert.runtime.shm import Segment, segment_name

MAGIC = b"EDFP"
VERSION = 1
_HEADER = np.dtype([("magic", "S4"), ("version", "<u4"), ("n_slots", "<u4"), ("_pad", "<u4"),
                    ("slot_bytes", "<u8"), ("data_offset", "<u8")])
_LINE = 64
_PAGE = 4096


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class SlotError(EdgertError, ValueError):
    """A descriptor names a slot or size this pool cannot hold (a malformed message)."""


class FramePool:
    """One stream's slots. The supervisor `create`s it; stages `attach` by run id and stream name."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        head = np.frombuffer(segment.buf, dtype=_HEADER, count=1)[0]
        if bytes(head["magic"]) != MAGIC or int(head["version"]) != VERSION:
            raise ValueError(f"segment {segment.name!r} is not an edgert frame pool v{VERSION}")
        self.n_slots = int(head["n_slots"])
        self.slot_bytes = int(head["slot_bytes"])
        self._stride = _round_up(self.slot_bytes, _PAGE)
        self._data_offset = int(head["data_offset"])
        if self._data_offset + self.n_slots * self._stride > segment.size:
            raise ValueError(f"segment {segment.name!r} is truncated: header promises more slots than it holds")
        # Generation counters, one per cache line so writers and readers of different slots don't contend.
        self._gen = np.frombuffer(segment.buf, dtype="<u8", count=self.n_slots * (_LINE // 8),
                                  offset=_LINE)[:: _LINE // 8]
        self._raw = np.frombuffer(segment.buf, dtype=np.uint8)
        self._views: dict[tuple[int, tuple[int, ...], str], np.ndarray] = {}
        self._max_views = 4 * self.n_slots  # a few shapes per slot; descriptors cannot grow it past this
        self._next = 0

    @classmethod
    def create(cls, run_id: str, stream: str, n_slots: int, slot_bytes: int) -> FramePool:
        if n_slots < 2:
            raise ValueError(f"a frame pool needs at least 2 slots (got {n_slots}): "
                             "a writer must never wait for a reader")
        if slot_bytes <= 0:
            raise ValueError(f"slot_bytes must be positive, got {slot_bytes}")
        data_offset = _round_up(_LINE + _LINE * n_slots, _PAGE)
        size = data_offset + n_slots * _round_up(slot_bytes, _PAGE)
        seg = Segment.create(segment_name(run_id, stream), size)
        head = np.frombuffer(seg.buf, dtype=_HEADER, count=1)
        head["magic"] = MAGIC
        head["version"] = VERSION
        head["n_slots"] = n_slots
        head["slot_bytes"] = slot_bytes
        head["data_offset"] = data_offset
        del head
        return cls(seg)

    @classmethod
    def attach(cls, run_id: str, stream: str) -> FramePool:
        return cls(Segment.attach(segment_name(run_id, stream)))

    # -- views -----------------------------------------------------------------------
    def view(self, slot: int, shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """The slot's bytes as an array; cached, so the hot path creates no new objects. The size
        is computed exactly (math.prod: np.prod wraps at 2**64, so a crafted (65536,)*4 would pass
        as 0 bytes), and the cache is bounded: descriptors naming ever new shapes empty it rather
        than grow it."""
        key = (slot, shape, str(dtype))
        arr = self._views.get(key)
        if arr is None:
            if not 0 <= slot < self.n_slots:
                raise SlotError(f"slot {slot} outside pool of {self.n_slots} slots")
            if any(d < 0 for d in shape):
                raise SlotError(f"shape {shape} has a negative dimension")
            dt = np.dtype(dtype)
            nbytes = math.prod(shape) * dt.itemsize
            if nbytes > self.slot_bytes:
                raise SlotError(f"shape {shape} {dt} needs {nbytes} bytes, a slot holds {self.slot_bytes}")
            start = self._data_offset + slot * self._stride
            arr = self._raw[start:start + nbytes].view(dt).reshape(shape)
            if len(self._views) >= self._max_views:
                self._views.clear()
            self._views[key] = arr
        return arr

    # -- writer ------------------------------------------------------------------------
    def acquire(self) -> int:
        """Take the next slot round-robin and mark it being written (odd generation)."""
        slot = self._next
        self._next = (slot + 1) % self.n_slots
        g = int(self._gen[slot])
        self._gen[slot] = g + 1 if g % 2 == 0 else g + 2  # a crashed writer may have left it odd
        fence()  # odd before any byte of the new frame
        return slot

    def publish(self, slot: int) -> int:
        """Mark the slot complete; return the (even) generation to put in the descriptor."""
        g = int(self._gen[slot]) + 1
        fence()  # every byte of the frame before even
        self._gen[slot] = g
        return g

    # -- reader ------------------------------------------------------------------------
    def has_published(self) -> bool:
        """Has the writer ever started a frame here? For a reader (re)starting: is the stream already
        running, so that waiting for anything at setup would only lose frames?"""
        return bool((self._gen > 0).any())

    def is_current(self, slot: int, generation: int) -> bool:
        """True if the slot still holds exactly the frame the descriptor announced. Called before
        a reader uses the slot and again after: fenced on both sides for both uses."""
        if not 0 <= slot < self.n_slots:
            raise SlotError(f"slot {slot} outside pool of {self.n_slots} slots")
        fence()  # the reader's loads of the frame (the check after) before this load
        g = int(self._gen[slot])
        fence()  # this load before the reader's loads of the frame (the check before)
        return generation % 2 == 0 and g == generation

    def close(self) -> None:
        self._views.clear()
        self._gen = self._raw = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()
