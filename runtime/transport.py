"""ZeroMQ sockets between stages: endpoints per transport, and latest-only reads.

ipc:// between processes on one host, inproc:// in threads mode (one shared Context),
tcp:// across hosts. Publishers bind, subscribers connect, except for topics with many
publishers and one reader (heartbeats), where the reader binds. Sockets never linger
on close, so a stopping stage cannot hang on undelivered messages.

How each topic travels in a run is decided in one place, `Endpoints.route`. On one host
the pipeline's hops go through a shared-memory mailbox per topic (runtime/mailbox.py,
`pipeline.mailbox`): a stage's latest-only reader takes the message from the mailbox, woken by
one futex call instead of ZeroMQ's I/O threads. The topic keeps its ZeroMQ socket (an XPUB) for
everything else that reads it (the recorder, telemetry, `edgert echo`), but a message goes out
on it only while something subscribes: the publisher sees subscriptions come and go
(`Publisher.listening`), so nobody listening costs no ZeroMQ send.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import zmq

from edgert.runtime import wire
from edgert.runtime.mailbox import Mailbox, MailboxSource, unsupported
from edgert.runtime.topics import TOPICS, topic

if TYPE_CHECKING:
    from edgert.runtime.config import PipelineConfig

log = logging.getLogger(__name__)

SNDHWM = 64
RCVHWM = 64

# ZMQ_MAXMSGSIZE: libzmq reads each incoming frame's size field first and disconnects a peer that
# announces more than this, before buffering a byte of it, so a 100 MiB message costs the receiver
# nothing. The limit is what the socket accepts (a SUB: its topic's wire layout; a PUB: a
# subscription), but never below the handshake's own largest command, which goes through the same
# check: ZMTP NULL's READY with our Socket-Type metadata is 25 bytes; CURVE's INITIATE is 276 (257 +
# that metadata), and CURVE wraps every message in a 33-byte MESSAGE box (name 8, nonce 8, MAC 16, flags 1).
SUBSCRIPTION_BYTES = 10  # ZMTP 3.1 "\x09SUBSCRIBE" + the prefix (empty: every stage subscribes to all)
NULL_HANDSHAKE_BYTES = 25
CURVE_HANDSHAKE_BYTES = 276
CURVE_BOX_BYTES = 33


def max_message_size(name: str, sock_type: int, curve: bool) -> int:
    """ZMQ_MAXMSGSIZE of a `sock_type` socket on topic `name`: the largest message it accepts, as
    framed on the wire (runtime/wire.py's layout for a SUB, a subscription for a PUB)."""
    accepts = wire.LAYOUTS[topic(name).msg].itemsize if sock_type == zmq.SUB else SUBSCRIPTION_BYTES
    if curve:
        return max(accepts + CURVE_BOX_BYTES, CURVE_HANDSHAKE_BYTES)
    return max(accepts, NULL_HANDSHAKE_BYTES)


@dataclass(frozen=True)
class Endpoints:
    """Resolves a topic name to a ZeroMQ endpoint for one pipeline run."""

    transport: str  # "ipc" | "inproc" | "tcp"
    run_id: str
    run_dir: str = ""
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = 5550
    curve_dir: str = ""  # tcp only: this run's CURVE keys (runtime/curve.py); "" = plain tcp
    mailboxes: bool = False  # the run has a shared-memory mailbox for every `Topic.mailbox` topic

    @classmethod
    def for_run(cls, cfg: PipelineConfig, run_id: str, run_dir: str | Path) -> Endpoints:
        """A run's endpoints: inproc:// in threads mode, else the config's transport (CURVE on tcp if asked)."""
        p = cfg.pipeline
        transport = "inproc" if p.mode == "threads" else p.transport
        curve_dir = str(Path(run_dir) / "curve") if p.curve and transport == "tcp" else ""
        if transport == "tcp" and not curve_dir:  # loopback only (runtime/config.py refuses the rest)
            log.warning("pipeline.curve is off: any local process can connect to this run's tcp ports, or bind "
                        "one while its stage restarts and feed the next stage; set pipeline.curve = true unless "
                        "nothing else runs on this host")
        mailboxes = p.mailbox and transport != "tcp"
        why_not = unsupported() if mailboxes else ""
        if why_not:
            log.warning("pipeline.mailbox: off, %s; every hop goes through ZeroMQ "
                        "(set pipeline.mailbox = false to silence this)", why_not)
            mailboxes = False
        return cls(transport, run_id, str(run_dir), p.tcp_host, p.tcp_base_port, curve_dir, mailboxes)

    def route(self, name: str) -> Route:
        """How topic `name` travels in this run: the one answer every publisher, reader and the
        supervisor (which creates the mailboxes) go by."""
        t = topic(name)
        mailbox = self.mailboxes and t.mailbox
        return Route(name, self(name), mailbox=mailbox, zmq_on_demand=mailbox,
                     publisher_binds=not t.bound_by_subscriber)

    def routes(self) -> list[Route]:
        return [self.route(name) for name in TOPICS]

    def has_mailbox(self, name: str) -> bool:
        return self.route(name).mailbox

    def __call__(self, name: str) -> str:
        topic(name)  # unknown names fail here, with the list of known ones
        if self.transport == "ipc":
            return f"ipc://{self.run_dir}/{name}.sock"
        if self.transport == "inproc":
            return f"inproc://edgert.{self.run_id}.{name}"
        if self.transport == "tcp":
            return f"tcp://{self.tcp_host}:{self.tcp_base_port + list(TOPICS).index(name)}"
        raise ValueError(f"transport {self.transport!r} is not one of 'ipc', 'inproc', 'tcp'")


@dataclass(frozen=True)
class Route:
    """How one topic travels in one run (`Endpoints.route`)."""

    topic: str
    endpoint: str  # its ZeroMQ endpoint: every topic has one (recorder, telemetry, `edgert echo`, tcp peers)
    mailbox: bool  # the stages' latest-only readers take it from a shared-memory mailbox
    zmq_on_demand: bool  # the ZeroMQ copy goes out only while something subscribes (else always)
    publisher_binds: bool  # False: the one subscriber binds and the publishers connect (heartbeats)

    def describe(self) -> str:
        if not self.mailbox:
            return f"{self.topic}: ZeroMQ {self.endpoint}"
        return f"{self.topic}: mailbox; ZeroMQ {self.endpoint} while subscribed"


def _attach(sock: zmq.Socket, endpoints: Endpoints, name: str, binds: bool) -> zmq.Socket:
    """Bind or connect; with CURVE, the binding side is the server, the connecting side the client.
    Either way the socket refuses messages larger than its topic's (`max_message_size`)."""
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size(name, int(sock.getsockopt(zmq.TYPE)), bool(endpoints.curve_dir)))
    if endpoints.curve_dir:
        from edgert.runtime import curve

        (curve.as_server if binds else curve.as_client)(sock, endpoints.curve_dir)
    (sock.bind if binds else sock.connect)(endpoints(name))
    return sock


class Publisher:
    """A topic's sending end: its ZeroMQ socket, and its mailbox where the run's route has one.

    With a mailbox the socket is an XPUB, and the ZeroMQ copy of a message is sent only while
    something subscribes to the topic: the XPUB hands up a subscription ("\\x01" + prefix) when the
    first subscriber to a prefix arrives and an unsubscription ("\\x00" + prefix) when the last one
    leaves or disconnects (ZMQ_XPUB_VERBOSE off), read here before each send without blocking.
    `zmq_sent` and `zmq_skipped` count what went out on the socket and what nobody wanted."""

    def __init__(self, sock: zmq.Socket, mailbox: Mailbox | None) -> None:
        self.sock = sock
        self.mailbox = mailbox
        self.on_demand = mailbox is not None and sock.getsockopt(zmq.TYPE) == zmq.XPUB
        self.subscriptions: set[bytes] = set()  # on demand: the prefixes subscribed to now
        self.zmq_sent = 0
        self.zmq_skipped = 0

    @property
    def listening(self) -> bool:
        """Does anything read this topic's socket (always True without a mailbox)?"""
        if not self.on_demand:
            return True
        self._take_subscriptions()
        return bool(self.subscriptions)

    def _take_subscriptions(self) -> None:
        sock = self.sock
        while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # also lets the socket take new peers
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions.add(msg[1:])
            elif msg[:1] == b"\x00":
                self.subscriptions.discard(msg[1:])

    def send(self, data: bytes, flags: int = 0) -> None:
        if self.mailbox is not None:
            self.mailbox.post(data)
            if self.on_demand and not self.listening:
                self.zmq_skipped += 1
                return
        self.sock.send(data, flags)
        self.zmq_sent += 1

    def close(self, linger: int = 0) -> None:
        self.sock.close(linger=linger)
        if self.mailbox is not None:
            self.mailbox.close()


def publisher(ctx: zmq.Context, endpoints: Endpoints, name: str) -> Publisher:
    """A topic's sending end, as its route says: a PUB socket, or an XPUB and the mailbox."""
    route = endpoints.route(name)
    sock = ctx.socket(zmq.XPUB if route.zmq_on_demand else zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock = _attach(sock, endpoints, name, binds=route.publisher_binds)
    return Publisher(sock, Mailbox.attach(endpoints.run_id, name) if route.mailbox else None)


def _sub_socket(ctx: zmq.Context) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    return sock


def subscriber(ctx: zmq.Context, endpoints: Endpoints, name: str) -> zmq.Socket:
    return _attach(_sub_socket(ctx), endpoints, name, binds=topic(name).bound_by_subscriber)


SUBSCRIPTION_SETTLE_S = 0.01  # after the handshake, for the publisher's I/O thread to take the subscription


def confirmed_subscribers(ctx: zmq.Context, endpoints: Endpoints, names: list[str],
                          wait_s: float) -> dict[str, zmq.Socket]:
    """SUB sockets on `names`, returned once each has finished its handshake with its publisher
    (all waited for together, at most `wait_s`; a warning names any that did not).

    For a reader that must not miss the first messages (the recorder): a subscription only takes
    effect once connected, and a connect made before the publisher has bound is retried only every
    100 ms. The handshake is seen from this side; the publisher takes the subscription just after,
    hence a short settle. inproc has no handshake (connecting before the bind works there)."""
    socks: dict[str, zmq.Socket] = {}
    monitors: dict[zmq.Socket, str] = {}
    done = False
    try:
        for name in names:
            sock = socks[name] = _sub_socket(ctx)
            binds = topic(name).bound_by_subscriber
            if not binds and endpoints.transport != "inproc":  # armed before connecting: no event missed
                monitors[sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)] = name
            _attach(sock, endpoints, name, binds=binds)
        poller = zmq.Poller()
        for mon in monitors:
            poller.register(mon, zmq.POLLIN)
        waiting = set(monitors.values())
        end = time.monotonic() + wait_s
        while waiting and (left := end - time.monotonic()) > 0:
            for mon, _ in poller.poll(int(left * 1000)):
                poller.unregister(mon)
                waiting.discard(monitors[mon])
        for name in sorted(waiting):
            log.warning("%s: not connected to its publisher within %g s (%s); the first messages on it may "
                        "be lost", name, wait_s, endpoints(name))
        if monitors:
            time.sleep(SUBSCRIPTION_SETTLE_S)
        done = True
    finally:
        for mon, name in monitors.items():
            socks[name].disable_monitor()
            mon.close(linger=0)
        if not done:
            for sock in socks.values():
                sock.close(linger=0)
    return socks


class SocketSource:
    """A ZeroMQ socket in the shape LatestReader reads from (MailboxSource is the other)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.lost = 0  # ZeroMQ drops silently past the high-water mark; we cannot count those

    def wait(self, timeout_ms: float) -> bool:
        return bool(self.poller.poll(max(0, int(timeout_ms))))  # whole milliseconds, rounded down

    def take(self) -> bytes | None:
        try:
            return self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self) -> None:
        self.sock.close(linger=0)


class LatestReader:
    """Reads only the newest message on a topic; everything older is counted as skipped.

    Control must act on the present, never on a backlog: after waiting for the first
    message, drain the queue without blocking and keep the last one. The messages come
    from a ZeroMQ socket or, on one host, from the topic's mailbox (runtime/mailbox.py).
    """

    def __init__(self, source: zmq.Socket | SocketSource | MailboxSource) -> None:
        self.source = SocketSource(source) if isinstance(source, zmq.Socket) else source
        self._skipped = 0

    @property
    def skipped(self) -> int:
        """Messages replaced by a newer one before this reader took them."""
        return self._skipped + self.source.lost

    def close(self) -> None:
        self.source.close()

    def recv(self, timeout_ms: float) -> bytes | None:
        """The newest message, or None after `timeout_ms` (0 polls)."""
        if not self.source.wait(timeout_ms):
            return None
        return self.drain()

    def drain(self) -> bytes | None:
        """Newest message already there, or None; never blocks."""
        latest = None
        while True:
            msg = self.source.take()
            if msg is None:
                return latest
            if latest is not None:
                self._skipped += 1
            latest = msg


def latest_reader(ctx: zmq.Context, endpoints: Endpoints, name: str) -> LatestReader:
    """A stage's latest-only input on a topic: from its mailbox where the run has one, else its socket."""
    source = (MailboxSource(Mailbox.attach(endpoints.run_id, name)) if endpoints.route(name).mailbox
              else subscriber(ctx, endpoints, name))
    return LatestReader(source)
