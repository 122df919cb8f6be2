"""The audit log's hash chain: intact logs verify; edits, deletions, reorderings and rewrites are found."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.runtime import cli
from edgert.runtime.fleet import crypto
from edgert.runtime.fleet.audit import GENESIS, AuditError, AuditLog, load_key, verify

ROOT = Path(__file__).resolve().parent.parent


def _log(path: Path, n: int = 5, key: bytes | None = None) -> list[dict]:
    log = AuditLog(path, key)
    return [log.append("export", clip=f"clip-{i}.mcap", to="eu", allowed=i % 2 == 0) for i in range(n)]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_intact_chain_verifies_and_links_every_entry(tmp_path):
    p = tmp_path / "audit.jsonl"
    entries = _log(p)
    r = verify(p)
    assert r.ok and r.entries == 5 and r.head == entries[-1]["hash"]
    assert entries[0]["prev"] == GENESIS and [e["seq"] for e in entries] == list(range(5))
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    # A reopened log continues the same chain.
    more = AuditLog(p).append("prune", deleted=1)
    assert more["seq"] == 5 and more["prev"] == entries[-1]["hash"] and verify(p).ok


def test_edited_entry_is_found(tmp_path):
    p = tmp_path / "audit.jsonl"
    _log(p)
    lines = _lines(p)
    e = json.loads(lines[2])
    e["to"] = "cn"  # quietly rewrite where a clip went
    lines[2] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    _write(p, lines)
    r = verify(p)
    assert not r.ok and r.first_bad == 3 and r.entries == 2 and "edited" in r.reason


@pytest.mark.parametrize("how, first_bad, words", [
    ("delete", 2, "deleted, inserted or reordered"),
    ("swap", 2, "deleted, inserted or reordered"),
    ("garbage", 4, "not a JSON entry"),
])
def test_deleted_reordered_or_corrupted_lines_are_found(tmp_path, how, first_bad, words):
    p = tmp_path / "audit.jsonl"
    _log(p)
    lines = _lines(p)
    if how == "delete":
        del lines[1]
    elif how == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[3] = lines[3][:-5]
    _write(p, lines)
    r = verify(p)
    assert not r.ok and r.first_bad == first_bad and words in r.reason


def test_recomputed_chain_is_caught_only_with_the_vehicle_key(tmp_path):
    """Without a key a tamperer can rebuild the whole chain (the documented limit); with one he cannot."""
    key = os.urandom(32)
    p = tmp_path / "audit.jsonl"
    _log(p, key=key)
    assert verify(p, key).ok
    assert verify(p, os.urandom(32)).first_bad == 1  # a wrong key is not the vehicle's key
    # The tamperer drops entry 1 and rebuilds a plain SHA-256 chain: consistent, but not keyed.
    forged = tmp_path / "forged.jsonl"
    log = AuditLog(forged)
    for line in [ln for i, ln in enumerate(_lines(p)) if i != 1]:
        e = json.loads(line)
        log.append(e["event"], clip=e["clip"], to=e["to"], allowed=e["allowed"])
    assert verify(forged).ok  # the limit: a keyless chain proves order, not authorship
    r = verify(forged, key)
    assert not r.ok and r.first_bad == 1 and "not HMAC'd with the vehicle's audit key" in r.reason
    # ... and guessing a key does not help either.
    guessed = tmp_path / "guessed.jsonl"
    _log(guessed, key=hashlib.sha256(b"guess").digest())
    assert verify(guessed, key).first_bad == 1


def test_keyed_log_asks_for_the_key(tmp_path):
    p = tmp_path / "audit.jsonl"
    _log(p, key=os.urandom(32))
    r = verify(p)
    assert not r.ok and "give the vehicle's audit key" in r.reason


def test_reserved_fields_and_a_damaged_head_are_refused(tmp_path):
    p = tmp_path / "audit.jsonl"
    with pytest.raises(AuditError, match="reserved for the chain"):
        AuditLog(p).append("x", hash="0" * 64)
    _log(p, 2)
    with open(p, "a") as f:
        f.write('{"half an entry\n')
    with pytest.raises(AuditError, match="the last entry is unreadable.*start a new log file"):
        AuditLog(p).append("x")


def test_concurrent_writers_keep_one_chain(tmp_path):
    """Two processes appending at once: the lock makes read-head + append atomic."""
    p = tmp_path / "audit.jsonl"
    code = ("import sys; from edgert.runtime.fleet.audit import AuditLog\n"
            "log = AuditLog(sys.argv[1])\n"
            "for i in range(60): log.append('w', writer=sys.argv[2], i=i)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), w], cwd=ROOT) for w in "ab"]
    assert all(pr.wait(60) == 0 for pr in procs)
    r = verify(p)
    assert r.ok and r.entries == 120


def test_cli_verify_exit_status_and_keyed_logs(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert cli.main(["fleet", "keygen", "--audit", "--keys", str(keys)]) == 0
    key = load_key(keys / "audit.key")
    assert stat.S_IMODE((keys / "audit.key").stat().st_mode) == 0o600
    # fleet commands HMAC the log once the key exists
    clip = tmp_path / "x.mcap"
    clip.write_bytes(b"junk")
    cli.main(["fleet", "export", str(clip), "--to", "eu", "--audit", str(tmp_path / "a.jsonl"), "--keys", str(keys)])
    assert json.loads(_lines(tmp_path / "a.jsonl")[0])["mac"] == "hmac-sha256"
    capsys.readouterr()
    assert cli.main(["fleet", "audit", "verify", str(tmp_path / "a.jsonl"), "--key", str(keys / "audit.key")]) == 0
    assert "ok: 1 entries, chain intact" in capsys.readouterr().out
    assert verify(tmp_path / "a.jsonl", key).ok
    lines = _lines(tmp_path / "a.jsonl")
    _write(tmp_path / "a.jsonl", [lines[0].replace('"to":"eu"', '"to":"us"')])
    assert cli.main(["fleet", "audit", "verify", str(tmp_path / "a.jsonl"), "--key", str(keys / "audit.key")]) == 1
    assert "chain broken at line 1" in capsys.readouterr().err
    assert cli.main(["fleet", "audit", "verify", str(tmp_path / "none.jsonl")]) == 2
    with pytest.raises(crypto.CryptoError, match="already exists"):
        crypto.keygen(keys, "audit")
