"""The seal of a plain clip: its vehicle key binds the `edgert` metadata to the messages it describes.

`edgert.auth` (runtime/fleet/mcapio.py) authenticates the metadata record alone: a genuine
metadata + auth pair copied out of an anonymised `sim` clip into a file of raw `cn` frames
would pass for the `sim` clip. So the recorder keeps a running SHA-256 of every message it
writes (topic, log time, publish time and data, in order) and, when it closes the file, writes
`edgert.seal`: that digest and count with an HMAC under the vehicle key over them and the
metadata. Export, prune, encrypt and replay read every message once (`read_clip`), recompute
the digest and refuse a clip whose seal is missing or does not match (`check_seal`).

A clip cut off by a crash has no seal; the recorder, which holds the key and owns the 0700
folder, seals what is readable of it at its next start, marked `recovered` (mcapio.seal_recovered).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import struct
from typing import BinaryIO

from mcap.records import Channel, Footer, Message, Metadata
from mcap.stream_reader import StreamReader

SEAL_RECORD = "edgert.seal"
META_RECORD, AUTH_RECORD = "edgert", "edgert.auth"
_LABEL = b"edgert-clip-seal-v1\0"  # domain separation from the metadata MAC made with the same key
_HEAD = struct.Struct("<HQQI")  # topic length, log time, publish time, data length


class ContentHash:
    """Running SHA-256 of a clip's messages, in the order they are written (or read)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.messages = 0

    def update(self, topic: str, log_ns: int, publish_ns: int, data: bytes) -> None:
        t = topic.encode()
        self._h.update(_HEAD.pack(len(t), log_ns, publish_ns, len(data)))
        self._h.update(t)
        self._h.update(data)
        self.messages += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _mac(key: bytes, meta: dict[str, str], messages: int, sha256: str, recovered: str) -> str:
    body = {"meta": {str(k): str(v) for k, v in meta.items()}, "messages": int(messages), "sha256": sha256,
            "recovered": recovered}
    return hmac.new(key, _LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode(),
                    hashlib.sha256).hexdigest()


def seal_record(key: bytes, key_id: str, meta: dict[str, str], content: ContentHash,
                recovered: str = "") -> dict[str, str]:
    """The `edgert.seal` metadata for a clip with META whose messages hashed to CONTENT.

    RECOVERED ("" for a clip closed normally) says why a cut-off clip was sealed after the fact.
    """
    digest = content.hexdigest()
    return {"alg": "hmac-sha256", "key": "vehicle", "key_id": key_id, "messages": str(content.messages),
            "sha256": digest, "recovered": recovered,
            "mac": _mac(key, meta, content.messages, digest, recovered)}


@dataclasses.dataclass
class ClipRead:
    """What one pass over a plain clip found: its edgert metadata records and its messages' hash."""

    records: dict[str, dict[str, str]]  # edgert, edgert.auth, edgert.seal (those present)
    content: ContentHash
    error: str  # why the file could not be read to its end ("" if it could)
    duplicate: str  # the name of an edgert record found twice ("" if none)


def read_clip(f: BinaryIO) -> ClipRead:
    """Read the clip open as F once, start to end (CRCs checked): its records and its content hash."""
    out = ClipRead({}, ContentHash(), "", "")
    topics: dict[int, str] = {}
    f.seek(0)
    try:
        for rec in StreamReader(f, validate_crcs=True, record_size_limit=1 << 31).records:
            if isinstance(rec, Channel):
                topics[rec.id] = rec.topic
            elif isinstance(rec, Message):
                if rec.channel_id not in topics:
                    raise ValueError(f"message on unknown channel {rec.channel_id}")
                out.content.update(topics[rec.channel_id], rec.log_time, rec.publish_time, rec.data)
            elif isinstance(rec, Metadata) and rec.name in (META_RECORD, AUTH_RECORD, SEAL_RECORD):
                if rec.name in out.records:
                    out.duplicate = out.duplicate or rec.name
                else:
                    out.records[rec.name] = dict(rec.metadata)
            elif isinstance(rec, Footer):
                return out
        out.error = "no footer"
    except Exception as e:  # noqa: BLE001 - any failure to parse is reported as where the file breaks off
        out.error = f"{type(e).__name__}: {e}".rstrip(": ") or type(e).__name__
    return out


def check_seal(key: bytes, meta: dict[str, str], seal: dict[str, str], content: ContentHash) -> str:
    """"" if SEAL, under KEY, is the seal of META with exactly the messages hashed into CONTENT; else why not."""
    if seal.get("alg") != "hmac-sha256" or seal.get("key") != "vehicle":
        return f"sealed with {seal.get('alg')!r} by key {seal.get('key')!r}, not hmac-sha256 by the vehicle key"
    want = _mac(key, meta, _int(seal.get("messages")), str(seal.get("sha256", "")), str(seal.get("recovered", "")))
    if not hmac.compare_digest(want, str(seal.get("mac", ""))):
        return "its seal does not authenticate with the vehicle key for this metadata (seal or metadata edited)"
    if _int(seal.get("messages")) != content.messages or seal.get("sha256") != content.hexdigest():
        return (f"its messages are not the ones the vehicle sealed ({content.messages} message(s) here, "
                f"{seal.get('messages')} sealed; content hash differs): its content was replaced or edited")
    return ""


def _int(text: str | None) -> int:
    try:
        return int(str(text))
    except ValueError:
        return -1
