"""runtime/transport.py's LatestReader over real ZeroMQ sockets: newest-only reads, with every
message it did not take counted."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import zmq
from conftest import all_accounted_for, read_numbered

from edgert.runtime.transport import Endpoints, LatestReader, confirmed_subscribers


def _send(addr: str, n: int, period_s: float) -> None:
    """Publishes 0..n-1 at a steady period, from the moment the subscriber's subscription has
    reached it (an XPUB sees it arrive), so none is dropped for want of one however slowly
    this process or the connection starts."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.connect(addr)
    if not pub.poll(60_000):
        raise TimeoutError("no subscription within 60 s")
    pub.recv()  # b"\x01": the subscription
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i * period_s - time.monotonic()))
        pub.send(i.to_bytes(4, "little"))
    pub.close(linger=1000)
    ctx.term()


def _stream(tmp: Path, n: int = 12, period_s: float = 0.02) -> tuple[list[int], LatestReader]:
    """Another process publishes n numbered messages at a steady period over ipc://; the reader
    takes what it can of them."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    addr = f"ipc://{tmp}/stream.sock"
    sub.bind(addr)
    reader = LatestReader(sub)
    got = read_numbered(reader, mp.get_context("spawn").Process(target=_send, args=(addr, n, period_s)), n)
    reader.close()
    return got, reader


def test_a_steady_stream_reaches_the_reader_in_order_and_every_message_is_accounted_for(tmp_path):
    """On an idle machine the reader takes all 30; on a loaded one it may skip some, but never
    reorders, never loses the newest and counts each one it skipped."""
    got, reader = _stream(tmp_path, n=30)
    assert all_accounted_for(got, reader.skipped, 30), (got, reader.skipped)


def test_reader_keeps_only_the_newest_message():
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    addr = f"inproc://latest-{time.monotonic_ns()}"
    pull.bind(addr)
    push.connect(addr)
    for i in range(5):
        push.send(bytes([i]))
    time.sleep(0.05)
    reader = LatestReader(pull)
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
    go.wait(120)  # the test's subscribers have confirmed both connections (or it gave up)
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
            assert socks[name].poll(30_000), f"the first message on {name} after the late bind was lost"
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
    assert 0.25 < waited < 60 and set(socks) == {"results", "commands"}  # the upper bound: no hang
    assert "results: not connected to its publisher within 0.3 s" in caplog.text
    assert "commands: not connected to its publisher within 0.3 s" in caplog.text
