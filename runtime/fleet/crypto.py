"""Recordings encrypted at rest: AES-256-GCM in chunks, one key per region of collection.

File layout (`CLIP.mcap.enc`):

    MAGIC (8 bytes "EDRTENC1") | header length (u32 LE) | header (JSON, readable without the key)
    then chunks: nonce (12) | final flag (u8) | ciphertext length (u32 LE) | ciphertext + 16-byte tag

The header holds the region, the key id and the recording's metadata, so export and prune
can apply the residency policy without the key. Each chunk's associated data binds it to that
header (its SHA-256), its index and a final-chunk flag: an altered header, a reordered,
dropped or altered chunk and a truncated file all fail decryption, by name. Nonces are random
96-bit per chunk (a key may encrypt ~2^32 chunks, 4 PiB at 1 MiB, before that is a concern).
The header is readable without the key but trusted only once chunk 0 decrypts
(`authenticated_header`): export, prune and replay decide on that, never on the bare header.

Keys are 32 random bytes in `KEYS_DIR/<name>.key`, mode 0600 in a 0700 folder, read and made
by runtime/keyfile.py: a link, another user's file, a key readable by others or in a folder
others can write is refused, and a new key appears complete or not at all. `<region>.key`
encrypts a region's clips; `vehicle.key` (made at the recorder's first start) authenticates
plain clips' metadata (`meta_mac`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edgert.runtime import keyfile
from edgert.runtime.errors import EdgertError

MAGIC = b"EDRTENC1"
SUFFIX = ".enc"
CHUNK = 1 << 20
_MAX_HEADER = 1 << 20
_U32 = struct.Struct("<I")
_CHUNK_HEAD = struct.Struct("<12sBI")  # nonce, final flag, ciphertext length
_AAD = struct.Struct("<32sQB")  # header sha256, chunk index, final flag
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # a region (runtime/fleet/policy.py) or "vehicle"/"audit"
VEHICLE = "vehicle"  # KEYS_DIR/vehicle.key: authenticates plain clips' metadata (meta_mac)
_META_LABEL = b"edgert-clip-meta-v1\0"  # domain separation: this MAC is never valid as another one


class CryptoError(EdgertError, ValueError):
    """A key or an encrypted file is missing, wrong, altered or truncated."""


def key_id(key: bytes) -> str:
    """A short public name for a key (not secret: it tells which key a file needs)."""
    return hashlib.sha256(b"edgert-key-id" + key).hexdigest()[:16]


def _path(keys_dir: str | Path, name: str) -> Path:
    if not _NAME.match(name):
        raise CryptoError(f"{name!r} is not a key name (a region: lower-case letters, digits, '-', '_')")
    return Path(keys_dir) / f"{name}.key"


def _what(name: str) -> str:
    return {VEHICLE: "vehicle key", "audit": "audit key"}.get(name, f"key for region {name!r}")


def keygen(keys_dir: str | Path, name: str) -> Path:
    """A new random 32-byte key at KEYS_DIR/NAME.key (0600, runtime/keyfile.py); never overwrites one."""
    path = _path(keys_dir, name)
    try:
        keyfile.create(path, secrets.token_bytes(32), _what(name))
    except FileExistsError:
        raise CryptoError(f"{path} already exists; a key is never overwritten (files encrypted with it would be "
                          "lost). Move it away first if you really mean to replace it") from None
    except keyfile.KeyFileError as e:
        raise CryptoError(str(e)) from None
    return path


def load_key(keys_dir: str | Path, name: str) -> bytes:
    """The key KEYS_DIR/NAME.key, refused unless runtime/keyfile.py can trust it (a plain 32-byte
    file of this user, mode 0600, in folders nobody else can write)."""
    path = _path(keys_dir, name)
    try:
        return keyfile.load(path, 32, _what(name))
    except FileNotFoundError:
        gen = "--vehicle" if name == VEHICLE else name
        raise CryptoError(f"no {_what(name)} at {path}; `edgert fleet keygen {gen} --keys {keys_dir}` makes one "
                          "(or copy the key that wrote the clips there)") from None
    except keyfile.KeyFileError as e:
        raise CryptoError(str(e)) from None


def load_or_make_key(keys_dir: str | Path, name: str) -> bytes:
    """KEYS_DIR/NAME.key, made first if there is none yet (like an SSH host key: the vehicle key)."""
    path = _path(keys_dir, name)
    try:
        return keyfile.load_or_create(path, 32, _what(name))
    except keyfile.KeyFileError as e:
        raise CryptoError(str(e)) from None


def meta_mac(key: bytes, meta: dict[str, str]) -> str:
    """HMAC-SHA-256 of a clip's metadata (canonical JSON): what authenticates a plain clip's `edgert` record."""
    data = json.dumps({str(k): str(v) for k, v in meta.items()}, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, _META_LABEL + data, hashlib.sha256).hexdigest()


def check_meta_mac(key: bytes, meta: dict[str, str], mac: str) -> bool:
    return hmac.compare_digest(meta_mac(key, meta), str(mac))


def private_temp(dst: Path) -> tuple[int, Path]:
    """A new 0600 file beside DST with an unpredictable name, never a symlink followed: (fd, path)."""
    while True:
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), tmp
        except FileExistsError:
            continue


def _aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return _AAD.pack(header_hash, index, int(final))


def encrypt_file(path: str | Path, key: bytes, region: str, meta: dict[str, Any] | None = None,
                 out: str | Path | None = None, chunk_size: int = CHUNK) -> Path:
    """Encrypt PATH to OUT (default PATH.enc, 0600, written atomically); returns OUT.

    The plaintext file is left in place: the caller removes it once OUT is safely written.
    """
    src = Path(path)
    dst = Path(out) if out is not None else src.with_name(src.name + SUFFIX)
    if len(key) != 32:
        raise CryptoError(f"AES-256 needs a 32-byte key, got {len(key)} bytes")
    header = json.dumps({"alg": "AES-256-GCM", "chunk": chunk_size, "region": region, "key_id": key_id(key),
                         "meta": meta or {}}, sort_keys=True).encode()
    hh = hashlib.sha256(header).digest()
    aes = AESGCM(key)
    fd, tmp = private_temp(dst)
    try:
        with os.fdopen(fd, "wb") as w, open(src, "rb") as r:
            w.write(MAGIC + _U32.pack(len(header)) + header)
            index, chunk = 0, r.read(chunk_size)
            while True:
                nxt = r.read(chunk_size) if chunk else b""
                final = not nxt
                nonce = os.urandom(12)
                ct = aes.encrypt(nonce, chunk, _aad(hh, index, final))
                w.write(_CHUNK_HEAD.pack(nonce, int(final), len(ct)) + ct)
                if final:
                    break
                index, chunk = index + 1, nxt
            w.flush()
            os.fsync(w.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _read_header(f: BinaryIO, path: Path) -> tuple[dict[str, Any], bytes]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise CryptoError(f"{path}: not an edgert encrypted file (no {MAGIC.decode()} magic)")
    raw_len = f.read(4)
    if len(raw_len) != 4 or not 0 < _U32.unpack(raw_len)[0] <= _MAX_HEADER:
        raise CryptoError(f"{path}: header length is damaged")
    header = f.read(_U32.unpack(raw_len)[0])
    try:
        h = json.loads(header)
        if not isinstance(h, dict) or not isinstance(h.get("region"), str):
            raise ValueError("no region")
    except ValueError as e:
        raise CryptoError(f"{path}: header is damaged ({e})") from None
    return h, header


def read_header(path: str | Path) -> dict[str, Any]:
    """The cleartext header (region, key_id, meta): no key needed, and NOT authenticated.

    For display only (`edgert record list`); decisions use `authenticated_header`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _read_header(f, path)[0]


def _open_header(f: BinaryIO, path: Path, key: bytes) -> tuple[dict[str, Any], bytes]:
    h, header = _read_header(f, path)
    if h.get("key_id") != key_id(key):
        raise CryptoError(f"{path}: encrypted with key {h.get('key_id')} (region {h['region']!r}), not with "
                          f"the key given ({key_id(key)}); use that region's key (a header whose region or key "
                          "was edited names the wrong one: such a file is refused)")
    return h, hashlib.sha256(header).digest()


def authenticated_header(f: BinaryIO, path: str | Path, keys_dir: str | Path) -> dict[str, Any]:
    """The header of the encrypted file open as F, once its region's key has authenticated it.

    Decrypting chunk 0 proves the header (its SHA-256 is in every chunk's associated data) is
    the one written with that key: an edited region, key id or metadata is refused here, so a
    clip cannot be re-labelled into another region or retention by editing its cleartext.
    """
    path = Path(path)
    f.seek(0)
    h, _ = _read_header(f, path)
    key = load_key(keys_dir, h["region"])
    f.seek(0)
    for _ in _chunks(f, path, key, limit=1):
        pass
    return h


def _chunks(f: BinaryIO, path: Path, key: bytes, limit: int | None = None) -> Iterator[bytes]:
    """Yield the plaintext chunks of the file open as F (at its start), each authenticated."""
    _, hh = _open_header(f, path, key)
    aes = AESGCM(key)
    index, final = 0, 0
    while not final and (limit is None or index < limit):
        head = f.read(_CHUNK_HEAD.size)
        if not head:
            raise CryptoError(f"{path}: truncated: it ends after chunk {index - 1} without the final chunk")
        if len(head) != _CHUNK_HEAD.size:
            raise CryptoError(f"{path}: truncated inside chunk {index}")
        nonce, final, n = _CHUNK_HEAD.unpack(head)
        ct = f.read(n)
        if len(ct) != n or final > 1:
            raise CryptoError(f"{path}: truncated or damaged inside chunk {index}")
        try:  # the flag is authenticated too: flipping it fails here like any other change
            yield aes.decrypt(nonce, ct, _aad(hh, index, bool(final)))
        except InvalidTag:
            raise CryptoError(f"{path}: chunk {index} fails authentication: the file (or its header) was "
                              "altered, or chunks were reordered or cut") from None
        index += 1
    if limit is None and f.read(1):
        raise CryptoError(f"{path}: data after the final chunk {index - 1}: the file was appended to")


def decrypt_file(path: str | Path, key: bytes, out: str | Path | None = None) -> bytes:
    """The plaintext of PATH (also written to OUT if given); CryptoError if anything was altered."""
    path = Path(path)
    with open(path, "rb") as f:
        data = b"".join(_chunks(f, path, key))
    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as w:
            w.write(data)
    return data
