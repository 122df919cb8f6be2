"""Residency policy: strict parsing, transfer decisions, `edgert fleet export|prune` refusing what it forbids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mcap.writer import Writer

from edgert.runtime import cli
from edgert.runtime.fleet import crypto, mcapio, seal
from edgert.runtime.fleet.audit import verify
from edgert.runtime.fleet.export import ClipError, read_clip_info
from edgert.runtime.fleet.policy import Policy, PolicyError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "configs" / "fleet-policy.toml"
DAY_NS = 86_400 * 10**9
NOW_NS = 1_800_000_000 * 10**9  # 2027-01-15, fixed so retention is deterministic


def make_clip(path: Path, region: str, recorded_ns: int | None = NOW_NS - DAY_NS, anonymised: bool | None = True,
              run_id: str = "run-1", log_ns: int = 0, keys: Path | None = None) -> Path:
    """A real MCAP clip as the recorder writes it: the 'edgert' metadata first, authenticated with the
    vehicle key of KEYS (default: the test's keys folder, the one `_fleet` passes), then JSON messages,
    then the seal binding them to the metadata."""
    keys = keys or path.parent / "keys"
    meta = {"region": region, "run_id": run_id}
    if recorded_ns is not None:
        meta["recorded_ns"] = str(recorded_ns)
    if anonymised is not None:
        meta["anonymised"] = str(anonymised).lower()
    content = seal.ContentHash()
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="edgert-test")
        w.add_metadata("edgert", meta)
        key = crypto.load_or_make_key(keys, crypto.VEHICLE)
        w.add_metadata(mcapio.AUTH_RECORD, mcapio.auth_record(key, meta))
        schema = w.register_schema(name="cmd", encoding="jsonschema", data=b"{}")
        ch = w.register_channel(topic="commands", message_encoding="json", schema_id=schema)
        for i in range(200):
            t = log_ns + i * 10**6
            data = json.dumps({"steer": 0.001 * i}).encode()
            w.add_message(ch, log_time=t, publish_time=t, data=data)
            content.update("commands", t, t, data)
        w.add_metadata(seal.SEAL_RECORD, seal.seal_record(key, crypto.key_id(key), meta, content))  # as at close
        w.finish()
    return path


def encrypted_clip(tmp: Path, name: str, region: str, keys: Path, **kw) -> Path:  # type: ignore[no-untyped-def]
    plain = make_clip(tmp / name, region, keys=keys, **kw)
    if not (keys / f"{region}.key").exists():
        crypto.keygen(keys, region)
    info = read_clip_info(plain, keys)
    meta = {"region": region, "run_id": info.run_id}
    if info.recorded_ns is not None:
        meta["recorded_ns"] = str(info.recorded_ns)
    if info.anonymised is not None:
        meta["anonymised"] = str(info.anonymised).lower()
    out = crypto.encrypt_file(plain, crypto.load_key(keys, region), region, meta)
    plain.unlink()
    return out


def audit_entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shipped_policy_says_what_the_issue_asks():
    p = Policy.load(SHIPPED)
    assert set(p.regions) == {"eu", "cn", "us", "sim"}
    eu, cn = p.region("eu"), p.region("cn")
    assert eu.anonymise and eu.encrypt and cn.anonymise and cn.encrypt
    assert cn.transfer_to == {} and cn.store_in == ("cn",)
    d = p.check_transfer("eu", "us")
    assert d.allowed and d.approval and d.approval in d.reason
    assert p.check_transfer("eu", "eu").allowed and p.check_transfer("sim", "cn").allowed
    d = p.check_transfer("cn", "eu")
    assert not d.allowed and "cn data may be stored only in cn" in d.reason and "[regions.cn.transfer_to]" in d.reason
    d = p.check_transfer("mars", "eu")
    assert not d.allowed and "'mars' is not in the policy" in d.reason
    with pytest.raises(PolicyError, match=r"region 'mars' is not in the policy .*add \[regions.mars\]"):
        p.region("mars")


GOOD = 'store_in = ["a"]\nretention_days = 7\nanonymise = false\nencrypt = false\n'


@pytest.mark.parametrize("text, error", [
    ("[regions.a]\n" + GOOD + "retention_dayz = 3\n", r"unknown key 'regions.a.retention_dayz' \(did you mean 'retention_days'\?\)"),
    ("[regions.a]\nstore_in = ['a']\n", r"\[regions.a\]: missing retention_days, anonymise, encrypt"),
    ("[regions.a]\n" + GOOD.replace("7", "0"), r"regions.a.retention_days: expected a number of days > 0"),
    ("[regions.a]\n" + GOOD.replace("false\ne", "'yes'\ne"), r"regions.a.anonymise: expected true or false"),
    ("[regions.a]\n" + GOOD + "[regions.a.transfer_to]\nb = ''\n", r"transfer_to.b: expected the approval's reference"),
    ("[regions.a]\n" + GOOD + "[regions.a.transfer_to]\nb = 'ref-1'\n", r"destination 'b' is not a region of this policy; add \[regions.b\]"),
    ("[regions.A]\n" + GOOD, r"regions: 'A' is not a region name"),
    ("[regions.vehicle]\n" + GOOD.replace('"a"', '"vehicle"'), r"'vehicle' names a vehicle key file \(keys/vehicle.key\)"),
    ("[region.a]\n" + GOOD, r"unknown key 'region' \(did you mean 'regions'\?\)"),
    ("", r"no \[regions.NAME\] tables"),
    ("[regions.a\n", r"not valid TOML"),
])
def test_bad_policy_is_refused_with_the_key_and_the_fix(tmp_path, text, error):
    p = tmp_path / "policy.toml"
    p.write_text(text)
    with pytest.raises(PolicyError, match=error):
        Policy.load(p)


def test_missing_policy_file_names_the_example(tmp_path):
    with pytest.raises(PolicyError, match=r"not found; pass --policy FILE .*fleet-policy.toml"):
        Policy.load(tmp_path / "nope.toml")


def _fleet(tmp_path: Path, *args: str) -> int:
    return cli.main(["fleet", *args, "--audit", str(tmp_path / "audit.jsonl"), "--keys", str(tmp_path / "keys")])


def test_forbidden_export_is_refused_and_logged_allowed_one_copied(tmp_path, capsys):
    keys = tmp_path / "keys"
    sim = make_clip(tmp_path / "sim-1.mcap", "sim")
    cn = encrypted_clip(tmp_path, "cn-1.mcap", "cn", keys)
    dest = tmp_path / "out"
    code = _fleet(tmp_path, "export", str(sim), str(cn), "--to", "eu", "--dest", str(dest), "--policy", str(SHIPPED))
    assert code == 1  # something was refused
    err = capsys.readouterr().err
    assert re.search(r"REFUSED .*cn-1.mcap.enc: cn data may be stored only in cn and has no approved transfer to eu", err)
    assert sorted(p.name for p in dest.iterdir()) == ["sim-1.mcap"]
    assert (dest / "sim-1.mcap").read_bytes() == sim.read_bytes()
    log = audit_entries(tmp_path / "audit.jsonl")
    assert [e["event"] for e in log] == ["export", "export_refused"]
    assert log[0]["from"] == "sim" and log[0]["to"] == "eu" and log[0]["approval"] == "simulated data: not personal data"
    assert log[1]["clip"] == str(cn) and "no approved transfer" in log[1]["reason"]
    assert verify(tmp_path / "audit.jsonl").ok


def test_export_enforces_anonymisation_and_encryption_duties(tmp_path, capsys):
    keys = tmp_path / "keys"
    plain_eu = make_clip(tmp_path / "eu-plain.mcap", "eu")
    raw_eu = encrypted_clip(tmp_path, "eu-raw.mcap", "eu", keys, anonymised=False)
    unmarked = encrypted_clip(tmp_path, "eu-unmarked.mcap", "eu", keys, anonymised=None)
    good = encrypted_clip(tmp_path, "eu-good.mcap", "eu", keys)
    code = _fleet(tmp_path, "export", str(plain_eu), str(raw_eu), str(unmarked), str(good), "--to", "us",
                  "--dest", str(tmp_path / "us"), "--policy", str(SHIPPED))
    assert code == 1
    err = capsys.readouterr().err
    assert "eu-plain.mcap: eu requires clips encrypted at rest and this one is plaintext; encrypt it first" in err
    assert "eu-raw.mcap.enc: eu requires anonymised frames and this clip is not anonymised" in err
    assert "eu-unmarked.mcap.enc: eu requires anonymised frames and this clip is not marked anonymised" in err
    assert [p.name for p in (tmp_path / "us").iterdir()] == ["eu-good.mcap.enc"]
    log = audit_entries(tmp_path / "audit.jsonl")
    assert [e["event"] for e in log] == ["export_refused"] * 3 + ["export"]
    assert log[-1]["approval"].startswith("EXAMPLE-EU-US-SCC") and len(log[-1]["sha256"]) == 64


def test_unreadable_clip_is_refused_not_guessed(tmp_path, capsys):
    bad = tmp_path / "junk.mcap"
    bad.write_bytes(b"not an mcap file at all")
    nometa = tmp_path / "nometa.mcap"
    with open(nometa, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="other")
        w.finish()
    assert _fleet(tmp_path, "export", str(bad), str(nometa), "--to", "sim", "--dest", str(tmp_path / "o"),
                  "--policy", str(SHIPPED)) == 1
    err = capsys.readouterr().err
    assert "junk.mcap: not a readable MCAP file" in err
    assert "nometa.mcap: no 'edgert' metadata record, so its region of collection is unknown" in err
    assert [e["event"] for e in audit_entries(tmp_path / "audit.jsonl")] == ["export_refused"] * 2


def test_prune_deletes_past_retention_keeps_the_rest_and_the_unknown(tmp_path, capsys):
    keys, rec = tmp_path / "keys", tmp_path / "rec"
    (rec / "day1").mkdir(parents=True)
    old_sim = make_clip(rec / "day1" / "old-sim.mcap", "sim", recorded_ns=NOW_NS - 8 * DAY_NS, keys=keys)  # 7 d
    new_sim = make_clip(rec / "new-sim.mcap", "sim", recorded_ns=NOW_NS - 6 * DAY_NS, keys=keys)
    old_eu = encrypted_clip(rec, "old-eu.mcap", "eu", keys, recorded_ns=NOW_NS - 31 * DAY_NS)  # retention 30 d
    new_us = encrypted_clip(rec, "new-us.mcap", "us", keys, recorded_ns=NOW_NS - 300 * DAY_NS)  # retention 365 d
    ageless = make_clip(rec / "ageless.mcap", "sim", recorded_ns=None, keys=keys)
    (rec / "notes.txt").write_text("not a clip")
    code = _fleet(tmp_path, "prune", str(rec), "--now", f"@{NOW_NS // 10**9}", "--policy", str(SHIPPED))
    assert code == 1  # one clip could not be decided
    assert not old_sim.exists() and not old_eu.exists()
    assert new_sim.exists() and new_us.exists() and ageless.exists() and (rec / "notes.txt").exists()
    assert "no recorded_ns in its metadata, so its age is unknown; kept" in capsys.readouterr().err
    log = audit_entries(tmp_path / "audit.jsonl")
    deletes = {Path(e["clip"]).name: e for e in log if e["event"] == "prune_delete"}
    assert set(deletes) == {"old-sim.mcap", "old-eu.mcap.enc"}
    assert deletes["old-eu.mcap.enc"]["retention_days"] == 30 and deletes["old-eu.mcap.enc"]["age_days"] == 31
    assert [e["event"] for e in log].count("prune_error") == 1
    assert log[-1]["event"] == "prune" and log[-1]["deleted"] == 2 and log[-1]["kept"] == 3
    assert verify(tmp_path / "audit.jsonl").ok


def test_prune_now_must_be_a_time(tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    assert _fleet(tmp_path, "prune", str(tmp_path / "rec"), "--now", "yesterday", "--policy", str(SHIPPED)) == 2
    assert "--now 'yesterday': give an ISO date/time" in capsys.readouterr().err


def test_region_and_age_from_a_cut_off_clip(tmp_path):
    """A clip cut off by a crash has no seal: refused as it is; once the recorder (holding the vehicle key)
    has sealed its readable part at recovery, it says, authenticated, where and when it was collected,
    so the policy still applies to it. A message's log time is not authenticated: a clip without
    recorded_ns has no known age."""
    keys = tmp_path / "keys"
    key = crypto.load_or_make_key(keys, crypto.VEHICLE)
    w = mcapio.McapFile(tmp_path / "cut.mcap", {"region": "cn", "run_id": "r", "recorded_ns": str(NOW_NS - 3 * DAY_NS)},
                        chunk_size=512, auth_key=key)  # the recorder's writer, killed mid-clip
    for i in range(200):
        w.write("/commands", i, i, json.dumps({"steer": 0.001 * i}).encode())
    w.abandon()
    with pytest.raises(ClipError, match=r"cut.mcap.partial: cut off \(.*\) before its content was sealed"):
        read_clip_info(w.tmp, keys)
    (rec,) = mcapio.recover_partials(tmp_path, seal_key=key)  # what the recorder does at its next start
    cut = tmp_path / "cut.truncated.mcap"
    assert rec.path == cut and "readable part is now sealed" in rec.error
    info = read_clip_info(cut, keys)
    assert info.region == "cn" and info.recorded_ns == NOW_NS - 3 * DAY_NS
    ageless = make_clip(tmp_path / "b.mcap", "cn", recorded_ns=None, log_ns=NOW_NS - 3 * DAY_NS)
    assert read_clip_info(ageless, keys).recorded_ns is None
    d = Policy.load(SHIPPED)
    from edgert.runtime.fleet.export import decide_export
    assert not decide_export(info, "eu", d).allowed
