"""The public node API: what a vehicle team writes to add its own stage to a pipeline.

A node declares the topics it reads (`inputs`) and publishes (`outputs`), opens what it needs
in `setup()`, and handles each message in `on_message()` (and/or the clock in `on_tick()`).
Everything else comes from the machinery every built-in stage runs on (runtime/stage.py):
heartbeats and counters to the supervisor, the supervisor's restart policy and deadlines,
logging under `edgert.<name>`, clean shutdown on a stop request, in processes and threads
mode alike. The built-in stages subclass `Node` too; they override `step()`, the loop body
underneath the callbacks, because they read frame pools and mailboxes directly.

A pipeline config starts a node with a `[[nodes]]` table (docs/nodes.md):

    [[nodes]]
    name = "steer_monitor"
    entry = "mypackage.nodes:SteerMonitor"
    params = { window = 30 }

Messages are the versioned binary wire format (runtime/wire.py): a node reads decoded,
validated, read-only records and publishes records made with `self.message(topic)`; nothing
is pickled. A node's own output topics join the topic table (runtime/topics.py) for the run.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import zmq

from edgert.runtime import wire
from edgert.runtime.config import ConfigError
from edgert.runtime.stage import Stage, StageContext
from edgert.runtime.topics import TOPICS, USER_TOPICS, Topic, register_user_topics
from edgert.runtime.transport import LatestReader, SocketSource, publisher, subscriber
from edgert.runtime.wire import MsgType, Stamp

if TYPE_CHECKING:
    from edgert.runtime.config import NodeSpec, PipelineConfig

__all__ = ["Node", "MsgType", "Stamp", "StageContext", "resolve_nodes", "node_entries"]

POLL_MS = 100  # the longest a node's loop waits before heartbeats and stop requests are looked at
TOPIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class Node(Stage):
    """A pipeline stage, written as a few declarations and callbacks.

    Subclass it, declare `inputs` and `outputs`, and override `setup`, `on_message` and/or
    `on_tick`; `teardown` closes what `setup` registered with `own()`. Callbacks run on the
    node's own loop (its process, or its thread in threads mode) and must return within
    ~100 ms: the loop sends heartbeats between them, and a node silent for 2 s is killed and
    restarted by the supervisor (processes mode). An exception in a callback ends this
    instance; the supervisor restarts it with back-off and gives up after repeated crashes,
    while the rest of the pipeline runs on.

    Attributes a node may read: `name` (its `[[nodes]]` name), `params` (its `params` table),
    `cfg` (the whole pipeline config), `log` (a logger), `ctx` (sockets' context, stop event).
    Counters reported in heartbeats and the run summary: `frames` (messages handled),
    `dropped` (messages replaced by a newer one before the node took them, latest-only
    inputs), `rejected` (messages that failed wire validation), `errors`.
    """

    inputs: ClassVar[tuple[str, ...]] = ()
    """Topics this node reads (runtime/topics.py, or another node's outputs); a config's
    `inputs` replaces them. Each message is decoded and validated before `on_message`."""

    outputs: ClassVar[Mapping[str, MsgType]] = {}
    """Topics this node publishes, with their wire message type: `{"steer_stats": MsgType.RESULT}`.
    A name must be new (not a built-in topic); other nodes may read it."""

    tick_hz: ClassVar[float] = 0.0
    """How often `on_tick` runs, in Hz; 0 = never."""

    latest_only: ClassVar[bool] = True
    """True: `on_message` gets only the newest message on each input (older ones are counted in
    `dropped`), like every hop of the pipeline. False: every message, in order (up to the
    socket's buffer of 64; beyond that ZeroMQ drops the newest, uncounted)."""

    def __init__(self, ctx: StageContext) -> None:
        if ctx.name:  # a user node is named by its [[nodes]] table
            self.name = ctx.name
        super().__init__(ctx)
        spec = next((n for n in self.cfg.nodes if n.name == self.name), None)
        self.params: dict[str, Any] = dict(spec.params) if spec else {}
        self._inputs: tuple[str, ...] = tuple(spec.inputs) if spec and spec.inputs else tuple(self.inputs)
        self._readers: dict[zmq.Socket, tuple[str, MsgType, LatestReader]] = {}
        self._publishers: dict[str, Any] = {}
        self._messages: dict[str, np.ndarray] = {}
        self._poller = zmq.Poller()
        self._next_tick_ns = 0
        self.recv_ns = 0  # time.monotonic_ns() when the message being handled was taken

    # -- what a node overrides -----------------------------------------------------------
    def on_message(self, topic: str, msg: np.void) -> None:
        """Handle one validated message (read-only) from input `topic`."""

    def on_tick(self, now_ns: int) -> None:
        """Runs every 1/tick_hz seconds; `now_ns` is time.monotonic_ns()."""

    # -- what a node calls ---------------------------------------------------------------
    def message(self, topic: str) -> np.ndarray:
        """The reusable record of output `topic`'s type (header filled in): set fields, then `send_output`."""
        return self._messages[self._output(topic)]

    def send_output(self, topic: str, msg: np.ndarray | np.void) -> None:
        """Send `msg` on output `topic`. A message with a `stamps` array and no capture stamp is
        stamped now (time.monotonic_ns()): copy an input's `stamps` into it to carry that frame's
        timeline through, as every built-in stage does."""
        pub = self._publishers[self._output(topic)]
        if "stamps" in (msg.dtype.names or ()) and not msg["stamps"][Stamp.CAPTURE]:
            msg["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        pub.send(wire.encode(msg))

    def _output(self, topic: str) -> str:
        if topic not in self._publishers:
            raise KeyError(f"node {self.name}: {topic!r} is not one of its outputs "
                           f"({', '.join(self.outputs) or 'none'}); declare it in the class's `outputs`")
        return topic

    # -- the machinery (runtime/stage.py's run_stage calls these) -------------------------
    def _open_io(self) -> None:
        """Before `setup` (run_stage calls it): a socket per declared input and output."""
        for name in self._inputs:
            sock = self.own(subscriber(self.ctx.zmq, self.ctx.endpoints, name))
            self._readers[sock] = (name, TOPICS[name].msg, LatestReader(SocketSource(sock)))
            self._poller.register(sock, zmq.POLLIN)
        for name, msg_type in self.outputs.items():
            self._publishers[name] = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, name))
            self._messages[name] = wire.new_message(msg_type)
        if self.tick_hz:
            self._next_tick_ns = time.monotonic_ns()

    def step(self) -> None:
        """One turn of the loop: wait for input (or the next tick) at most POLL_MS, then call back."""
        timeout = POLL_MS
        if self.tick_hz:
            timeout = max(0, min(POLL_MS, (self._next_tick_ns - time.monotonic_ns()) // 1_000_000))
        if self._readers:
            ready = dict(self._poller.poll(timeout))
            for sock in ready:
                self._take(sock)
        elif timeout:
            self.ctx.stop.wait(timeout / 1000)
        if self.tick_hz and time.monotonic_ns() >= self._next_tick_ns:
            now = time.monotonic_ns()
            self._next_tick_ns = max(self._next_tick_ns + int(1e9 / self.tick_hz), now)
            self.on_tick(now)

    def _take(self, sock: zmq.Socket) -> None:
        name, msg_type, reader = self._readers[sock]
        if self.latest_only:
            before = reader.skipped
            data = reader.drain()
            self.dropped += reader.skipped - before
            batch = [] if data is None else [data]
        else:
            batch = []
            while (data := reader.source.take()) is not None:
                batch.append(data)
        for data in batch:
            self.recv_ns = time.monotonic_ns()
            rec = self.decode(data, msg_type)
            if rec is None:
                continue
            self.on_message(name, rec)
            self.frames += 1


# -- [[nodes]] in a config: entry points and topics -------------------------------------------
def _load_class(spec: NodeSpec) -> type[Node]:
    where = f"[[nodes]] {spec.name!r}: entry {spec.entry!r}"
    module, _, cls_name = spec.entry.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}: no module {e.name!r}; install the package that provides it into this "
                          "environment (pip install ...) or fix the module path") from None
    except Exception as e:
        raise ConfigError(f"{where}: importing {module} failed: {type(e).__name__}: {e}; fix the module") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        have = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, Node) and v is not Node)
        raise ConfigError(f"{where}: module {module} has no {cls_name!r}"
                          + (f"; its nodes are: {', '.join(have)}" if have else "; fix the class name"))
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise ConfigError(f"{where}: {cls_name} is not an edgert.Node; subclass it (docs/nodes.md)")
    return cls


def resolve_nodes(cfg: PipelineConfig) -> dict[str, type[Node]]:
    """Import every `[[nodes]]` class, register their output topics for this run and check their
    inputs: node name -> class. Raises ConfigError naming the node and the fix."""
    classes = {spec.name: _load_class(spec) for spec in cfg.nodes}
    builtin = [t for t in TOPICS.values() if t.name not in USER_TOPICS]
    user: list[Topic] = []
    for name, cls in classes.items():
        for topic, msg_type in cls.outputs.items():
            where = f"[[nodes]] {name!r}: output {topic!r}"
            if not TOPIC_NAME.fullmatch(topic):
                raise ConfigError(f"{where}: a topic name is lower-case letters, digits and '_' (at most 32)")
            if not isinstance(msg_type, MsgType) or msg_type == MsgType.HEARTBEAT:
                raise ConfigError(f"{where}: message type {msg_type!r} is not one of MsgType."
                                  f"{', MsgType.'.join(t.name for t in MsgType if t != MsgType.HEARTBEAT)}")
            clash = next((t.publisher for t in (*builtin, *user) if t.name == topic), None)
            if clash is not None:
                raise ConfigError(f"{where}: topic already published by {clash!r}; give it another name")
            user.append(Topic(topic, msg_type, name, 0.0))
    register_user_topics(user)
    for spec in cfg.nodes:
        ins = spec.inputs or classes[spec.name].inputs
        for topic in ins:
            if topic not in TOPICS:
                raise ConfigError(f"[[nodes]] {spec.name!r}: input {topic!r} is not a topic; topics are: "
                                  f"{', '.join(TOPICS)} (fix `inputs` in the config or in the class)")
            if TOPICS[topic].bound_by_subscriber:
                raise ConfigError(f"[[nodes]] {spec.name!r}: input {topic!r} is read by the supervisor alone; "
                                  "a node cannot subscribe to it")
    return classes


def node_entries(cfg: PipelineConfig) -> dict[str, str]:
    """`[[nodes]]` name -> its "module:Class", what the supervisor starts it with."""
    return {spec.name: spec.entry for spec in cfg.nodes}
