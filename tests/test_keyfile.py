"""One key store (runtime/keyfile.py) for every secret key: the cache-seal key, the region and
vehicle keys, the audit key. A key that could have been planted, swapped or read by someone else
is refused with the fix; a new key appears complete or not at all, whatever moment a crash hits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgert.runtime import cacheseal, keyfile
from edgert.runtime.fleet import audit, crypto

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def _linked(keys: Path) -> None:
    """The key moved away, a link left at its name (to a file someone else may control)."""
    real = keys.parent / "elsewhere.key"
    (keys / "eu.key").rename(real)
    (keys / "eu.key").symlink_to(real)


def _folder_link_into_a_shared_folder(keys: Path) -> None:
    """The keys folder a link to one inside a folder everyone can write (not sticky)."""
    shared = keys.parent / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    keys.rename(shared / "keys")
    keys.symlink_to(shared / "keys")


@pytest.mark.parametrize("spoil,why", [
    (_linked, r"eu.key cannot be opened as a plain file \(it is a symbolic link.*put the key file itself at"),
    (lambda k: os.chown(k / "eu.key", NOBODY, -1),
     (r"key for region 'eu' .*eu.key belongs to uid 65534, not to this user \(0\): someone else could have made "
      r"it\. If it is the key you made, `chown 0 .*eu.key`")),
    (lambda k: (k / "eu.key").chmod(0o640), r"eu.key is readable by others \(mode 640\); `chmod 600 .*eu.key`"),
    (lambda k: (k / "eu.key").chmod(0o620), r"eu.key is writable by others \(mode 620\); `chmod 600"),
    (lambda k: k.chmod(0o770), (r"folder .*keys is writable by group or others \(mode 770\), so they could "
                                r"swap the key; `chmod go-w")),
    (_folder_link_into_a_shared_folder, r"folder .*shared is writable by group or others \(mode 777\)"),
    (lambda k: ((k / "eu.key").unlink(), os.mkfifo(k / "eu.key", 0o600)), r"eu.key is not a regular file"),
])
def test_a_region_key_that_cannot_be_trusted_is_refused_with_the_fix(tmp_path, spoil, why):
    if os.geteuid() != 0:
        pytest.skip("the foreign-owner case needs root (chown); the messages name uid 0")
    keys = tmp_path / "keys"
    crypto.keygen(keys, "eu")
    assert len(crypto.load_key(keys, "eu")) == 32
    spoil(keys)
    with pytest.raises(crypto.CryptoError, match=why):  # a FIFO does not hang the open (O_NONBLOCK)
        crypto.load_key(keys, "eu")
    with pytest.raises(crypto.CryptoError, match=why):  # nor is it replaced by a fresh one behind the user's back
        crypto.load_or_make_key(keys, "eu")


@pytest.mark.parametrize("name", ["vehicle", "audit"])
def test_the_vehicle_and_audit_keys_are_held_to_the_same_checks(tmp_path, name):
    keys = tmp_path / "keys"
    path = crypto.keygen(keys, name)
    load = (lambda: audit.load_key(path)) if name == "audit" else (lambda: crypto.load_key(keys, name))
    err = audit.AuditError if name == "audit" else crypto.CryptoError
    assert len(load()) == 32
    path.chmod(0o640)  # the audit key had no mode check at all
    with pytest.raises(err, match=rf"{name} key .*{name}.key is readable by others \(mode 640\); `chmod 600"):
        load()
    path.chmod(0o600)
    os.chown(path, NOBODY, -1)
    with pytest.raises(err, match=r"belongs to uid 65534, not to this user"):
        load()
    os.chown(path, os.geteuid(), -1)
    real = tmp_path / "real.key"
    path.rename(real)
    path.symlink_to(real)
    with pytest.raises(err, match=r"cannot be opened as a plain file \(it is a symbolic link"):
        load()
    with pytest.raises(crypto.CryptoError, match="already exists; a key is never overwritten"):
        crypto.keygen(keys, name)  # not even through a link at its name
    assert real.stat().st_size == 32


# -- a new key appears complete or not at all --------------------------------------------------
_KILLED_AFTER_CREATE = """
import os, sys, time
from pathlib import Path
from edgert.runtime.fleet import crypto

keys, flag = Path(sys.argv[1]), sys.argv[2]
real_open = os.open

def open_then_hang(path, flags, *args, **kw):  # the process dies right after making a file in KEYS
    fd = real_open(path, flags, *args, **kw)
    if flags & os.O_CREAT and Path(path).parent == keys:
        os.close(real_open(flag, os.O_WRONLY | os.O_CREAT, 0o600))
        time.sleep(600)
    return fd

os.open = open_then_hang
crypto.load_or_make_key(keys, crypto.VEHICLE)
"""


def test_a_crash_between_creating_and_writing_a_key_leaves_no_empty_key(tmp_path):
    """The recorder makes the vehicle key at its first start. Killed (or a power cut) after the
    file was created and before its bytes were in: the old code left an empty vehicle.key that
    every later start refused ("holds 0 bytes"). Now nothing exists under the name until it is whole."""
    keys, flag = tmp_path / "keys", tmp_path / "created"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_AFTER_CREATE, str(keys), str(flag)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert child.poll() is None, "the child ended before it created a key file"
            assert time.monotonic() < deadline, "the child never created a key file"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert not os.path.lexists(keys / "vehicle.key"), "a crash left a key file that is not whole"
    key = crypto.load_or_make_key(keys, crypto.VEHICLE)  # the next start makes a whole one
    assert len(key) == 32 and crypto.load_key(keys, crypto.VEHICLE) == key


@pytest.mark.parametrize("make", ["keygen", "load_or_make_key", "cache_key"])
def test_no_code_path_writes_into_a_keys_final_name(tmp_path, monkeypatch, make):
    """Every way a key is made: the final name is never opened for writing; it is linked to a temp
    file whose bytes were fsynced first, and the folder is fsynced after (the name survives a power cut)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    final = {"keygen": tmp_path / "keys" / "eu.key", "load_or_make_key": tmp_path / "keys" / "vehicle.key",
             "cache_key": cacheseal.key_path()}[make]
    events: list[tuple[str, str]] = []
    real_open, real_fsync, real_link = os.open, os.fsync, os.link

    def fd_path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def spy_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, *args, **kw)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            events.append(("write-open", fd_path(fd)))
        return fd

    def spy_fsync(fd: int) -> None:
        events.append(("fsync", fd_path(fd)))
        real_fsync(fd)

    def spy_link(src, dst, *args, **kw):  # type: ignore[no-untyped-def]
        events.append(("link", f"{src} -> {dst}"))
        real_link(src, dst, *args, **kw)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "link", spy_link)
    if make == "keygen":
        crypto.keygen(tmp_path / "keys", "eu")
    elif make == "load_or_make_key":
        crypto.load_or_make_key(tmp_path / "keys", crypto.VEHICLE)
    else:
        cacheseal.load_key()
    monkeypatch.undo()
    assert ("write-open", str(final)) not in events, events
    links = [e for e in events if e[0] == "link"]
    assert len(links) == 1 and links[0][1].endswith(f" -> {final}"), events
    tmp = links[0][1].split(" -> ")[0]
    assert events.index(("fsync", tmp)) < events.index(links[0]), "linked before its bytes were on disk"
    assert events.index(("fsync", str(final.parent))) > events.index(links[0]), "the folder was not fsynced"
    assert len(keyfile.load(final, 32)) == 32
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]  # no temp file left beside it


def test_a_key_is_never_overwritten_and_a_wrong_size_is_refused(tmp_path):
    path = tmp_path / "k" / "x.key"
    keyfile.create(path, b"a" * 32)
    with pytest.raises(FileExistsError):
        keyfile.create(path, b"b" * 32)
    assert keyfile.load(path, 32) == b"a" * 32
    assert keyfile.load_or_create(path, 32) == b"a" * 32  # an existing key is used, not replaced
    with pytest.raises(keyfile.KeyFileError, match=r"x.key holds 32 bytes, not 16; restore it from its backup"):
        keyfile.load(path, 16)  # longer than expected: refused, not cut
