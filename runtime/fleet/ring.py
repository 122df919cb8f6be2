"""The recorder's memory: the last N seconds of every topic in one preallocated byte arena.

A car must not write everything it sees, yet a clip must start *before* the event that
triggers it, so the recorder keeps a bounded history in memory: entries older than
`max_age_ns` or pushed out by newer bytes (`capacity` bytes in all) are evicted, oldest
first. Nothing is allocated per entry: the arena and the entry index are allocated once.

One thread writes (the recorder's receive loop): `reserve` a region, copy into it,
`commit` (or `abort` if the copy turned out torn). Other threads read by sequence number:
`copy_out(seq)` returns the entry's bytes, or None if it was evicted, and it checks
eviction *after* copying, so a reader never gets bytes overwritten under it (the writer
evicts an entry before it reuses its bytes). That is how the clip writer follows the ring
without ever holding the receive loop up: if it falls behind, entries are evicted before
it copies them, and it counts them as dropped.
"""

from __future__ import annotations

import numpy as np

_INDEX = np.dtype([("t_ns", "<i8"), ("off", "<i8"), ("len", "<i8"), ("topic", "<i4"), ("_pad", "<i4")])


class Ring:
    """A bounded history of (topic id, time, bytes) entries, bounded by age and by bytes."""

    def __init__(self, capacity: int, max_age_ns: int, max_entries: int = 65536) -> None:
        if capacity <= 0 or max_age_ns <= 0 or max_entries < 2:
            raise ValueError(f"Ring: capacity {capacity} B, max age {max_age_ns} ns and max entries {max_entries} "
                             "must be positive (entries >= 2)")
        self.capacity = int(capacity)
        self.max_age_ns = int(max_age_ns)
        # Touched once here, at stage start: otherwise the kernel commits (faults in and zeroes) the
        # pages while the first ring_s of frames are copied in, ~1,500 faults per 1080p frame, and
        # that kernel time competes with the control path on a small machine.
        self.arena = np.empty(self.capacity, np.uint8)
        self.arena.fill(0)
        self.index = np.zeros(int(max_entries), _INDEX)
        self._n = int(max_entries)
        self.first = 0  # sequence number of the oldest live entry
        self.next = 0  # sequence number the next commit gets
        self.head = 0  # arena offset where the next entry goes
        self.evicted = 0  # entries pushed out (by age, bytes or index size), written or not
        self._res_off = -1
        self._res_len = 0

    def __len__(self) -> int:
        return self.next - self.first

    @property
    def bytes_used(self) -> int:
        if self.first == self.next:
            return 0
        start = int(self.index[self.first % self._n]["off"])
        return (self.head - start) if self.head > start else (self.capacity - start + self.head)

    # -- writer ------------------------------------------------------------------------
    def _evict_oldest(self) -> None:
        self.first += 1
        self.evicted += 1

    def reserve(self, nbytes: int) -> np.ndarray:
        """A writable view of `nbytes` in the arena, evicting the oldest entries it overlaps."""
        if not 0 < nbytes <= self.capacity:
            raise ValueError(f"an entry of {nbytes} bytes cannot fit a ring of {self.capacity} bytes; "
                             "raise record.ring_mb")
        off = self.head if self.head + nbytes <= self.capacity else 0
        # The arena is circular: live entries run from the oldest's offset to head. The bytes this
        # entry takes (plus the skipped tail when it wraps) are exactly the oldest entries' starts.
        lo, hi, tail = off, off + nbytes, off == 0 and self.head != 0
        while self.first < self.next:
            o = int(self.index[self.first % self._n]["off"])
            if lo <= o < hi or (tail and o >= self.head):
                self._evict_oldest()
            else:
                break
        self._res_off, self._res_len = off, nbytes
        return self.arena[off:off + nbytes]

    def commit(self, topic: int, t_ns: int) -> int:
        """Make the reserved region an entry of `topic` at time `t_ns`; returns its sequence number."""
        if self._res_off < 0:
            raise RuntimeError("Ring.commit without a reserve")
        if self.next - self.first >= self._n:  # the index is full: the oldest goes
            self._evict_oldest()
        seq = self.next
        e = self.index[seq % self._n]
        e["t_ns"], e["off"], e["len"], e["topic"] = t_ns, self._res_off, self._res_len, topic
        self.head = self._res_off + self._res_len
        self._res_off = -1
        self.next = seq + 1
        limit = t_ns - self.max_age_ns
        while self.first < self.next - 1 and int(self.index[self.first % self._n]["t_ns"]) < limit:
            self._evict_oldest()
        return seq

    def abort(self) -> None:
        """Forget the reserved region (e.g. a frame overwritten while it was copied)."""
        self._res_off = -1

    # -- readers (any thread) ------------------------------------------------------------
    def meta(self, seq: int) -> tuple[int, int, int] | None:
        """(topic, t_ns, length) of entry `seq`, or None if evicted or not yet written."""
        if not self.first <= seq < self.next:
            return None
        e = self.index[seq % self._n]
        topic, t_ns, n = int(e["topic"]), int(e["t_ns"]), int(e["len"])
        return (topic, t_ns, n) if seq >= self.first else None

    def topic_hint(self, seq: int) -> int:
        """The topic an evicted entry had, while its index slot has not been reused (-1 after that)."""
        if seq < self.next - self._n or seq >= self.next:
            return -1
        return int(self.index[seq % self._n]["topic"])

    def copy_out(self, seq: int) -> tuple[int, int, bytes] | None:
        """(topic, t_ns, a copy of the bytes) of entry `seq`, or None if it is (or got) evicted."""
        if not self.first <= seq < self.next:
            return None
        e = self.index[seq % self._n]
        topic, t_ns, off, n = int(e["topic"]), int(e["t_ns"]), int(e["off"]), int(e["len"])
        data = self.arena[off:off + n].tobytes()
        if seq < self.first:  # evicted while we copied: the bytes may be another entry's
            return None
        return topic, t_ns, data

    def find(self, t_ns: int) -> int:
        """The sequence number of the oldest live entry at or after `t_ns` (`next` if none)."""
        lo, hi = self.first, self.next
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self.index[mid % self._n]["t_ns"]) < t_ns:
                lo = mid + 1
            else:
                hi = mid
        return max(lo, self.first)
