"""Seals for cache files: HMAC-SHA256 under a key only the runtime user can read.

A cache folder may be writable by others (a shared /var/cache, a group-writable home, a
service account's group). A plain sha256 beside a cached file proves nothing there: whoever
replaces the file replaces its sum too. Every cache file the runtime loads (ONNX Runtime's
optimised graph, TensorRT's engines and timing caches) is therefore sealed with HMAC-SHA256
over its name and bytes, under a per-user key: `$XDG_CONFIG_HOME/edgert/cache.key`
(`~/.config/edgert/cache.key`), 32 random bytes made 0600 on first use. The name is part of
what is sealed, so a sealed file copied under another name (another model's graph) fails too.

The key is read and made by runtime/keyfile.py: used only if it is a regular file (not a link)
owned by this user that nobody else can read, in folders nobody else can write (a sticky folder
such as /tmp excepted); otherwise CacheKeyError names the file, what is wrong and the fix.
A seal that does not verify is never loaded: the caller rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from edgert.runtime import keyfile
from edgert.runtime.manifest import ModelError
from edgert.runtime.paths import config_home

KEY_BYTES = 32
SEAL_PREFIX = "hmac-sha256 "
SEAL_SUFFIX = ".seal"
_DOMAIN = b"edgert cache seal v1\0"


class CacheKeyError(ModelError):
    """The cache key cannot be trusted (owner, mode, type) or cannot be made."""


class SealBroken(Exception):
    """A cache file's seal does not verify; the file has been deleted (the caller says so and rebuilds)."""


def key_path() -> Path:
    """Where this user's cache key lives (XDG config dir, not the cache dir it protects)."""
    return config_home() / "cache.key"


_REMAKE = ("remove it (a new one is made) and clear the cache folder: a key others could read or replace "
           "can forge cache seals")


def load_key(path: Path | None = None) -> bytes:
    """This user's cache key, made on first use (runtime/keyfile.py); CacheKeyError if it cannot be trusted."""
    path = path or key_path()
    try:
        return keyfile.load_or_create(path, KEY_BYTES, "cache key", _REMAKE)
    except keyfile.KeyFileError as e:
        raise CacheKeyError(f"{e}; or set infer.cache_dir = \"off\" (no cache, no key)") from None
    except OSError as e:
        raise CacheKeyError(f"cannot create or read the cache key {path} ({e}); make {path.parent} writable by "
                            "this user, set XDG_CONFIG_HOME to a folder that is, or set infer.cache_dir = "
                            "\"off\"") from None


def seal_of(key: bytes, name: str, data: bytes) -> str:
    """The seal text for the bytes `data` cached under `name`."""
    mac = hmac.new(key, _DOMAIN + name.encode() + b"\0" + data, hashlib.sha256)
    return SEAL_PREFIX + mac.hexdigest()


def verifies(key: bytes, name: str, data: bytes, seal: str) -> bool:
    """True if `seal` is the seal of `data` under `name` (compared in constant time)."""
    return hmac.compare_digest(seal.strip().encode(), seal_of(key, name, data).encode())


def seal_path(path: Path) -> Path:
    return path.with_name(path.name + SEAL_SUFFIX)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_sealed(path: Path, data: bytes, key: bytes, name: str) -> None:
    """Store `data` at `path` with its seal beside it (each replaced whole, never half-written)."""
    _write_atomic(path, data)
    _write_atomic(seal_path(path), (seal_of(key, name, data) + "\n").encode())


def read_sealed(path: Path, key: bytes, name: str) -> bytes | None:
    """The bytes at `path` if its seal verifies, None if there is no such file. A file whose seal
    is missing or does not verify (replaced, corrupt, sealed under another name or key) is deleted
    and SealBroken raised: the caller rebuilds it. The bytes returned are the ones checked: hand
    those on, never the path, so nothing can be swapped between the check and the use."""
    if not os.path.lexists(path):
        return None
    try:
        data = _read_regular(path)
        seal = _read_regular(seal_path(path)).decode()
    except (OSError, UnicodeDecodeError):  # a link, a FIFO, a folder, someone else's unreadable file
        data, seal = b"", ""
    if verifies(key, name, data, seal):
        return data
    for p in (path, seal_path(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError:  # a folder planted at the name: the rebuild's write fails with its own reason
            pass
    raise SealBroken(path)


def _read_regular(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file, never through a link and never blocking (a FIFO
    planted at a cache file's name must not hang the stage that reads it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return f.read()
