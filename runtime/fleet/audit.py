"""An append-only, hash-chained audit log of every fleet-data decision (export, refusal, prune).

One JSON object per line. Each entry carries `seq`, the previous entry's `hash` as `prev`,
and its own `hash` = SHA-256 (or HMAC-SHA-256 with the vehicle's audit key) over the
canonical JSON of the entry without `hash`. Editing, deleting, inserting or reordering lines
breaks the chain at the first affected entry, and `verify` names it.

Limits (docs/fleet.md): with plain SHA-256 anyone who can write the file can recompute the
whole chain; an HMAC key (`edgert fleet keygen --audit`) kept apart from the log closes that
for whoever lacks the key. Cutting entries off the *end* leaves a valid shorter chain: compare
the head (`verify` prints the last seq and hash) with a copy kept off the vehicle.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgert.runtime import keyfile
from edgert.runtime.errors import EdgertError

GENESIS = "0" * 64
_RESERVED = {"seq", "time", "event", "prev", "hash", "mac"}


class AuditError(EdgertError, ValueError):
    """The audit log cannot be read or written."""


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(body: dict[str, Any], key: bytes | None) -> str:
    data = _canonical(body)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _last_line(f: Any) -> bytes:
    """The last non-empty line of a binary file opened for reading (reads backwards in blocks)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    buf = b""
    pos = end
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        stripped = buf.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    return buf.rstrip(b"\n")


class AuditLog:
    """Appends chained entries to one file: O_APPEND, an exclusive lock, fsync per entry."""

    def __init__(self, path: str | Path, key: bytes | None = None) -> None:
        self.path = Path(path)
        self.key = key

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one entry (event name + JSON-able fields) and return it, hash included."""
        bad = _RESERVED & fields.keys()
        if bad:
            raise AuditError(f"audit fields {sorted(bad)} are reserved for the chain; rename them")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # read-the-head + append is one step for concurrent writers
            with os.fdopen(os.dup(fd), "rb") as f:
                last = _last_line(f)
            if last:
                try:
                    head = json.loads(last)
                    prev, seq = head["hash"], int(head["seq"]) + 1
                except (ValueError, KeyError, TypeError) as e:
                    raise AuditError(f"{self.path}: the last entry is unreadable ({e}); the log was damaged, "
                                     "`edgert fleet audit verify` says where. Keep it as evidence and start "
                                     "a new log file") from None
            else:
                prev, seq = GENESIS, 0
            body = {"seq": seq, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "event": event, **fields, "prev": prev, "mac": "hmac-sha256" if self.key else "sha256"}
            entry = {**body, "hash": _digest(body, self.key)}
            os.write(fd, _canonical(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # entries that verified, in order, before the first broken one
    head: str  # the hash of the last good entry (GENESIS for an empty log)
    first_bad: int | None = None  # 1-based line number of the first broken entry
    reason: str = ""


def verify(path: str | Path, key: bytes | None = None) -> VerifyResult:
    """Check the whole chain; the first line that does not follow from the one before is reported.

    With `key`, every entry must be HMAC'd with it (a plain-SHA-256 entry is a break: someone
    without the key rewrote it).
    """
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise AuditError(f"audit log {path} does not exist; pass the log's path (--audit FILE)") from None
    if lines and lines[-1] == b"":
        lines.pop()
    prev, n = GENESIS, 0
    for i, line in enumerate(lines, 1):
        def bad(why: str) -> VerifyResult:
            return VerifyResult(False, n, prev, i, f"line {i}: {why}")  # noqa: B023 (called in this iteration)
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            return bad(f"not a JSON entry ({e}): edited or corrupted")
        got = entry.pop("hash", None)
        mac = entry.get("mac")
        if key is not None and mac != "hmac-sha256":
            return bad(f"entry is {mac!r}, not HMAC'd with the vehicle's audit key: written by someone without it")
        if key is None and mac == "hmac-sha256":
            return bad("entry is HMAC'd; give the vehicle's audit key (--key FILE) to verify it")
        if entry.get("seq") != n:
            return bad(f"seq {entry.get('seq')!r} where {n} was expected: entries deleted, inserted or reordered")
        if entry.get("prev") != prev:
            return bad("its 'prev' is not the previous entry's hash: entries deleted, inserted or reordered")
        if not isinstance(got, str) or not hmac.compare_digest(got, _digest(entry, key)):
            return bad("its hash does not match its content: the entry was edited")
        prev, n = got, n + 1
    return VerifyResult(True, n, prev)


def load_key(path: str | Path) -> bytes:
    """A vehicle's audit HMAC key: 32 bytes that runtime/keyfile.py trusts (a plain file of this
    user, mode 0600, in folders nobody else can write)."""
    path = Path(path)
    try:
        return keyfile.load(path, 32, "audit key")
    except FileNotFoundError:
        raise AuditError(f"audit key {path} not found; `edgert fleet keygen --audit` makes one") from None
    except keyfile.KeyFileError as e:
        raise AuditError(str(e)) from None


def now_ns() -> int:
    """Wall-clock time for retention decisions (recordings carry UNIX-epoch nanoseconds)."""
    return time.time_ns()
