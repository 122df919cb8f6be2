"""Residency decisions rest on authenticated metadata, bound to the content it describes; export leaves nothing unaudited or
followable in a shared destination; a clip that cannot be encrypted is never left readable.

Issue 17, points 6 and 9. Clips are written by the recorder's own writer (mcapio.McapFile with
the vehicle key) or encrypted with the region's key, then edited the way someone with write
access to the disk would: the metadata rewritten, the cleartext header patched.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from mcap.reader import make_reader
from mcap.writer import Writer
from test_fleet_policy import DAY_NS, NOW_NS, SHIPPED, audit_entries

from edgert.runtime import cli
from edgert.runtime.fleet import crypto, mcapio, seal
from edgert.runtime.fleet.audit import AuditLog
from edgert.runtime.fleet.export import (
    ClipError,
    Quarantined,
    encrypt_clip,
    export,
    prune,
    read_clip_info,
    recorder_hooks,
)
from edgert.runtime.fleet.policy import Policy

POLICY = Policy.load(SHIPPED)


def recorded_clip(path: Path, keys: Path, region: str, recorded_ns: int = NOW_NS - DAY_NS,
                  anonymised: str = "true") -> Path:
    """A clip as the recorder writes it: McapFile with the vehicle key, a few /commands messages."""
    meta = {"region": region, "run_id": "run-7", "recorded_ns": str(recorded_ns), "anonymised": anonymised,
            "vehicle_id": "car7"}
    f = mcapio.McapFile(path, meta, auth_key=crypto.load_or_make_key(keys, crypto.VEHICLE))
    for i in range(50):
        f.write("/commands", NOW_NS + i, NOW_NS + i, json.dumps({"frame_id": i, "steer": 0.01}).encode())
    return f.close()


def rewrite_metadata(src: Path, dst: Path, key: bytes | None = None, **changes: str) -> Path:
    """What an editor does: the same file with some `edgert` metadata values changed, the auth and seal
    records kept as they were; or, with the vehicle KEY, re-authenticated and re-sealed (as if the
    vehicle had written it so)."""
    with open(src, "rb") as f:
        r = make_reader(f)
        metas = [(m.name, dict(m.metadata)) for m in r.iter_metadata()]
        msgs = list(r.iter_messages())
    with open(dst, "wb") as out:
        w = Writer(out)
        w.start(profile="", library="hex editor")
        edited = {**dict(metas)["edgert"], **changes}
        for name, m in metas:
            if name == "edgert":
                m = edited
            elif name == mcapio.AUTH_RECORD and key is not None:
                m = mcapio.auth_record(key, edited)
            elif name == seal.SEAL_RECORD and key is not None:
                content = seal.ContentHash()
                for _, channel, msg in msgs:
                    content.update(channel.topic, msg.log_time, msg.publish_time, msg.data)
                m = seal.seal_record(key, crypto.key_id(key), edited, content, m.get("recovered", ""))
            w.add_metadata(name, m)
        channels: dict[int, int] = {}
        for schema, channel, msg in msgs:
            if channel.id not in channels:
                sid = w.register_schema(schema.name, schema.encoding, schema.data)
                channels[channel.id] = w.register_channel(channel.topic, channel.message_encoding, sid)
            w.add_message(channels[channel.id], log_time=msg.log_time, publish_time=msg.publish_time, data=msg.data)
        w.finish()
    return dst


def patch_header(enc: Path, old: bytes, new: bytes) -> None:
    """Edit the cleartext JSON header of an encrypted clip in place (same length: the file stays well formed)."""
    assert len(old) == len(new)
    raw = bytearray(enc.read_bytes())
    hlen = int.from_bytes(raw[8:12], "little")
    header = bytes(raw[12:12 + hlen])
    assert old in header, header
    raw[12:12 + hlen] = header.replace(old, new)
    enc.write_bytes(bytes(raw))


# -- point 6: metadata is authenticated -------------------------------------------------------
def test_an_edited_plain_clip_is_refused_by_export_and_prune_not_relabelled(tmp_path):
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir()
    audit = AuditLog(tmp_path / "audit.jsonl")
    good = recorded_clip(rec / "sim-good.mcap", keys, "sim")
    assert read_clip_info(good, keys).region == "sim"
    # a 'cn' clip (no transfer out) re-labelled 'sim' (transfer anywhere), and its age made older
    cn = recorded_clip(tmp_path / "cn.mcap", keys, "cn", recorded_ns=NOW_NS - DAY_NS)
    relabelled = rewrite_metadata(cn, rec / "relabelled.mcap", region="sim", recorded_ns=str(NOW_NS - 30 * DAY_NS))
    with pytest.raises(ClipError, match=r"relabelled.mcap: its metadata was edited after recording .*refused, "
                                        "not re-labelled"):
        read_clip_info(relabelled, keys)
    res = export([good, relabelled], "eu", tmp_path / "out", POLICY, audit, keys)
    assert [r.decision.allowed for r in res] == [True, False]
    assert "metadata was edited after recording" in res[1].decision.reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sim-good.mcap"]
    # prune: the edit would have made it past sim's 7-day retention; it is kept and reported instead
    p = prune(rec, POLICY, audit, NOW_NS, keys)
    assert relabelled.exists() and good.exists() and p.deleted == []
    assert len(p.errors) == 1 and "metadata was edited after recording" in p.errors[0]
    # a clip without the auth record (stripped, or not from an edgert recorder), or from another vehicle
    stripped = tmp_path / "stripped.mcap"
    with open(cn, "rb") as f:
        meta = next(m for m in make_reader(f).iter_metadata() if m.name == "edgert").metadata
    with open(stripped, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="x")
        w.add_metadata("edgert", dict(meta))
        w.finish()
    with pytest.raises(ClipError, match=r"its metadata is not authenticated \(no 'edgert.auth' record"):
        read_clip_info(stripped, keys)
    other = recorded_clip(tmp_path / "other.mcap", tmp_path / "other-keys", "sim")
    with pytest.raises(ClipError, match=r"authenticated by vehicle key \w+, not by this machine's .*another vehicle"):
        read_clip_info(other, keys)
    events = [e["event"] for e in audit_entries(tmp_path / "audit.jsonl")]
    assert events == ["export", "export_refused", "prune_error", "prune"]


def test_an_edited_encrypted_header_is_refused_not_relabelled(tmp_path, capsys):
    keys = tmp_path / "keys"
    for region in ("cn", "us"):
        crypto.keygen(keys, region)
    cn = encrypt_clip(recorded_clip(tmp_path / "cn-1.mcap", keys, "cn"), keys)
    assert read_clip_info(cn, keys).region == "cn"
    # cn data may not leave cn; re-labelled 'us' (which may transfer to eu) it would
    patch_header(cn, b'"region": "cn"', b'"region": "us"')
    with pytest.raises(ClipError, match=r"encrypted with key \w+ \(region 'us'\), not with the key given"):
        read_clip_info(cn, keys)
    # the key id patched too (it is public: any us clip's header shows it): chunk 0 fails
    us_id = crypto.key_id(crypto.load_key(keys, "us"))
    patch_header(cn, crypto.key_id(crypto.load_key(keys, "cn")).encode(), us_id.encode())
    with pytest.raises(ClipError, match=r"chunk 0 fails authentication: the file \(or its header\) was altered"):
        read_clip_info(cn, keys)
    # through the CLI: refused, audited, nothing copied
    argv = ["fleet", "export", str(cn), "--to", "eu", "--dest", str(tmp_path / "eu"), "--policy", str(SHIPPED),
            "--audit", str(tmp_path / "audit.jsonl"), "--keys", str(keys)]
    assert cli.main(argv) == 1
    assert "chunk 0 fails authentication" in capsys.readouterr().err
    assert not (tmp_path / "eu").exists() or not list((tmp_path / "eu").iterdir())
    assert [e["event"] for e in audit_entries(tmp_path / "audit.jsonl")] == ["export_refused"]
    # an edited age in an encrypted header: prune keeps it and says why
    old = encrypt_clip(recorded_clip(tmp_path / "us-old.mcap", keys, "us", recorded_ns=NOW_NS - 400 * DAY_NS), keys)
    patch_header(old, str(NOW_NS - 400 * DAY_NS).encode(), str(NOW_NS - 1 * DAY_NS).encode())  # "1 day old"
    audit = AuditLog(tmp_path / "audit2.jsonl")
    p = prune(tmp_path, POLICY, audit, NOW_NS, keys)
    assert old.exists() and any("us-old.mcap.enc" in e and "fails authentication" in e for e in p.errors)


# -- point 6: metadata is bound to the content it describes -----------------------------------
def rebuild(dst: Path, meta_src: Path, content_src: Path, names: tuple[str, ...],
            edit: Callable[[int, bytes], bytes] | None = None) -> Path:
    """What someone with write access to the disk can do without the key: a well-formed MCAP file with
    the metadata records NAMES copied from META_SRC and the messages of CONTENT_SRC (each through EDIT)."""
    with open(meta_src, "rb") as f:
        metas = {m.name: dict(m.metadata) for m in make_reader(f).iter_metadata()}
    with open(content_src, "rb") as f:
        msgs = list(make_reader(f).iter_messages())
    with open(dst, "wb") as out:
        w = Writer(out)
        w.start(profile="", library="edgert")
        for name in names:
            w.add_metadata(name, metas[name])
        channels: dict[int, int] = {}
        for i, (schema, channel, msg) in enumerate(msgs):
            if channel.id not in channels:
                sid = w.register_schema(schema.name, schema.encoding, schema.data)
                channels[channel.id] = w.register_channel(channel.topic, channel.message_encoding, sid)
            data = edit(i, msg.data) if edit else msg.data
            w.add_message(channels[channel.id], log_time=msg.log_time, publish_time=msg.publish_time, data=data)
        w.finish()
    return dst


def raw_clip(path: Path, keys: Path, region: str, anonymised: str) -> Path:
    """A clip of raw camera frames, written by the recorder's writer with the vehicle key."""
    from test_record import _frame_msg, frame_pixels
    meta = {"region": region, "run_id": "run-9", "recorded_ns": str(NOW_NS - DAY_NS), "anonymised": anonymised,
            "vehicle_id": "car7"}
    f = mcapio.McapFile(path, meta, auth_key=crypto.load_or_make_key(keys, crypto.VEHICLE), chunk_size=4096)
    for i in range(1, 9):
        f.write(mcapio.RAW_TOPIC, NOW_NS + i, NOW_NS + i, _frame_msg(i, frame_pixels(i)), i)
    return f.close()


def test_genuine_metadata_moved_onto_another_clips_content_is_refused(tmp_path):
    """An anonymised sim clip (may go anywhere) lends its genuine edgert + edgert.auth pair (and its seal)
    to a file of raw cn frames (may not leave cn): export, prune and replay refuse it; the genuine
    clip still exports."""
    from edgert.runtime.replay import run_replay
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir()
    audit = AuditLog(tmp_path / "audit.jsonl")
    sim = recorded_clip(rec / "sim-good.mcap", keys, "sim")
    cn = raw_clip(tmp_path / "cn-raw.mcap", keys, "cn", anonymised="false")
    no_seal = r"its content is not sealed \(no 'edgert.seal' record.*moved onto other messages"
    mismatch = r"its messages are not the ones the vehicle sealed \(8 message\(s\) here, 50 sealed"
    for name, records, why in (("pair", ("edgert", mcapio.AUTH_RECORD), no_seal),
                               ("sealed", ("edgert", mcapio.AUTH_RECORD, seal.SEAL_RECORD), mismatch)):
        clip = rebuild(rec / f"{name}.mcap", sim, cn, records)
        with pytest.raises(ClipError, match=why):
            read_clip_info(clip, keys)
        with pytest.raises(ClipError, match=why):  # replay authenticates before it builds anything
            run_replay(clip, keys_dir=keys, work_dir=tmp_path)
    pair, sealed = rec / "pair.mcap", rec / "sealed.mcap"
    res = export([sim, pair, sealed], "eu", tmp_path / "out", POLICY, audit, keys)
    assert [r.decision.allowed for r in res] == [True, False, False]
    assert "its content is not sealed" in res[1].decision.reason
    assert "messages are not the ones the vehicle sealed" in res[2].decision.reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sim-good.mcap"]
    p = prune(rec, POLICY, audit, NOW_NS + 30 * DAY_NS, keys)  # past sim's retention: only the genuine one goes
    assert p.deleted == [sim] and sorted(p.kept) == [pair, sealed] and len(p.errors) == 2
    # encrypting it (the recorder's hook, `edgert fleet encrypt`) would make the lie authenticated: refused too
    crypto.keygen(keys, "sim")
    with pytest.raises(ClipError, match=no_seal):
        encrypt_clip(pair, keys)


def test_a_message_edited_or_added_inside_a_sealed_clip_is_refused(tmp_path, capsys):
    keys = tmp_path / "keys"
    clip = raw_clip(tmp_path / "sim-1.mcap", keys, "sim", anonymised="true")
    assert read_clip_info(clip, keys).region == "sim"
    names = ("edgert", mcapio.AUTH_RECORD, seal.SEAL_RECORD)
    same = rebuild(tmp_path / "same.mcap", clip, clip, names)  # re-written, nothing changed: still genuine
    assert read_clip_info(same, keys).region == "sim"

    def unblur(i: int, data: bytes) -> bytes:  # one pixel of frame 5 changed
        return data[:-1] + bytes([data[-1] ^ 0xFF]) if i == 4 else data
    edited = rebuild(tmp_path / "edited.mcap", clip, clip, names, edit=unblur)
    with pytest.raises(ClipError, match=r"edited.mcap: its messages are not the ones the vehicle sealed "
                                        r"\(8 message\(s\) here, 8 sealed; content hash differs\)"):
        read_clip_info(edited, keys)
    res = export([edited], "eu", tmp_path / "out", POLICY, AuditLog(tmp_path / "a.jsonl"), keys)
    assert not res[0].decision.allowed and "content was replaced or edited" in res[0].decision.reason
    # the seal's own numbers edited to match: its MAC fails
    with open(edited, "rb") as f:
        metas = {m.name: dict(m.metadata) for m in make_reader(f).iter_metadata()}
    forged = tmp_path / "forged.mcap"
    with open(forged, "wb") as out:
        w = Writer(out)
        w.start(profile="", library="edgert")
        for name in names:
            m = metas[name]
            if name == seal.SEAL_RECORD:
                c = seal.ContentHash()
                with open(edited, "rb") as f:
                    for _, ch, msg in make_reader(f).iter_messages():
                        c.update(ch.topic, msg.log_time, msg.publish_time, msg.data)
                m = {**m, "sha256": c.hexdigest()}
            w.add_metadata(name, m)
        w.finish()
    with pytest.raises(ClipError, match=r"its seal does not authenticate with the vehicle key"):
        read_clip_info(forged, keys)
    # a sealed clip encrypted by someone holding only the region key: decrypt checks the plaintext's seal
    crypto.keygen(keys, "sim")
    enc = crypto.encrypt_file(edited, crypto.load_key(keys, "sim"), "sim", {"region": "sim", "anonymised": "true"})
    out = tmp_path / "plain.mcap"
    assert cli.main(["fleet", "decrypt", str(enc), "--out", str(out), "--keys", str(keys),
                     "--audit", str(tmp_path / "d.jsonl")]) == 2
    assert "decrypted, but" in capsys.readouterr().err and not out.exists()
    assert [e["event"] for e in audit_entries(tmp_path / "d.jsonl")] == ["decrypt_refused"]


def test_a_clip_cut_off_by_a_crash_is_sealed_at_recovery_as_far_as_it_is_readable(tmp_path):
    """The recorder's writer killed mid-clip leaves an unsealed .partial: refused. At its next start the
    recorder (which holds the vehicle key and owns the 0700 folder) rewrites its readable part sealed,
    marked recovered: it then exports, still reads as truncated, and an edit to it is refused. A partial
    whose metadata this vehicle's key does not authenticate is not sealed."""
    from test_record import _frame_msg, frame_pixels
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir(mode=0o700)
    key = crypto.load_or_make_key(keys, crypto.VEHICLE)
    meta = {"region": "sim", "run_id": "run-3", "recorded_ns": str(NOW_NS - DAY_NS), "anonymised": "true"}
    w = mcapio.McapFile(rec / "sim-cut.mcap", meta, auth_key=key, chunk_size=1024)
    for i in range(1, 10):
        w.write(mcapio.RAW_TOPIC, NOW_NS + i, NOW_NS + i, _frame_msg(i, frame_pixels(i)), i)
    w.abandon()  # as a SIGKILL leaves it; and a power cut loses the tail the disk had not written
    w.tmp.write_bytes(w.tmp.read_bytes()[: w.tmp.stat().st_size * 2 // 3])
    with pytest.raises(ClipError, match=r"cut off \(.*\) before its content was sealed; the recorder seals"):
        read_clip_info(w.tmp, keys)
    readable = mcapio.inspect(w.tmp).messages
    assert 0 < readable < 9
    stranger = mcapio.McapFile(rec / "sim-other.mcap", meta, auth_key=os.urandom(32), chunk_size=1024)
    stranger.write(mcapio.RAW_TOPIC, NOW_NS, NOW_NS, _frame_msg(1, frame_pixels(1)), 1)
    stranger.abandon()
    found = {i.path.name: i for i in mcapio.recover_partials(rec, seal_key=key)}  # as the recorder's setup
    cut, other = rec / "sim-cut.truncated.mcap", rec / "sim-other.truncated.mcap"
    assert set(found) == {cut.name, other.name} and not list(rec.glob("*.partial"))
    assert "readable part is now sealed" in found[cut.name].error
    assert "not sealed: its metadata is not authenticated by this vehicle's key" in found[other.name].error
    info = mcapio.inspect(cut)
    assert not info.complete and "cut off by a crash" in info.error and info.messages == readable
    assert info.metadata[seal.SEAL_RECORD]["recovered"]
    ids = [mcapio.decode_raw_frame(m.data).frame_id for _, m in mcapio.iter_messages(cut)]
    assert ids == list(range(1, readable + 1))
    res = export([cut, other], "eu", tmp_path / "out", POLICY, AuditLog(tmp_path / "a.jsonl"), keys)
    assert [r.decision.allowed for r in res] == [True, False]
    assert "not sealed" in res[1].decision.reason or "another vehicle" in res[1].decision.reason
    edited = rebuild(tmp_path / "edited.truncated.mcap", cut, cut, ("edgert", mcapio.AUTH_RECORD, seal.SEAL_RECORD),
                     edit=lambda i, d: d[:-1] + b"\0" if i == 0 else d)
    with pytest.raises(ClipError, match="its messages are not the ones the vehicle sealed"):
        read_clip_info(edited, keys)


# -- point 6: export into a shared destination ------------------------------------------------
def test_export_follows_no_symlink_and_uses_no_predictable_temp_file(tmp_path):
    """Someone who can write the destination plants links at the names export would write (the
    old temp name was .NAME.PID.tmp, and the final name): the clip must not land behind them."""
    keys = tmp_path / "keys"
    clip = recorded_clip(tmp_path / "sim-1.mcap", keys, "sim")
    dest, loot = tmp_path / "shared", tmp_path / "attacker"
    dest.mkdir()
    loot.mkdir()
    os.symlink(loot / "via-temp", dest / f".{clip.name}.{os.getpid()}.tmp")
    res = export([clip], "eu", dest, POLICY, AuditLog(tmp_path / "a.jsonl"), keys)
    assert res[0].decision.allowed and (dest / clip.name).read_bytes() == clip.read_bytes()
    assert not (dest / clip.name).is_symlink() and stat.S_IMODE((dest / clip.name).stat().st_mode) == 0o600
    assert list(loot.iterdir()) == []  # nothing written through the planted link
    # a link at the final name (even a dangling one) is an existing file: refused, not followed
    clip2 = recorded_clip(tmp_path / "sim-2.mcap", keys, "sim")
    os.symlink(loot / "via-name", dest / clip2.name)
    res = export([clip2], "eu", dest, POLICY, AuditLog(tmp_path / "a.jsonl"), keys)
    assert not res[0].decision.allowed and "already exists" in res[0].decision.reason
    assert list(loot.iterdir()) == []
    # the destination itself a link: refused
    os.symlink(loot, tmp_path / "linked")
    res = export([clip2], "eu", tmp_path / "linked", POLICY, AuditLog(tmp_path / "a.jsonl"), keys)
    assert not res[0].decision.allowed and "is a symlink" in res[0].decision.reason
    assert list(loot.iterdir()) == []
    assert sorted(p.name for p in dest.iterdir() if not p.is_symlink()) == [clip.name]  # no temp file left


def test_the_audit_entry_is_written_before_the_copy_is_visible(tmp_path):
    """An audit log that cannot be written: the export fails and nothing appears at the destination."""
    keys = tmp_path / "keys"
    clip = recorded_clip(tmp_path / "sim-1.mcap", keys, "sim")
    (tmp_path / "not-a-dir").write_text("")
    broken = AuditLog(tmp_path / "not-a-dir" / "audit.jsonl")
    with pytest.raises(OSError):
        export([clip], "eu", tmp_path / "out", POLICY, broken, keys)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# -- point 9: a clip that cannot be encrypted ---------------------------------------------------
def test_a_clip_that_cannot_be_encrypted_is_quarantined_unreadable_with_its_reason(tmp_path, caplog):
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir(mode=0o700)
    crypto.keygen(keys, "us")
    _, on_closed = recorder_hooks(POLICY, "us", (48, 64, 3), keys)  # us: encrypt at rest
    ok = recorded_clip(rec / "us-1.mcap", keys, "us")
    assert on_closed(ok).name == "us-1.mcap.enc" and not ok.exists()
    (keys / "us.key").rename(tmp_path / "us.key.offline")  # the key store is gone (unmounted, deleted...)
    clip = recorded_clip(rec / "us-2.mcap", keys, "us")
    assert stat.S_IMODE(clip.stat().st_mode) & 0o044  # what the writer leaves: readable until encrypted
    with caplog.at_level(logging.WARNING, logger="edgert.fleet"), \
            pytest.raises(Quarantined, match=r"us-2.mcap: encryption failed and would fail again \(not retried\): "
                                             r"CryptoError: no key for region 'us'"):
        on_closed(clip)
    assert not clip.exists()  # no plaintext left under its name
    q = rec / "quarantine" / "us-2.mcap"
    assert stat.S_IMODE(q.stat().st_mode) == 0 and stat.S_IMODE(q.parent.stat().st_mode) == 0o700
    assert "no key for region 'us'" in (rec / "quarantine" / "us-2.mcap.reason").read_text()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # quarantined at once, logged once
    assert "quarantined" in caplog.records[0].getMessage()
    assert list(rec.glob("*.mcap")) == [] and list(rec.glob(".*")) == []  # no plaintext, no temp file beside


def test_a_deterministic_failure_is_quarantined_after_one_try_and_logged_once(tmp_path, caplog, monkeypatch):
    """A clip without authenticated metadata fails the same way on every try: no retries, no sleeps."""
    from edgert.runtime.fleet import export as export_mod

    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir(mode=0o700)
    crypto.keygen(keys, "us")
    _, on_closed = recorder_hooks(POLICY, "us", (48, 64, 3), keys)
    meta = {"region": "us", "run_id": "run-7", "recorded_ns": str(NOW_NS), "anonymised": "true"}
    f = mcapio.McapFile(rec / "us-noauth.mcap", meta)  # no vehicle key: no edgert.auth record
    f.write("/commands", NOW_NS, NOW_NS, b"{}")
    clip = f.close()
    tries: list[Path] = []
    real = export_mod.encrypt_clip
    monkeypatch.setattr(export_mod, "encrypt_clip", lambda c, k, **kw: (tries.append(c), real(c, k, **kw))[1])
    with caplog.at_level(logging.WARNING, logger="edgert.fleet"), \
            pytest.raises(Quarantined, match=r"not retried\): ClipError: .*its metadata is not authenticated"):
        on_closed(clip)
    assert tries == [clip]  # one try
    assert [r.levelno for r in caplog.records] == [logging.ERROR] and "not authenticated" in caplog.text
    assert "not authenticated" in (rec / "quarantine" / "us-noauth.mcap.reason").read_text()
    assert stat.S_IMODE((rec / "quarantine" / "us-noauth.mcap").stat().st_mode) == 0 and not clip.exists()


def test_an_io_error_is_retried_and_quarantined_only_if_it_persists(tmp_path, caplog, monkeypatch):
    """A full disk (injected: one cannot be made here) may clear: the clip is tried again, and only
    quarantined after the last try."""
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    rec.mkdir(mode=0o700)
    crypto.keygen(keys, "us")
    _, on_closed = recorder_hooks(POLICY, "us", (48, 64, 3), keys)
    real, fails = crypto.encrypt_file, [1]

    def disk_full_then_ok(*args, **kw):  # type: ignore[no-untyped-def]
        if fails[0] > 0:
            fails[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(crypto, "encrypt_file", disk_full_then_ok)
    with caplog.at_level(logging.WARNING, logger="edgert.fleet"):
        out = on_closed(recorded_clip(rec / "us-1.mcap", keys, "us"))
    assert out.name == "us-1.mcap.enc" and read_clip_info(out, keys).region == "us"
    assert [r.getMessage() for r in caplog.records if "try 1 of 3" in r.getMessage()] != []
    assert len(caplog.records) == 1 and not (rec / "quarantine").exists()
    caplog.clear()
    fails[0] = 99
    clip = recorded_clip(rec / "us-2.mcap", keys, "us")
    with caplog.at_level(logging.WARNING, logger="edgert.fleet"), \
            pytest.raises(Quarantined, match=r"us-2.mcap: encryption failed 3 times; last error OSError: .*No space"):
        on_closed(clip)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3 + [logging.ERROR]
    assert stat.S_IMODE((rec / "quarantine" / "us-2.mcap").stat().st_mode) == 0 and not clip.exists()
