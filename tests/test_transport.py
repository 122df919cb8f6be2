"""runtime/transport.py's LatestReader over real ZeroMQ sockets: newest-only reads, and the
busy-poll window (pipeline.spin_us) that catches a steady stream's frames without a wake-up."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import zmq

from conftest import read_numbered
from runtime.transport import Endpoints, LatestReader, confirmed_subscribers


def _send(addr: str, n: int, period_s: float) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.connect(addr)
    time.sleep(0.2)  # let the connection and subscription settle
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i * period_s - time.monotonic()))
        pub.send(i.to_bytes(4, "little"))
    pub.close(linger=1000)
    ctx.term()


def _stream(tmp: Path, spin_us: int, n: int = 12, period_s: float = 0.02, warm_us: int = 0,
            on_warm=None) -> tuple[list[int], LatestReader]:
    """Another process publishes n numbered messages at a steady period over ipc://; the reader
    takes them all. (A thread would not do: the spinning reader holds the GIL it needs.)"""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    addr = f"ipc://{tmp}/spin.sock"
    sub.bind(addr)
    reader = LatestReader(sub, spin_us=spin_us, warm_us=warm_us, on_warm=on_warm)
    got = read_numbered(reader, mp.get_context("spawn").Process(target=_send, args=(addr, n, period_s)), n)
    reader.close()
    return got, reader


def test_steady_stream_is_caught_in_the_spin_window_and_nothing_is_lost(tmp_path):
    got, reader = _stream(tmp_path, spin_us=8000, n=30)
    assert got == list(range(30)) and reader.skipped == 0
    # the period is learnt from the first gaps; after that frames land inside the 8 ms window,
    # unless the sender's own sleep overshoots by 4 ms (half of them on a loaded 2-core CI
    # machine, 5 of 12 once); without spinning none are
    assert reader.caught_spinning >= 7, reader.caught_spinning
    assert 10_000_000 < reader._period < 40_000_000


def test_without_spin_the_reader_only_sleeps(tmp_path):
    got, reader = _stream(tmp_path, spin_us=0)
    assert got == list(range(12)) and reader.caught_spinning == 0 and reader._period == 0


def test_warm_up_replays_the_last_message_before_the_next_is_due_and_loses_nothing(tmp_path):
    warmed: list[int] = []  # the message each warm-up replayed

    def on_warm(msg: bytes) -> None:
        warmed.append(int.from_bytes(msg, "little"))

    got, reader = _stream(tmp_path, spin_us=0, n=16, period_s=0.03, warm_us=5000, on_warm=on_warm)
    assert got == list(range(16)) and reader.skipped == 0
    # from the second gap on the period is known: one warm-up per gap, each on the message before
    assert reader.warmups == len(warmed) and len(warmed) >= 10, warmed
    assert warmed == sorted(set(warmed)) and set(warmed) <= set(range(15))  # the last one, once per gap


def test_warm_up_is_off_by_default(tmp_path):
    got, reader = _stream(tmp_path, spin_us=0, n=6)
    assert got == list(range(6)) and reader.warmups == 0


def test_reader_keeps_only_the_newest_message():
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    addr = f"inproc://latest-{time.monotonic_ns()}"
    pull.bind(addr)
    push.connect(addr)
    for i in range(5):
        push.send(bytes([i]))
    time.sleep(0.05)
    reader = LatestReader(pull, spin_us=1000)
    assert reader.recv(100) == bytes([4]) and reader.skipped == 4
    assert reader.recv(10) is None
    push.close(linger=0)
    reader.close()


def _bind_late_then_send(addrs: list[str], go, delay_s: float) -> None:
    """Publishers that bind `delay_s` after the subscriber connected, and send one message each the
    moment they are told to."""
    time.sleep(delay_s)
    ctx = zmq.Context()
    pubs = []
    for addr in addrs:
        pubs.append(ctx.socket(zmq.PUB))
        pubs[-1].bind(addr)
    go.wait(10)
    for i, pub in enumerate(pubs):
        pub.send(b"first %d" % i)
    for pub in pubs:
        pub.close(linger=1000)
    ctx.term()


def test_confirmed_subscribers_get_the_first_message_of_publishers_that_bind_late(tmp_path):
    """The recorder's case: it connects before capture and infer have bound, is ready, and the
    first frame is published at once. Unconfirmed, a connect is only retried 100 ms later and that
    frame is lost."""
    ep = Endpoints("ipc", "t", run_dir=str(tmp_path))
    spawn = mp.get_context("spawn")
    go = spawn.Event()
    proc = spawn.Process(target=_bind_late_then_send, args=([ep("frames"), ep("results")], go, 0.3))
    proc.start()
    ctx = zmq.Context()
    try:
        socks = confirmed_subscribers(ctx, ep, ["frames", "results"], wait_s=20.0)  # once both have connected
        go.set()
        for i, name in enumerate(["frames", "results"]):
            assert socks[name].poll(5000), f"the first message on {name} after the late bind was lost"
            assert socks[name].recv() == b"first %d" % i
    finally:
        go.set()
        proc.join(10)
        ctx.destroy(linger=0)


def test_an_unconfirmed_subscription_is_a_warning_naming_the_topic_not_a_hang(tmp_path, caplog):
    ep = Endpoints("ipc", "t", run_dir=str(tmp_path))
    ctx = zmq.Context()
    t0 = time.monotonic()
    socks = confirmed_subscribers(ctx, ep, ["results", "commands"], wait_s=0.3)  # nobody ever binds them
    waited = time.monotonic() - t0
    ctx.destroy(linger=0)
    assert 0.25 < waited < 10 and set(socks) == {"results", "commands"}
    assert "results: not connected to its publisher within 0.3 s" in caplog.text
    assert "commands: not connected to its publisher within 0.3 s" in caplog.text
