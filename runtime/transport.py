"""ZeroMQ sockets between stages: endpoints per transport, and latest-only reads.

ipc:// between processes on one host, inproc:// in threads mode (one shared Context),
tcp:// across hosts. Publishers bind, subscribers connect, except for topics with many
publishers and one reader (heartbeats), where the reader binds. Sockets never linger
on close, so a stopping stage cannot hang on undelivered messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from runtime.topics import TOPICS, topic

if TYPE_CHECKING:
    from runtime.config import PipelineConfig

SNDHWM = 64
RCVHWM = 64


@dataclass(frozen=True)
class Endpoints:
    """Resolves a topic name to a ZeroMQ endpoint for one pipeline run."""

    transport: str  # "ipc" | "inproc" | "tcp"
    run_id: str
    run_dir: str = ""
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = 5550
    curve_dir: str = ""  # tcp only: this run's CURVE keys (runtime/curve.py); "" = plain tcp

    @classmethod
    def for_run(cls, cfg: "PipelineConfig", run_id: str, run_dir: str | Path) -> "Endpoints":
        """A run's endpoints: inproc:// in threads mode, else the config's transport (CURVE on tcp if asked)."""
        p = cfg.pipeline
        transport = "inproc" if p.mode == "threads" else p.transport
        curve_dir = str(Path(run_dir) / "curve") if p.curve and transport == "tcp" else ""
        return cls(transport, run_id, str(run_dir), p.tcp_host, p.tcp_base_port, curve_dir)

    def __call__(self, name: str) -> str:
        topic(name)  # unknown names fail here, with the list of known ones
        if self.transport == "ipc":
            return f"ipc://{self.run_dir}/{name}.sock"
        if self.transport == "inproc":
            return f"inproc://edgert.{self.run_id}.{name}"
        if self.transport == "tcp":
            return f"tcp://{self.tcp_host}:{self.tcp_base_port + list(TOPICS).index(name)}"
        raise ValueError(f"transport {self.transport!r} is not one of 'ipc', 'inproc', 'tcp'")


def _attach(sock: zmq.Socket, endpoints: Endpoints, name: str, binds: bool) -> zmq.Socket:
    """Bind or connect; with CURVE, the binding side is the server, the connecting side the client."""
    if endpoints.curve_dir:
        from runtime import curve

        (curve.as_server if binds else curve.as_client)(sock, endpoints.curve_dir)
    (sock.bind if binds else sock.connect)(endpoints(name))
    return sock


def publisher(ctx: zmq.Context, endpoints: Endpoints, name: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    return _attach(sock, endpoints, name, binds=not topic(name).bound_by_subscriber)


def subscriber(ctx: zmq.Context, endpoints: Endpoints, name: str) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    return _attach(sock, endpoints, name, binds=topic(name).bound_by_subscriber)


class LatestReader:
    """Reads only the newest message on a socket; everything older is counted as skipped.

    Control must act on the present, never on a backlog: after waiting for the first
    message, drain the queue without blocking and keep the last one.

    With `spin_us` > 0 the reader busy-polls in a window of that width around the next
    message's predicted arrival (the last arrival plus the smoothed period) instead of
    sleeping in the kernel: waking a process that sleeps between frames costs 0.1 to 0.6 ms
    per hop on the virtual machines measured (docs/benchmarks.md), more than the hop itself.
    It sleeps as before outside the window, so a 30 fps stream costs about spin_us + 1 ms
    of one core per frame; a stream with no steady rate (Poisson) only pays the misses.
    """

    def __init__(self, sock: zmq.Socket, spin_us: int = 0) -> None:
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.skipped = 0
        self.spin_ns = max(0, int(spin_us)) * 1000
        self._last = 0  # monotonic ns of the last message
        self._period = 0  # smoothed interval between messages, ns
        self.caught_spinning = 0  # messages that arrived inside a spin window (took no wake-up)

    def close(self) -> None:
        self.sock.close(linger=0)

    def recv(self, timeout_ms: int) -> bytes | None:
        """The newest message, or None after `timeout_ms` (sooner when a spin window opens)."""
        if self.spin_ns and self._period:
            due = self._last + self._period
            now = time.monotonic_ns()
            if now < due - self.spin_ns // 2:  # sleep until the window opens (whole milliseconds)
                wait_ms = min(timeout_ms, (due - self.spin_ns // 2 - now) // 1_000_000)
                if wait_ms > 0:
                    return self._arrived(self.drain()) if self.poller.poll(wait_ms) else None
            end = due + self.spin_ns // 2
            while time.monotonic_ns() < end:
                msg = self.drain()
                if msg is not None:
                    self.caught_spinning += 1
                    return self._arrived(msg)
        if not self.poller.poll(timeout_ms):
            return None
        return self._arrived(self.drain())

    def _arrived(self, msg: bytes | None) -> bytes | None:
        if msg is not None and self.spin_ns:
            now = time.monotonic_ns()
            if self._last:
                gap = now - self._last
                self._period = gap if not self._period or gap > 4 * self._period else (7 * self._period + gap) // 8
            self._last = now
        return msg

    def drain(self) -> bytes | None:
        """Newest message already queued, or None; never blocks."""
        latest = None
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return latest
            if latest is not None:
                self.skipped += 1
            latest = msg
