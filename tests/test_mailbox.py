"""runtime/mailbox.py: a topic's newest message in real shared memory, read by other processes
through transport.LatestReader and woken by a real futex."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from conftest import all_accounted_for, read_numbered

from edgert.runtime import futex, shm
from edgert.runtime.mailbox import Mailbox, MailboxSource
from edgert.runtime.shm import Segment, segment_name
from edgert.runtime.transport import LatestReader

pytestmark = pytest.mark.skipif(not futex.available(), reason="futex(2) needs Linux on x86-64 or 64-bit Arm")


class Boxes:
    """Mailboxes and readers for one test, all closed at its end."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.opened: list = []

    def create(self, topic: str, **kw) -> Mailbox:
        self.opened.append(Mailbox.create(self.run_id, topic, **kw))
        return self.opened[-1]

    def reader(self, topic: str, **kw) -> LatestReader:
        self.opened.append(LatestReader(MailboxSource(Mailbox.attach(self.run_id, topic)), **kw))
        return self.opened[-1]

    def source(self, topic: str) -> MailboxSource:
        self.opened.append(MailboxSource(Mailbox.attach(self.run_id, topic)))
        return self.opened[-1]


@pytest.fixture
def boxes(run_id):
    b = Boxes(run_id)
    yield b
    for x in reversed(b.opened):
        x.close()


def _post_numbers(run_id: str, n: int, period_s: float, topic: str = "frames") -> None:
    mb = Mailbox.attach(run_id, topic)  # the reader attached first: whatever it misses, it counts
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i * period_s - time.monotonic()))
        mb.post(i.to_bytes(4, "little"))
    mb.close()


def _hammer(run_id: str, stop, limit: int) -> None:  # type: ignore[no-untyped-def]
    """Posts as fast as it can until told to stop (or `limit` posts, should the test be gone);
    every message is one repeated byte, its length varying with it."""
    mb = Mailbox.attach(run_id, "frames")
    for i in range(limit):
        if i % 1000 == 0 and stop.is_set():
            break
        b = i % 251
        mb.post(bytes([b]) * (64 + b))
    mb.close()


def _stream(boxes: Boxes, topic: str, n: int, period_s: float, **reader_kw) -> tuple[list[int], LatestReader]:
    """Another process posts n numbered messages at a steady period; this one reads them all."""
    boxes.create(topic)
    reader = boxes.reader(topic, **reader_kw)
    proc = mp.get_context("spawn").Process(target=_post_numbers, args=(boxes.run_id, n, period_s, topic))
    return read_numbered(reader, proc, n), reader


def test_a_steady_stream_reaches_a_reader_in_another_process_in_order(boxes):
    """On an idle machine the reader takes all 20; on a loaded one it may skip some, but never
    reorders, never loses the newest and counts each one it skipped."""
    got, reader = _stream(boxes, "frames", 20, 0.01)
    assert all_accounted_for(got, reader.skipped, 20), (got, reader.skipped)


def test_the_reader_takes_only_the_newest_and_counts_the_rest(boxes):
    mb = boxes.create("results")
    reader = boxes.reader("results")
    for i in range(5):
        mb.post(bytes([i]))
    assert reader.recv(100) == bytes([4]) and reader.skipped == 4
    assert reader.recv(20) is None  # nothing new: a timeout, not the same message again


def test_a_reader_attached_later_does_not_see_older_messages(boxes):
    mb = boxes.create("commands")
    mb.post(b"before")
    reader = boxes.reader("commands")
    assert reader.drain() is None
    mb.post(b"after")
    assert reader.recv(100) == b"after"


def test_no_torn_message_is_ever_returned(boxes):
    boxes.create("frames")
    source = boxes.source("frames")
    spawn = mp.get_context("spawn")
    stop = spawn.Event()
    proc = spawn.Process(target=_hammer, args=(boxes.run_id, stop, 50_000_000))
    proc.start()
    seen = 0
    deadline = time.monotonic() + 120  # ends a hung test; the writer posts until the reader has seen enough
    try:
        while seen < 1000 and proc.exitcode is None and time.monotonic() < deadline:
            if source.wait(10):
                msg = source.take()
                if msg is not None:
                    b = msg[0]
                    assert msg == bytes([b]) * (64 + b), f"torn message: {len(msg)} bytes starting {msg[:8]!r}"
                    seen += 1
    finally:
        stop.set()
        proc.join(30)
    assert seen >= 1000  # the check above really ran, many times, against a writer mid-write


def test_a_writer_that_died_mid_message_is_skipped_until_the_next_post(boxes):
    mb = boxes.create("tensors")
    reader = boxes.reader("tensors")
    mb._seq[0] = mb.seq + 1  # odd: as a writer killed between its two sequence stores leaves it
    assert reader.recv(30) is None
    mb.post(b"restarted")  # the restarted writer moves past the odd value
    assert mb.seq % 2 == 0
    assert reader.recv(100) == b"restarted"


def test_a_waiting_reader_in_another_thread_is_woken_by_the_post(boxes):
    import threading

    mb = boxes.create("results")
    source = boxes.source("results")
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(source.wait(5000)))
    t.start()
    time.sleep(0.05)
    mb.post(b"x")
    t.join(5)
    assert got == [True] and not t.is_alive()  # a 5 s wait ended by the futex wake, not the timeout


def test_bad_sizes_and_segments_are_refused_with_the_reason(run_id):
    mb = Mailbox.create(run_id, "frames", capacity=256)
    with pytest.raises(ValueError, match="257-byte message does not fit the 256-byte mailbox"):
        mb.post(bytes(257))
    mb.close()
    seg = Segment.create(segment_name(run_id, "mbox-vehicle"), 4096)
    seg.buf[:4] = b"EDFP"
    with pytest.raises(ValueError, match="is not an edgert mailbox"):
        Mailbox.attach(run_id, "vehicle")
    seg.close()
    with pytest.raises(FileNotFoundError, match="start stages with `edgert run`"):
        Mailbox.attach(run_id, "results")


def test_a_pipeline_run_creates_and_removes_one_mailbox_per_hop():
    """The supervisor owns the mailboxes as it owns the frame pools: made before the stages, gone after."""
    from edgert.runtime.config import DEFAULT_CONFIG, load
    from edgert.runtime.supervisor import Supervisor
    sup = Supervisor(load(DEFAULT_CONFIG), duration_s=1.0, mode="threads")
    s = sup.run()
    assert sup.endpoints.mailboxes
    assert sorted(m.segment.name for m in sup.mailboxes) == [
        segment_name(sup.run_id, f"mbox-{t}")  # `recorded` too: 4 KiB, whether or not a recorder runs
        for t in ("camera_state", "commands", "frames", "recorded", "results", "tensors", "vehicle")]
    assert s["leaked_segments"] == [] and shm.list_segments(sup.run_id) == []
    assert s["commands"]["model_commands"] > 0


def test_futex_wait_returns_at_its_timeout_without_a_wake(boxes):
    mb = boxes.create("vehicle")
    t0 = time.monotonic()
    mb.futex.wait(mb.seq, 20_000_000)
    assert time.monotonic() - t0 >= 0.015  # it slept (no busy return), and came back on its own


def test_the_sequence_wraps_around_without_losing_or_repeating(boxes):
    mb = boxes.create("frames")
    mb._seq[0] = 0xFFFFFFFC  # two posts before the 32-bit word wraps
    reader = boxes.reader("frames")
    got = []
    for i in range(4):
        mb.post(bytes([i]))
        got.append(reader.recv(100))
    assert got == [bytes([i]) for i in range(4)] and reader.skipped == 0 and mb.seq == 4
    mb.post(b"a")
    mb.post(b"b")
    assert reader.recv(100) == b"b" and reader.skipped == 1
    reader.close()  # closing twice is harmless


def test_a_stage_reads_its_input_from_the_mailbox_alone(tiny_model, boxes):
    """Control driven only through mailboxes (nothing on its ZeroMQ input) commands every result,
    and its commands reach the commands mailbox."""
    from conftest import StageHarness

    from edgert.runtime import wire
    from edgert.runtime.config import from_dict
    from edgert.runtime.stages.control import ControlStage
    from edgert.runtime.transport import Endpoints
    from edgert.runtime.wire import MsgType, Stamp

    h = StageHarness(from_dict({"infer": {"model": str(tiny_model)}, "control": {"deadline_ms": 250.0}}))
    h.endpoints = Endpoints("inproc", h.run_id, mailboxes=True)
    boxes = {t: Mailbox.create(h.run_id, t) for t in ("results", "commands", "vehicle", "camera_state")}
    commands = MailboxSource(Mailbox.attach(h.run_id, "commands"))
    h.start(ControlStage)
    time.sleep(0.3)
    h.send_start()
    rec = wire.new_message(MsgType.RESULT)
    rec["n_values"] = 1
    seen: set[int] = set()
    for fid in range(1, 11):
        rec["frame_id"], rec["values"][0] = fid, 0.01
        rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        boxes["results"].post(wire.encode(rec))
        end = time.monotonic() + 1
        while fid not in seen and time.monotonic() < end:
            if commands.wait(50) and (msg := commands.take()) is not None:
                seen.add(int(wire.decode(msg, MsgType.COMMAND)["frame_id"]))
    h.close()
    assert seen >= set(range(1, 11)) and h.code == 0 and h.stage.rejected == 0
    commands.close()
    for mb in boxes.values():
        mb.close()


def test_mailboxes_are_off_with_a_warning_where_they_are_untested(monkeypatch, caplog):
    import platform

    from edgert.runtime.config import DEFAULT_CONFIG, load
    from edgert.runtime.transport import Endpoints

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    ep = Endpoints.for_run(load(DEFAULT_CONFIG), "1.ab", "/tmp")
    assert not ep.mailboxes and not ep.has_mailbox("frames")
    assert "pipeline.mailbox: off, mailboxes have been tested only on x86-64, not yet on aarch64" in caplog.text
