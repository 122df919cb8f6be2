"""Every topic in a pipeline, declared once: who publishes it, what it carries, how often.

Like openpilot's cereal/services.py, this table is the single place a reader looks to
see the data flow; transport endpoints and telemetry are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgert.runtime.wire import MsgType


@dataclass(frozen=True)
class Topic:
    name: str
    msg: MsgType
    publisher: str  # stage name; "*" = every stage (connects to the supervisor's bound socket)
    rate_hz: float  # nominal, at the default camera rate
    bound_by_subscriber: bool = False  # many publishers -> one subscriber binds
    mailbox: bool = False  # one host: stages read it from a shared-memory mailbox (runtime/mailbox.py)


TOPICS: dict[str, Topic] = {t.name: t for t in (
    Topic("frames", MsgType.FRAME, "capture", 30.0, mailbox=True),       # descriptor of a camera slot
    Topic("tensors", MsgType.FRAME, "preprocess", 30.0, mailbox=True),   # descriptor of a model-input slot
    Topic("results", MsgType.RESULT, "infer", 30.0, mailbox=True),       # model outputs, validated
    Topic("commands", MsgType.COMMAND, "control", 30.0, mailbox=True),   # steering commands / takeover requests
    Topic("vehicle", MsgType.VEHICLE, "capture", 30.0, mailbox=True),    # simulator ground truth (pose, lane error)
    Topic("heartbeat", MsgType.HEARTBEAT, "*", 10.0, bound_by_subscriber=True),  # stages -> supervisor
    Topic("supervisor", MsgType.HEARTBEAT, "supervisor", 10.0),  # supervisor -> stages (start signal)
    # the camera descriptor of each frame the recorder is done with (copied, or counted as lost): a
    # max-speed replay (replay.speed = 0) waits for it, so it never outruns its own recording
    Topic("recorded", MsgType.FRAME, "recorder", 30.0, mailbox=True),
)}


def topic(name: str) -> Topic:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; topics are: {', '.join(TOPICS)}") from None


# -- user nodes' topics ([[nodes]], runtime/node.py) -------------------------------------------
USER_TOPICS: set[str] = set()  # the names in TOPICS that user nodes publish (this run's)


def register_user_topics(topics: list[Topic]) -> None:
    """Make this run's user-node output topics known, after the built-in ones (so their tcp ports
    follow the built-ins'); the previous run's are dropped. Called by runtime/node.resolve_nodes."""
    for name in USER_TOPICS:
        TOPICS.pop(name, None)
    USER_TOPICS.clear()
    for t in topics:
        if t.name in TOPICS:
            raise ValueError(f"topic {t.name!r} is a built-in topic; a node's output needs another name")
        TOPICS[t.name] = t
        USER_TOPICS.add(t.name)
