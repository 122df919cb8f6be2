"""`edgert echo TOPIC`: print a live topic of a running pipeline as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys

from edgert.runtime.errors import UsageError


def cmd_echo(args: argparse.Namespace) -> int:
    """Print a live topic as JSON lines, like the topic tools of robotics stacks."""
    import zmq

    from edgert.runtime import shm, wire
    from edgert.runtime.config import PipelineConfig
    from edgert.runtime.topics import TOPICS, Topic, topic
    from edgert.runtime.transport import Endpoints, subscriber

    def known_topic() -> Topic:
        try:
            return topic(args.topic)
        except KeyError as e:  # the message lists the topics
            raise UsageError(e.args[0]) from None

    if args.topic in TOPICS and TOPICS[args.topic].bound_by_subscriber:
        raise UsageError(f"{args.topic!r} is read by the supervisor, which binds its socket; echo would take that "
                         "socket over. Its counters are in the run summary.")
    runs = [(d, rid) for d, rid, alive in shm.run_dirs()
            if alive and (d / "pipeline.json").is_file() and (args.run is None or f".{args.run}." in d.name)]
    if not runs:
        known_topic()  # an unknown name is the first thing to fix
        print("edgert: error: no running pipeline found; start one with `edgert run`", file=sys.stderr)
        return 1
    run_dir, run_id = runs[-1]
    cfg = PipelineConfig.from_json((run_dir / "pipeline.json").read_text())
    if cfg.nodes:  # a [[nodes]] node's output topics are known once the run's nodes are
        from edgert.runtime.node import resolve_nodes

        resolve_nodes(cfg)
    known_topic()
    if cfg.pipeline.mode == "threads":
        print("edgert: error: a threads-mode pipeline uses inproc:// sockets, visible only inside its process",
              file=sys.stderr)
        return 1
    ctx = zmq.Context()
    sock = subscriber(ctx, Endpoints.for_run(cfg, run_id, run_dir), args.topic)
    n = 0
    try:
        while args.count == 0 or n < args.count:
            if not sock.poll(1000):
                continue
            try:
                rec = wire.decode(sock.recv())
            except wire.WireError as e:
                print(json.dumps({"rejected": str(e)}), flush=True)
                continue
            print(json.dumps(wire.to_dict(rec)), flush=True)
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser("echo", help="print a live topic of a running pipeline as JSON lines")
    e.add_argument("topic")
    e.add_argument("--run", help="run id (default: the newest running pipeline)")
    e.add_argument("--count", type=int, default=0, help="stop after N messages (0 = until Ctrl-C)")
    e.set_defaults(func=cmd_echo)
