"""Secret key files: read only when they cannot have been planted or read by anyone else, and
made so that they appear complete or not at all.

Every secret key of the runtime goes through here: the cache-seal key (runtime/cacheseal.py),
the region and vehicle keys and the audit key (runtime/fleet/crypto.py, runtime/fleet/audit.py).

A key is used only if it is a regular file (opened with O_NOFOLLOW: never a link), owned by this
user, with no group or other permission bits, of exactly the expected size, in folders that only
this user or root can write (a sticky folder such as /tmp excepted): whoever could write a folder
above it could rename the key away and put their own in its place. Otherwise KeyFileError names
the file, what is wrong and the fix.

A new key is written to a private temp file (0600, O_EXCL | O_NOFOLLOW, a random name), fsynced,
then hard-linked to its name (link(2) never replaces an existing name, a planted link included),
and the folder fsynced. Nothing ever writes into the final name, so a crash or power cut leaves
either no key or the whole key, never an empty or partial one that fails every later start.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from edgert.runtime.errors import EdgertError


class KeyFileError(EdgertError, ValueError):
    """A key file cannot be trusted (link, owner, mode, size, folders); the message says how to fix it."""


def _folders(folder: Path) -> list[Path]:
    """The folder and every folder above it, both as written and as resolved (a linked folder
    is checked where it points, and the folder holding the link is checked too)."""
    seen: dict[Path, None] = {}
    for d in (folder.absolute(), folder.resolve()):
        for p in (d, *d.parents):
            seen.setdefault(p, None)
    return list(seen)


def check_folders(folder: Path, path: Path, what: str = "key") -> None:
    """Every folder above PATH must be this user's or root's and writable by nobody else (unless
    sticky); otherwise another user could swap the key."""
    uid = os.geteuid()
    for d in _folders(folder):
        st = d.stat()
        if st.st_uid not in (uid, 0):
            raise KeyFileError(f"{what} {path}: folder {d} belongs to uid {st.st_uid}, not to this user ({uid}) "
                               "or root, so its owner could swap the key; keep keys under folders of your own")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise KeyFileError(f"{what} {path}: folder {d} is writable by group or others (mode "
                               f"{stat.S_IMODE(st.st_mode):o}), so they could swap the key; `chmod go-w {d}`")


def load(path: str | Path, size: int, what: str = "key", remake: str | None = None) -> bytes:
    """The SIZE bytes of the key file PATH, or KeyFileError naming what is wrong and the fix.

    `remake`: the fix for a key that cannot be trusted, where the key can simply be replaced
    (the cache key: "remove it (a new one is made) ..."); without it the fixes keep the key
    (chown, chmod, restore from backup), since a lost region key loses that region's data.
    FileNotFoundError if there is no key (the caller says how to make one); other OSErrors
    (an unreadable disk) pass through as they are.
    """
    path = Path(path)
    check_folders(path.parent, path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a planted FIFO cannot hang us
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise KeyFileError(f"{what} {path} cannot be opened as a plain file (it is a symbolic link: a key is read "
                           "only from the file itself, never through a link that could point anywhere); "
                           + (remake or f"put the key file itself at {path}")) from None
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file; " + (remake or f"put the key file at {path}"))
        if st.st_uid != uid:
            raise KeyFileError(f"{what} {path} belongs to uid {st.st_uid}, not to this user ({uid}): someone else "
                               "could have made it. " + (remake or f"If it is the key you made, `chown {uid} {path}`;"
                                                                   " otherwise restore yours from its backup"))
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            how = "readable" if mode & 0o044 else "writable"
            raise KeyFileError(f"{what} {path} is {how} by others (mode {mode:o}); "
                               + (remake or f"`chmod 600 {path}` (keys are made 0600)"))
        data = b""
        while len(data) <= size:  # one byte more than a key: a longer file is refused, not cut
            chunk = os.read(fd, size + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) != size:
        raise KeyFileError(f"{what} {path} holds {max(len(data), st.st_size)} bytes, not {size}; "
                           + (remake or "restore it from its backup"))
    return data


def create(path: str | Path, data: bytes, what: str = "key") -> None:
    """Write the key DATA to PATH (0600; its folder made 0700 if missing), appearing complete or
    not at all. FileExistsError if PATH exists (a key is never overwritten); KeyFileError if its
    folders are unsafe; other OSErrors as they are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_folders(path.parent, path, what)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.link(tmp, path)  # never replaces an existing name, a planted link included
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the new name survives a power cut too
    finally:
        os.close(dfd)


def load_or_create(path: str | Path, size: int, what: str = "key", remake: str | None = None) -> bytes:
    """The key at PATH, made first (SIZE random bytes) if there is none, like an SSH host key.
    Several processes starting at once all end up with the one key that got the name first."""
    path = Path(path)
    if not os.path.lexists(path):
        try:
            create(path, secrets.token_bytes(size), what)
        except FileExistsError:
            pass  # another process made it first: use theirs
    return load(path, size, what, remake)
