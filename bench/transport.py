"""`edgert bench transport`: moving one frame from one process to another.

Cases, per frame size, all timed in the same run against the same receiver process:
- `shm`: edgert's way. The frame is already in a frame-pool slot (the producer renders or
  preprocesses into it in place); a FRAME descriptor goes over ipc://; the receiver
  validates it, checks the seqlock and holds a view of the slot.
- `shm_mailbox`: the same slot and descriptor, the descriptor through the topic mailbox the
  pipeline's stages read from (runtime/mailbox.py: one shared-memory slot woken by a futex,
  no ZeroMQ I/O threads on the way). x86-64 Linux only, as in the pipeline.
- `zmq_copy_ipc`, `zmq_copy_tcp`: the frame's bytes sent through ZeroMQ (copied into the
  message, then out of it on receipt); `zmq_nocopy_ipc`: the same with `copy=False` on both
  ends (pyzmq's zero-copy path; ZeroMQ still moves the bytes between processes).
- `pickle_pipe`: `multiprocessing.Connection.send` of the NumPy array (pickled).
- `memcpy`: `np.copyto` of the frame inside one process: the floor for touching it once.

Latency is one-way: the sender stamps `time.monotonic_ns()` just before sending, the
receiver stamps when it holds a usable array (CLOCK_MONOTONIC is shared by all processes
on a host). Sends are paced ping-pong (the next frame goes only after the receiver has
acknowledged the last), so queueing never inflates a sample.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import zmq

from edgert.bench.report import Report, time_ns
from edgert.runtime import shm, wire
from edgert.runtime.framepool import FramePool
from edgert.runtime.mailbox import Mailbox, MailboxSource, unsupported
from edgert.runtime.wire import MsgType, Stamp

SIZES = {  # name -> shape (uint8)
    "64B": (64,),
    "64KiB": (256, 256),
    "VGA": (480, 640, 3),
    "1080p": (1080, 1920, 3),
    "4K": (2160, 3840, 3),
}
ZMQ_CASES = ("zmq_copy_ipc", "zmq_nocopy_ipc", "zmq_copy_tcp")
ACK = b"k"
MAILBOX = "bench-transport"  # the mailbox's topic name in this run
WARMUP = 20  # unrecorded messages per case: the receiver's connect and first-touch costs (at most n: a
# run of a few samples, as the tests make, needs no more warm-up than samples)
REPLY_TIMEOUT_S = 30.0  # the receiver answers each message within microseconds; this long means it is gone


def _hold_slot(pool: FramePool, msg: bytes, shape: tuple[int, ...]) -> int:
    """Validate a slot's descriptor and hold a view of the slot, as a stage does: the one-way latency, ns."""
    rec = wire.decode(msg, MsgType.FRAME)
    slot, gen = int(rec["slot"]), int(rec["generation"])
    if not pool.is_current(slot, gen):
        raise RuntimeError("slot overwritten: the ping-pong pacing is broken")
    view = pool.view(slot, shape, np.uint8)
    latency = time.monotonic_ns() - int(rec["stamps"][Stamp.CAPTURE])
    del view
    return latency


def _receiver(run_id: str, endpoints: dict[str, str], conn: mp.connection.Connection) -> None:
    """Receive frames case by case; reply ACK to each; return the latencies through `conn`."""
    ctx = zmq.Context()
    ack = ctx.socket(zmq.PAIR)
    ack.connect(endpoints["ack"])
    while True:
        job = conn.recv()
        if job is None:
            break
        case, size, shape, n, warmup = job
        lat = np.empty(warmup + n, dtype=np.int64)
        if case == "pickle_pipe":
            for i in range(warmup + n):
                t_send, arr = conn.recv()
                lat[i] = time.monotonic_ns() - t_send
                ack.send(ACK)
        elif case == "shm":
            pool = FramePool.attach(run_id, size)
            sock = ctx.socket(zmq.PULL)
            sock.connect(endpoints["shm"])
            for i in range(warmup + n):
                lat[i] = _hold_slot(pool, sock.recv(), shape)
                ack.send(ACK)
            sock.close(0)
            pool.close()
        elif case == "shm_mailbox":
            pool = FramePool.attach(run_id, size)
            src = MailboxSource(Mailbox.attach(run_id, MAILBOX))
            ack.send(ACK)  # attached: a mailbox keeps only what is posted from now on, so say so first
            for i in range(warmup + n):
                msg = None
                while msg is None:
                    if not src.wait(10_000):
                        raise RuntimeError("no descriptor in the mailbox for 10 s")
                    msg = src.take()
                lat[i] = _hold_slot(pool, msg, shape)
                ack.send(ACK)
            src.close()
            pool.close()
        else:
            copy = case != "zmq_nocopy_ipc"
            sock = ctx.socket(zmq.PULL)
            sock.connect(endpoints[case])
            for i in range(warmup + n):
                stamp, payload = sock.recv_multipart(copy=copy)
                buf = payload if copy else payload.buffer
                arr = np.frombuffer(buf, dtype=np.uint8).reshape(shape)
                lat[i] = time.monotonic_ns() - int.from_bytes(stamp if copy else stamp.bytes, "little")
                del arr
                ack.send(ACK)
            sock.close(0)
        conn.send(lat[warmup:])
    ack.close(0)
    ctx.term()


def run(quick: bool = False, n: int | None = None) -> Report:
    n_small = n or (200 if quick else 3000)
    n_large = n or (30 if quick else 1000)
    run_id = shm.new_run_id()
    run_dir = f"/tmp/edgert-bench-transport.{run_id}"
    os.makedirs(run_dir, mode=0o700)
    tcp_port = _free_port()
    endpoints = {"ack": f"ipc://{run_dir}/ack", "shm": f"ipc://{run_dir}/shm",
                 "zmq_copy_ipc": f"ipc://{run_dir}/copy", "zmq_nocopy_ipc": f"ipc://{run_dir}/nocopy",
                 "zmq_copy_tcp": f"tcp://127.0.0.1:{tcp_port}"}
    report = Report("transport", {"sizes": {k: list(v) for k, v in SIZES.items()}, "n_small": n_small,
                                  "n_large": n_large, "quick": quick})
    ctx = zmq.Context()
    ack = ctx.socket(zmq.PAIR)
    ack.bind(endpoints["ack"])
    socks = {}
    for case in ("shm",) + ZMQ_CASES:
        socks[case] = ctx.socket(zmq.PUSH)
        socks[case].bind(endpoints[case])
    pools: dict[str, FramePool] = {}
    no_mailbox = unsupported()
    mailbox = None
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(run_id, endpoints, child), daemon=True)
    desc = wire.new_message(MsgType.FRAME)
    try:
        for size, shape in SIZES.items():
            pools[size] = FramePool.create(run_id, size, 2, int(np.prod(shape)))
        if not no_mailbox:
            mailbox = Mailbox.create(run_id, MAILBOX)
        proc.start()
        for size, shape in SIZES.items():
            frame = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
            count = n_large if frame.nbytes >= 1 << 20 else n_small
            warmup = min(WARMUP, count)
            pool = pools[size]
            desc["dtype"], desc["ndim"] = 1, len(shape)
            desc["shape"][:] = 0
            desc["shape"][: len(shape)] = shape

            def descriptor() -> bytes:
                slot = pool.acquire()  # the producer already wrote the frame in place
                gen = pool.publish(slot)
                desc["slot"], desc["generation"] = slot, gen
                desc["frame_id"] += 1
                desc["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
                return wire.encode(desc)

            def send_shm() -> None:
                socks["shm"].send(descriptor())

            def send_mailbox() -> None:
                mailbox.post(descriptor())  # type: ignore[union-attr]

            def send_zmq(case: str) -> None:
                stamp = time.monotonic_ns().to_bytes(8, "little")
                socks[case].send_multipart([stamp, frame],  # type: ignore[list-item]  # ndarray is a buffer
                                           copy=(case != "zmq_nocopy_ipc"))

            def send_pickle() -> None:
                parent.send((time.monotonic_ns(), frame))

            senders = {"shm": send_shm, **({} if mailbox is None else {"shm_mailbox": send_mailbox}),
                       "pickle_pipe": send_pickle, **{c: (lambda c=c: send_zmq(c)) for c in ZMQ_CASES}}  # type: ignore[misc]
            for case, send in senders.items():
                parent.send((case, size, shape, count, warmup))
                if case == "shm_mailbox":
                    _reply(ack, proc)  # the receiver is attached (ZeroMQ queues; a mailbox holds only the newest)
                for _ in range(warmup + count):
                    send()
                    _reply(ack, proc)
                if not parent.poll(REPLY_TIMEOUT_S):
                    raise RuntimeError(f"the receiver sent no latencies for {case}@{size} in {REPLY_TIMEOUT_S:.0f} s")
                report.add(f"{case}@{size}", parent.recv())
            dst = np.empty_like(frame)
            report.add(f"memcpy@{size}", time_ns(lambda: np.copyto(dst, frame), count))
        parent.send(None)
        proc.join(30)
    finally:
        if proc.pid is not None and proc.is_alive():
            proc.kill()
        for s in socks.values():
            s.close(0)
        ack.close(0)
        ctx.term()
        for p in pools.values():
            p.close()
            p.unlink()
        if mailbox is not None:
            mailbox.close()
            mailbox.unlink()
        for f in os.listdir(run_dir):
            os.unlink(os.path.join(run_dir, f))
        os.rmdir(run_dir)
    for p99 in (False, True):
        report.ratio("zmq_copy_ipc@1080p", "shm@1080p", p99=p99)
        report.ratio("shm@1080p", "memcpy@1080p", p99=p99)
        report.ratio("pickle_pipe@1080p", "shm@1080p", p99=p99)
        if mailbox is not None:
            report.ratio("shm@1080p", "shm_mailbox@1080p", p99=p99)
    report.notes.append("shm: the frame is already in its slot (producers write in place), so the hop is "
                        "the descriptor plus validation; the copies it avoids are what the other cases time.")
    if no_mailbox:
        report.notes.append(f"shm_mailbox left out: {no_mailbox}")
    else:
        report.notes.append("shm_mailbox: the same slot and descriptor as shm, the descriptor through a mailbox "
                            "(a futex wake-up) instead of ZeroMQ: the pipeline's hop between stages on one host.")
    report.notes.append("pickle_pipe pickles only inside this benchmark, between its own two processes: "
                        "nothing in edgert's pipeline unpickles.")
    return report


def _reply(ack: zmq.Socket, proc: mp.process.BaseProcess) -> None:
    """Wait for the receiver's acknowledgement: a clear error, never a hang, if it died or stalled."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while not ack.poll(500):
        if not proc.is_alive():
            raise RuntimeError(f"the receiver process exited with code {proc.exitcode} (its error is above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no acknowledgement from the receiver in {REPLY_TIMEOUT_S:.0f} s")
    ack.recv()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
