"""Clips encrypted at rest: AES-256-GCM chunks round-trip; any change, cut or reordering is refused."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest
from test_fleet_policy import make_clip

from edgert.runtime import cli
from edgert.runtime.fleet import crypto
from edgert.runtime.fleet.crypto import CryptoError
from edgert.runtime.fleet.export import read_clip_info

CHUNK = 1000
HEAD = struct.Struct("<12sBI")


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


def _enc(tmp_path: Path, key: bytes, data: bytes, region: str = "eu") -> Path:
    src = tmp_path / "clip.mcap"
    src.write_bytes(data)
    return crypto.encrypt_file(src, key, region, {"run_id": "r1"}, chunk_size=CHUNK)


def _chunks(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """Where the chunks start and end: (offset of the first chunk, [(start, end), ...])."""
    raw = path.read_bytes()
    pos = 8 + 4 + struct.unpack("<I", raw[8:12])[0]
    first, spans = pos, []
    while pos < len(raw):
        _, _, n = HEAD.unpack(raw[pos:pos + HEAD.size])
        spans.append((pos, pos + HEAD.size + n))
        pos += HEAD.size + n
    return first, spans


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_in_chunks(tmp_path, key, size):
    data = os.urandom(size)
    enc = _enc(tmp_path, key, data)
    assert enc.name == "clip.mcap.enc" and stat.S_IMODE(enc.stat().st_mode) == 0o600
    assert size < 64 or data[:64] not in enc.read_bytes()  # no plaintext on disk
    assert len(_chunks(enc)[1]) == max(1, -(-size // CHUNK))
    assert crypto.decrypt_file(enc, key) == data
    out = tmp_path / "plain"
    crypto.decrypt_file(enc, key, out)
    assert out.read_bytes() == data and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_header_is_readable_without_the_key(tmp_path, key):
    h = crypto.read_header(_enc(tmp_path, key, b"x" * 10))
    assert h["region"] == "eu" and h["meta"] == {"run_id": "r1"} and h["key_id"] == crypto.key_id(key)
    assert h["alg"] == "AES-256-GCM"


def test_wrong_key_is_named(tmp_path, key):
    enc = _enc(tmp_path, key, b"secret" * 100)
    with pytest.raises(CryptoError, match=r"encrypted with key [0-9a-f]{16} \(region 'eu'\), not with the key given"):
        crypto.decrypt_file(enc, os.urandom(32))


def _tamper(enc: Path, how: str) -> None:
    raw = bytearray(enc.read_bytes())
    first, spans = _chunks(enc)
    if how == "flip_ciphertext":
        raw[spans[1][0] + HEAD.size + 5] ^= 0x01
    elif how == "flip_final_flag":
        raw[spans[-1][0] + 12] = 0
    elif how == "header_region":  # same length, so only authentication can tell
        i = raw.index(b'"region": "eu"')
        raw[i:i + 14] = b'"region": "us"'
    elif how == "swap_chunks":
        a, b = spans[0], spans[1]
        raw[a[0]:b[1]] = raw[b[0]:b[1]] + raw[a[0]:a[1]]
    elif how == "drop_last_chunk":
        del raw[spans[-1][0]:]
    elif how == "cut_inside_chunk":
        del raw[spans[-1][1] - 7:]
    elif how == "append":
        raw += raw[spans[0][0]:spans[0][1]]
    elif how == "magic":
        raw[0:8] = b"NOTMAGIC"
    enc.write_bytes(bytes(raw))


@pytest.mark.parametrize("how, error", [
    ("flip_ciphertext", r"chunk 1 fails authentication"),
    ("flip_final_flag", r"chunk 3 fails authentication"),
    ("header_region", r"chunk 0 fails authentication: the file \(or its header\) was altered"),
    ("swap_chunks", r"chunk 0 fails authentication"),
    ("drop_last_chunk", r"truncated: it ends after chunk 2 without the final chunk"),
    ("cut_inside_chunk", r"truncated or damaged inside chunk 3"),
    ("append", r"data after the final chunk 3: the file was appended to"),
    ("magic", r"not an edgert encrypted file"),
])
def test_any_change_or_cut_is_refused(tmp_path, key, how, error):
    enc = _enc(tmp_path, key, os.urandom(3 * CHUNK + 100))  # 4 chunks
    _tamper(enc, how)
    with pytest.raises(CryptoError, match=error):
        crypto.decrypt_file(enc, key)


def test_keys_are_private_and_never_overwritten(tmp_path):
    keys = tmp_path / "keys"
    path = crypto.keygen(keys, "eu")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert len(crypto.load_key(keys, "eu")) == 32
    with pytest.raises(CryptoError, match="already exists; a key is never overwritten"):
        crypto.keygen(keys, "eu")
    path.chmod(0o644)
    with pytest.raises(CryptoError, match=r"readable by others \(mode 644\); `chmod 600"):
        crypto.load_key(keys, "eu")
    (keys / "us.key").write_bytes(b"short")
    (keys / "us.key").chmod(0o600)
    with pytest.raises(CryptoError, match=r"holds 5 bytes, not 32; restore it from its backup"):
        crypto.load_key(keys, "us")
    with pytest.raises(CryptoError, match=r"no key for region 'cn' .*`edgert fleet keygen cn"):
        crypto.load_key(keys, "cn")


def test_cli_encrypts_with_the_region_key_and_decrypts_back(tmp_path, capsys):
    keys, audit = tmp_path / "keys", tmp_path / "audit.jsonl"
    common = ["--keys", str(keys), "--audit", str(audit)]
    clip = make_clip(tmp_path / "eu-1.mcap", "eu", recorded_ns=123, run_id="run-9")
    original = clip.read_bytes()
    assert cli.main(["fleet", "encrypt", str(clip), *common]) == 2  # no eu key yet
    assert "no key for region 'eu'" in capsys.readouterr().err and clip.exists()
    assert cli.main(["fleet", "keygen", "eu", "--keys", str(keys)]) == 0
    assert cli.main(["fleet", "encrypt", str(clip), *common]) == 0
    enc = tmp_path / "eu-1.mcap.enc"
    assert not clip.exists() and enc.exists()  # the plaintext is gone
    info = read_clip_info(enc, keys)  # the policy's view, authenticated with the eu key
    assert (info.region, info.recorded_ns, info.run_id, info.encrypted, info.anonymised) == ("eu", 123, "run-9", True, True)
    out = tmp_path / "back.mcap"
    assert cli.main(["fleet", "decrypt", str(enc), "--out", str(out), *common]) == 0
    assert out.read_bytes() == original
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["encrypt", "decrypt"]


def test_recorder_hooks_follow_the_region_policy(tmp_path):
    from edgert.runtime.fleet.anonymise import AnonymiseError
    from edgert.runtime.fleet.export import recorder_hooks
    from edgert.runtime.fleet.policy import Policy

    policy = Policy.load(Path(__file__).resolve().parent.parent / "configs" / "fleet-policy.toml")
    keys = tmp_path / "keys"
    assert recorder_hooks(policy, "sim", (48, 64, 3), keys) == (None, None)
    with pytest.raises(CryptoError, match="no key for region 'us'"):
        recorder_hooks(policy, "us", (48, 64, 3), keys)  # refused at start-up, not at the first clip
    crypto.keygen(keys, "us")
    frame_filter, on_closed = recorder_hooks(policy, "us", (48, 64, 3), keys)
    assert frame_filter is None  # us: encrypt, no anonymisation
    clip = make_clip(tmp_path / "us-1.mcap", "us", recorded_ns=5)
    out = on_closed(clip)
    assert out.name == "us-1.mcap.enc" and not clip.exists() and read_clip_info(out, keys).recorded_ns == 5
    crypto.keygen(keys, "eu")
    if not hasattr(__import__("cv2"), "CascadeClassifier"):  # OpenCV 5: no face detector without a model
        with pytest.raises(AnonymiseError, match="face anonymisation needs a detector"):
            recorder_hooks(policy, "eu", (48, 64, 3), keys)
