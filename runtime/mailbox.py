"""A topic's newest message in shared memory, with a futex doorbell: the one-host fast path.

Every hop between stages is latest-only (transport.LatestReader), so a single slot holds
all a reader needs. The publisher writes the message under a seqlock and wakes every
waiter with one futex call; a reader waits on the same word and copies the message out.
That takes one kernel wake-up per hop instead of ZeroMQ's chain through two I/O threads,
which dominated the pipeline's own cost on the 2-core VM (docs/benchmarks.md, "Mailboxes").

The topic keeps its ZeroMQ socket for every other reader (the recorder, telemetry, `edgert echo`):
the publisher sends the same message there too, but only while something subscribes
(transport.Publisher; which topics have a mailbox in a run is `transport.Endpoints.route`).

Layout of the segment (little-endian):
    [0, 64)     header: magic "EDMB", version u32, capacity u32
    [64, 68)    sequence u32, the futex word: odd while the message is being written
    [68, 72)    length of the message, bytes
    [128, ...)  the message

Like the frame pool's seqlock, the order of the sequence word against the message is kept by
`edgert.runtime.fence.fence()` (runtime/fence.py). Mailboxes are still used only on x86-64 until a run
on Arm hardware has tested them; see docs/decisions.md.
"""

from __future__ import annotations

import ctypes
import platform
import time

import numpy as np

from edgert.runtime import futex
from edgert.runtime.fence import fence
from edgert.runtime.shm import Segment, segment_name

MAGIC = b"EDMB"
VERSION = 1
CAPACITY = 4096  # every wire message is far smaller (runtime/wire.py)
_DATA = 128
_TORN_RETRIES = 3  # copies overtaken by a newer post before take() gives up until the next wait


def unsupported() -> str:
    """Why mailboxes cannot be used on this machine, or "" where they can."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return (f"mailboxes have been tested only on x86-64, not yet on {platform.machine()} hardware "
                "(their seqlock is fenced for Arm: docs/decisions.md)")
    if not futex.available():
        return f"no futex(2) on {platform.system()}"
    return ""


def _name(topic: str) -> str:
    return f"mbox-{topic}"


class Mailbox:
    """One topic's slot. The supervisor `create`s it for the run; stages `attach` by run id and topic."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        try:
            head = bytes(segment.buf[:12])
            if head[:4] != MAGIC or int.from_bytes(head[4:8], "little") != VERSION:
                raise ValueError(f"segment {segment.name!r} is not an edgert mailbox v{VERSION}")
            self.capacity = int.from_bytes(head[8:12], "little")
            if _DATA + self.capacity > segment.size:
                raise ValueError(f"segment {segment.name!r} is truncated: {segment.size} bytes, "
                                 f"the header promises {_DATA + self.capacity}")
            words = np.frombuffer(segment.buf, dtype="<u4", count=2, offset=64)
            self._seq, self._len = words[0:1], words[1:2]
            self._word = ctypes.c_uint32.from_buffer(segment.buf, 64)  # keeps the mapping alive for the futex
            self.futex = futex.Futex(ctypes.addressof(self._word))
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, run_id: str, topic: str, capacity: int = CAPACITY) -> Mailbox:
        seg = Segment.create(segment_name(run_id, _name(topic)), _DATA + capacity)
        seg.buf[:12] = MAGIC + VERSION.to_bytes(4, "little") + capacity.to_bytes(4, "little")
        try:
            return cls(seg)
        except BaseException:
            seg.unlink()
            raise

    @classmethod
    def attach(cls, run_id: str, topic: str) -> Mailbox:
        return cls(Segment.attach(segment_name(run_id, _name(topic))))

    @property
    def seq(self) -> int:
        return int(self._seq[0])

    def post(self, data: bytes) -> None:
        """Replace the message and wake every reader; never waits for them."""
        n = len(data)
        if n > self.capacity:
            raise ValueError(f"a {n}-byte message does not fit the {self.capacity}-byte mailbox "
                             f"{self.segment.name!r}")
        s = self.seq
        s = (s + 1 if s % 2 == 0 else s + 2) & 0xFFFFFFFF  # a crashed writer may have left it odd
        self._seq[0] = s
        fence()  # odd before the message
        self._len[0] = n
        self.segment.buf[_DATA:_DATA + n] = data
        fence()  # the message before even
        self._seq[0] = (s + 1) & 0xFFFFFFFF
        self.futex.wake()

    def close(self) -> None:
        """Unmap; safe to call twice."""
        self._seq = self._len = self._word = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


class MailboxSource:
    """A reader's side of a mailbox, in the shape transport.LatestReader reads from."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        s = mailbox.seq
        self.last = s - 1 if s % 2 else s  # only what is posted from now on (a write under way counts)
        self.lost = 0  # messages replaced before this reader took them

    def wait(self, timeout_ms: float) -> bool:
        """Sleep until a message newer than the last one taken is complete, or `timeout_ms` passes."""
        mb = self.mailbox
        end = time.monotonic_ns() + max(0, int(timeout_ms * 1_000_000))
        while True:
            s = mb.seq
            if s != self.last and s % 2 == 0:
                return True
            left = end - time.monotonic_ns()
            if left <= 0:
                return False
            mb.futex.wait(s, left)

    def take(self) -> bytes | None:
        """The newest message if it is new to this reader, else None; never blocks. While a write
        is under way it returns None too: `wait` then sleeps until the writer's wake-up (never a
        spin, which in threads mode would hold the GIL the writer needs to finish)."""
        mb = self.mailbox
        buf = mb.segment.buf
        for _ in range(_TORN_RETRIES):
            s = mb.seq
            if s == self.last or s % 2:
                return None
            fence()  # the word before the message
            n = int(mb._len[0])
            data = bytes(buf[_DATA:_DATA + min(n, mb.capacity)])
            fence()  # the message before the word again
            if mb.seq != s:
                continue  # overwritten while we copied: take the newer one
            gap = ((s - self.last) & 0xFFFFFFFF) // 2
            self.lost += gap - 1
            self.last = s
            return data
        return None

    def close(self) -> None:
        self.mailbox.close()
