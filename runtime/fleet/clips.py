"""Which stretch of the ring becomes a file, and the thread that writes it.

A car records around events, not everything: in mode "clips" an event (a takeover request,
an operator trigger) at time T opens a clip from T - pre_s, the clip grows with every
further event, and it closes post_s after the last one. In mode "all" everything is
written, in files of at most segment_s (so are very long clips). A clip that starts
before the ring's oldest entry says by how much its pre-roll is short.

The writer runs on a thread of its own and follows the ring by sequence number: the
receive loop never waits for it. When the disk (or the CPU) is too slow, entries are
evicted before the writer copies them; it skips them and counts them as lost, and each
file's `edgert.stats` metadata says how many it is missing. Events reach the writer
through a small bounded queue; a full queue drops the event and counts it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.runtime.fleet.mcapio import McapFile
from edgert.runtime.fleet.ring import Ring

log = logging.getLogger("edgert.recorder")

CLOSE_GRACE_NS = 250_000_000  # after a clip's end, how long to wait for entries stamped before it
EVENT_QUEUE = 16

# (topic id, receipt t_ns, entry bytes) -> MCAP messages (topic, log_time, publish_time, data, sequence)
Converter = Callable[[int, int, bytes], Iterable[tuple[str, int, int, bytes, int]]]


@dataclass(frozen=True)
class ClipPolicy:
    mode: str  # "clips" | "all"
    pre_ns: int
    post_ns: int
    segment_ns: int

    def __post_init__(self) -> None:
        if self.mode not in ("clips", "all"):
            raise ValueError(f"clip mode {self.mode!r} is not 'clips' or 'all'")
        if self.pre_ns < 0 or self.post_ns < 0 or self.segment_ns <= 0:
            raise ValueError(f"clip policy needs pre, post >= 0 and segment > 0 (got {self.pre_ns}, {self.post_ns}, "
                             f"{self.segment_ns} ns)")


@dataclass(frozen=True)
class Event:
    """Why a clip is written: a takeover request began, or someone asked for one."""

    t_ns: int  # time.monotonic_ns() when the recorder saw it
    kind: str  # "takeover" | "operator"
    reason: str
    frame_id: int = 0


@dataclass
class _Open:
    file: McapFile
    label: str
    start_ns: int  # the window's nominal start (event - pre) or the segment's first entry
    end_ns: int  # clips: where the window closes; all: unused
    events: list[Event] = field(default_factory=list)
    lost: int = 0
    pre_short_ns: int = 0
    part: int = 1


class ClipWriter:
    """Follows a Ring on its own thread and writes clips (or everything) into MCAP files.

    `new_file(label, event)` opens a file (the recorder names it and writes its metadata);
    `convert` turns one ring entry into MCAP messages; `on_closed(path)` may move or encrypt a
    finished file and returns where it is now.
    """

    def __init__(self, ring: Ring, policy: ClipPolicy, new_file: Callable[[str, Event | None], McapFile],
                 convert: Converter, on_closed: Callable[[Path], Path] | None = None, frame_topic: int = 0,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.ring, self.policy = ring, policy
        self.new_file, self.convert, self.on_closed = new_file, convert, on_closed
        self.frame_topic = frame_topic
        self.clock = clock
        self.events: queue.Queue[Event] = queue.Queue(maxsize=EVENT_QUEUE)
        self.cursor = ring.next
        self.open: _Open | None = None
        self.closed: list[Path] = []  # every finished file, in order
        self.written = 0  # messages written
        self.lost = 0  # entries evicted from the ring before they were written
        self.lost_frames = 0
        self.events_dropped = 0
        self.errors = 0
        self._seg = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgert-recorder-writer", daemon=True)

    # -- receive side (never blocks) ---------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Event) -> bool:
        """Hand an event to the writer; False (and counted) if its queue is full."""
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.events_dropped += 1
            return False
        self._wake.set()
        return True

    def stop(self, timeout: float = 3.0) -> bool:
        """Write what the open file still needs (mode all: all that is in the ring), close it; False on timeout."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._take_events()
                n = self._pump(256)
            except Exception:  # a bug must not kill recording silently: count it, drop the file, go on
                log.exception("recorder writer failed; the open file is abandoned")
                self.errors += 1
                self._abandon()
                n = 0
            if stopping and n == 0:
                break
            if n == 0:
                self._wake.wait(0.01)
                self._wake.clear()
        self._close("pipeline stopped" if self.open is not None else "")

    def _take_events(self) -> None:
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return
            if self.policy.mode == "all":
                continue  # everything is written anyway; the event itself is in the ring (/events)
            if self.open is None:
                self._open_clip(ev)
            else:
                self.open.end_ns = max(self.open.end_ns, ev.t_ns + self.policy.post_ns)
                self.open.events.append(ev)

    def _open_clip(self, ev: Event) -> None:
        start = ev.t_ns - self.policy.pre_ns
        self.cursor = self.ring.find(start)
        oldest = self.ring.meta(self.ring.first)
        short = max(0, oldest[1] - start) if oldest is not None else self.policy.pre_ns
        self._open_file(f"{ev.kind}-{ev.reason}" if ev.reason else ev.kind, ev, start,
                        ev.t_ns + self.policy.post_ns)
        if self.open is not None:
            self.open.events.append(ev)
            self.open.pre_short_ns = short

    def _open_file(self, label: str, ev: Event | None, start: int, end: int, part: int = 1) -> None:
        try:
            f = self.new_file(label if part == 1 else f"{label}-part{part}", ev)
        except OSError as e:
            log.error("cannot open a recording file (%s): this %s is not recorded", e,
                      "clip" if self.policy.mode == "clips" else "segment")
            self.errors += 1
            return
        self.open = _Open(f, label, start, end, part=part)

    def _skip_lost(self) -> None:
        first = self.ring.first
        if self.cursor >= first:
            return
        gap = first - self.cursor
        self.lost += gap
        if self.open is not None:
            self.open.lost += gap
        self.lost_frames += sum(1 for s in range(self.cursor, first) if self.ring.topic_hint(s) == self.frame_topic)
        self.cursor = first

    def _pump(self, budget: int) -> int:
        """Write up to `budget` entries; return how many were handled (0 = nothing to do now)."""
        clips = self.policy.mode == "clips"
        if clips and self.open is None:
            self.cursor = self.ring.next  # nothing to write until an event; the ring keeps the pre-roll
            return 0
        n = 0
        while n < budget:
            self._skip_lost()
            if self.cursor >= self.ring.next:
                break
            meta = self.ring.meta(self.cursor)
            if meta is None:
                continue  # evicted just now: _skip_lost counts it
            topic, t_ns, _ = meta
            if clips and t_ns > self.open.end_ns:  # type: ignore[union-attr]
                self._close("")
                return n + 1
            if self.open is None:
                self._seg += 1
                self._open_file(f"all-{self._seg:04d}", None, t_ns, 0)
                if self.open is None:
                    self.cursor += 1  # unwritable: skip rather than spin
                    n += 1
                    continue
            elif t_ns - self.open.start_ns >= self.policy.segment_ns:
                self._rotate(t_ns)
                if self.open is None:
                    continue
            got = self.ring.copy_out(self.cursor)
            if got is not None:
                for msg in self.convert(*got):
                    self.open.file.write(*msg)
                    self.written += 1
            self.cursor += 1
            n += 1
        if clips and self.open is not None and self.cursor >= self.ring.next \
                and self.clock() > self.open.end_ns + CLOSE_GRACE_NS:
            self._close("")
            n += 1
        return n

    def _rotate(self, t_ns: int) -> None:
        """A file has reached segment_s: close it and continue in a new one."""
        o = self.open
        assert o is not None
        self._close("")
        if self.policy.mode == "all":
            self._seg += 1
            self._open_file(f"all-{self._seg:04d}", None, t_ns, 0)
        else:
            self._open_file(o.label, o.events[0] if o.events else None, t_ns, o.end_ns, part=o.part + 1)

    def _close(self, cut: str) -> None:
        o, self.open = self.open, None
        if o is None:
            return
        summary: dict[str, Any] = {"lost_messages": o.lost, "part": o.part,
                                   "events": [{"t_ns": e.t_ns, "kind": e.kind, "reason": e.reason,
                                               "frame_id": e.frame_id} for e in o.events]}
        if self.policy.mode == "clips":
            summary.update(window_start_ns=o.start_ns, window_end_ns=o.end_ns, pre_short_s=o.pre_short_ns / 1e9)
        if cut:
            summary["cut_short"] = cut
        try:
            path = o.file.close(summary)
        except OSError as e:
            log.error("cannot finish recording %s (%s): left as .partial, reported as truncated", o.file.tmp, e)
            self.errors += 1
            o.file.abandon()
            return
        if self.on_closed is not None:
            try:
                path = self.on_closed(path)
            except Exception:
                log.exception("on_clip_closed hook failed for %s", path)
                self.errors += 1
        self.closed.append(path)
        log.info("recorded %s: %d messages%s%s", path.name, sum(o.file.counts.values()),
                 f", {o.lost} lost (writer too slow)" if o.lost else "",
                 f", pre-roll {o.pre_short_ns / 1e9:.1f} s short" if o.pre_short_ns > 0 else "")

    def _abandon(self) -> None:
        o, self.open = self.open, None
        if o is not None:
            o.file.abandon()
