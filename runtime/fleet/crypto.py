"""Recordings encrypted at rest: AES-256-GCM in chunks, one key per region of collection.

File layout (`CLIP.mcap.enc`):

    MAGIC (8 bytes "EDRTENC1") | header length (u32 LE) | header (JSON, readable without the key)
    then chunks: nonce (12) | final flag (u8) | ciphertext length (u32 LE) | ciphertext + 16-byte tag

The header holds the region, the key id and the recording's metadata, so export and prune
can apply the residency policy without the key. Each chunk's associated data binds it to that
header (its SHA-256), its index and a final-chunk flag: an altered header, a reordered,
dropped or altered chunk and a truncated file all fail decryption, by name. Nonces are random
96-bit per chunk (a key may encrypt ~2^32 chunks, 4 PiB at 1 MiB, before that is a concern).

Keys are 32 random bytes in `KEYS_DIR/<region>.key`, mode 0600 in a 0700 folder; a key file
readable by others is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"EDRTENC1"
SUFFIX = ".enc"
CHUNK = 1 << 20
_MAX_HEADER = 1 << 20
_U32 = struct.Struct("<I")
_CHUNK_HEAD = struct.Struct("<12sBI")  # nonce, final flag, ciphertext length
_AAD = struct.Struct("<32sQB")  # header sha256, chunk index, final flag


class CryptoError(ValueError):
    """A key or an encrypted file is missing, wrong, altered or truncated."""


def key_id(key: bytes) -> str:
    """A short public name for a key (not secret: it tells which key a file needs)."""
    return hashlib.sha256(b"edgert-key-id" + key).hexdigest()[:16]


def keygen(keys_dir: str | Path, name: str) -> Path:
    """A new random 32-byte key at KEYS_DIR/NAME.key (0600); never overwrites one."""
    d = Path(keys_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / f"{name}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CryptoError(f"{path} already exists; a key is never overwritten (files encrypted with it would be "
                          "lost). Move it away first if you really mean to replace it") from None
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path


def load_key(keys_dir: str | Path, name: str) -> bytes:
    """The key KEYS_DIR/NAME.key, refused if it is not 32 bytes or readable by group/others."""
    path = Path(keys_dir) / f"{name}.key"
    try:
        st = path.stat()
        key = path.read_bytes()
    except FileNotFoundError:
        raise CryptoError(f"no key for region {name!r} at {path}; `edgert fleet keygen {name} --keys "
                          f"{keys_dir}` makes one (or copy the region's key there)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CryptoError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); `chmod 600 {path}`")
    if len(key) != 32:
        raise CryptoError(f"{path} holds {len(key)} bytes, not a 32-byte AES-256 key; restore it")
    return key


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
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
    """The cleartext header (region, key_id, meta): no key needed, but not yet authenticated.

    Decryption authenticates it; policy decisions made on it before that can at worst refuse
    or misfile ciphertext that nobody without the key can read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _read_header(f, path)[0]


def decrypt_file(path: str | Path, key: bytes, out: str | Path | None = None) -> bytes:
    """The plaintext of PATH (also written to OUT if given); CryptoError if anything was altered."""
    path = Path(path)
    parts = []
    with open(path, "rb") as f:
        h, header = _read_header(f, path)
        if h.get("key_id") != key_id(key):
            raise CryptoError(f"{path}: encrypted with key {h.get('key_id')} (region {h['region']!r}), not with "
                              f"the key given ({key_id(key)}); use that region's key")
        hh = hashlib.sha256(header).digest()
        aes = AESGCM(key)
        index, final = 0, 0
        while not final:
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
                parts.append(aes.decrypt(nonce, ct, _aad(hh, index, bool(final))))
            except InvalidTag:
                raise CryptoError(f"{path}: chunk {index} fails authentication: the file (or its header) was "
                                  "altered, or chunks were reordered or cut") from None
            index += 1
        if f.read(1):
            raise CryptoError(f"{path}: data after the final chunk {index - 1}: the file was appended to")
    data = b"".join(parts)
    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as w:
            w.write(data)
    return data
