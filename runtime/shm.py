"""POSIX shared-memory segments owned by one pipeline run.

We map files under /dev/shm ourselves instead of using multiprocessing.shared_memory:
before Python 3.13 that class registers every *attached* segment with a resource
tracker that may unlink it when an unrelated process exits, which breaks a run whose
stages restart. Here ownership is explicit: the supervisor creates and unlinks, stages
only attach. `sweep_stale()` removes segments left by a supervisor that was SIGKILLed
(nothing else could clean up after it).

Whether a segment's owner lives is told by a lock, not by its PID: the creating process holds
a shared flock(2) on the segment for as long as it lives, and the kernel drops it when the
process dies, however it dies. A PID alone would lie once reused, and reuse is the rule in a
container, where a restarted supervisor is PID 1 again: its predecessors' segments would look
alive forever and fill /dev/shm (64 MiB by default in Docker) run after run. The same goes for
each run's socket/config directory, which holds a locked `owner.lock`.

/dev/shm and the temp directory are shared by every local user, so the sweeps and run discovery
trust only what this user owns: an entry owned by another user, not a plain file or directory
(a FIFO, a device, a symlink), a directory writable by group or others, or one named with an
absurd PID is skipped: never opened, followed, deleted or signalled. Files are opened
O_NOFOLLOW | O_NONBLOCK, so a FIFO or a link swapped in after the check cannot block or redirect
the open either.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "edgert"
_NAME_RE = re.compile(rf"^{PREFIX}\.(\d+)\.[0-9a-f]+\.[A-Za-z0-9_-]+$")
_TMP_RE = re.compile(rf"^\.{PREFIX}\..+\.tmp$")  # a segment being made: locked, then linked to its name
TMP_GRACE_S = 60.0  # an unlocked temporary older than this was left by a creator that died
RUN_LOCK = "owner.lock"
# no process waits on a file here: a FIFO would block a plain open, a symlink could lead anywhere
_OPEN_SAFE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


def new_run_id() -> str:
    """`<pid>.<random>`: unique per run, and tells which process owns the run's segments."""
    return f"{os.getpid()}.{secrets.token_hex(4)}"


def segment_name(run_id: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"segment name {name!r} may only use letters, digits, '_' and '-'")
    return f"{PREFIX}.{run_id}.{name}"


class Segment:
    """A mapped shared-memory file; `create` makes a new one, `attach` maps an existing one."""

    def __init__(self, name: str, size: int, mm: mmap.mmap, owner: bool, lock_fd: int | None = None) -> None:
        self.name = name
        self.size = size
        self.buf = mm
        self.owner = owner
        # the owner's descriptor, flock'ed: the lock lasts while it or the mapping (CPython's mmap
        # keeps a duplicate of the descriptor) is open, and the kernel drops it when the owner dies
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, name: str, size: int) -> Segment:
        """Made locked (`_made_locked`): no sweeper ever sees the segment unlocked."""
        mm: mmap.mmap | None = None
        try:
            with _made_locked(SHM_DIR / name) as fd:
                try:
                    os.posix_fallocate(fd, 0, size)  # fail now with ENOSPC, not with SIGBUS on a later write
                except OSError as e:
                    raise OSError(e.errno, f"cannot reserve {size / 2**20:.1f} MiB of shared memory in {SHM_DIR} "
                                           f"for {name}: {e.strerror}; free /dev/shm, enlarge it, or use smaller "
                                           "frames or fewer pool slots (camera.width/height, camera.pool_slots)"
                                  ) from None
                mm = mmap.mmap(fd, size)
        except BaseException:
            if mm is not None:
                mm.close()
            raise
        return cls(name, size, mm, owner=True, lock_fd=fd)

    @classmethod
    def attach(cls, name: str) -> Segment:
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared-memory segment {name!r} does not exist: the supervisor that owns "
                "this run has exited or was never started; start stages with `edgert run`"
            ) from None
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, mm, owner=False)

    def close(self) -> None:
        try:
            self.buf.close()
        except BufferError:
            # numpy views still point into the mapping; it is unmapped when they go.
            pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def unlink(self) -> None:
        (SHM_DIR / self.name).unlink(missing_ok=True)


def pid_max() -> int:
    """The largest PID this kernel hands out (/proc/sys/kernel/pid_max; 2**22, Linux's ceiling, if unreadable)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22


def plausible_pid(text: str) -> int | None:
    """`text` as a PID if it could be one (decimal, 1..pid_max), else None: a name like
    edgert.99999999999999999999.x must be skipped, not overflow os.kill."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    pid = int(text)
    return pid if 1 <= pid <= pid_max() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # not a PID at all
        return False
    return True


def owned(st: os.stat_result, kind: int) -> bool:
    """Is this (lstat) entry ours to trust: of file type `kind` (stat.S_IFREG, S_IFDIR), not a
    link, owned by this user, and for a directory not writable by group or others (who could
    plant an owner.lock or a pipeline.json in it)?"""
    if stat.S_IFMT(st.st_mode) != kind or st.st_uid != os.geteuid():
        return False
    return kind != stat.S_IFDIR or not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _unlocked(path: Path) -> bool | None:
    """True if no process holds a lock on `path` (its owner is gone), False if one does or the file
    is not ours (another user's, not a plain file: keep it, never touch it), None if it is gone.
    Takes the lock for a moment: a file nobody owns stays nobody's."""
    try:
        fd = os.open(path, _OPEN_SAFE)
    except FileNotFoundError:
        return None
    except OSError:  # another user's (EACCES), a symlink (ELOOP), not a file (ENOTDIR...): keep it
        return False
    try:
        if not owned(os.fstat(fd), stat.S_IFREG):  # a FIFO, a device, another user's: not ours
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _ours(path: Path, kind: int) -> os.stat_result | None:
    """lstat of `path` if `owned` (see there), else None (also when it is gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if owned(st, kind) else None


@contextlib.contextmanager
def _made_locked(path: Path) -> Iterator[int]:
    """Make `path` so that no sweeper ever finds it unlocked: under a temporary name beside it,
    flock'ed (shared), prepared by the `with` body, then link(2)ed to `path` (EEXIST like O_EXCL).
    Yields the locked descriptor, which the caller keeps open for as long as it owns `path`; on
    any failure it is closed. The temporary name is gone either way."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield fd
        os.link(tmp, path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def hold_run_dir(run_dir: Path) -> int:
    """Lock `run_dir/owner.lock` for this process's lifetime (close the returned fd at the end),
    made as segments are (`_made_locked`): a sweeper never finds it unlocked while its run lives."""
    with _made_locked(run_dir / RUN_LOCK) as fd:
        pass
    return fd


def sweep_stale() -> list[str]:
    """Remove segments no live process holds (their supervisor died); return their names."""
    removed: list[str] = []
    if not SHM_DIR.is_dir():
        return removed
    now = time.time()
    for path in SHM_DIR.iterdir():
        if not (_NAME_RE.match(path.name) or _TMP_RE.match(path.name)):
            continue
        st = _ours(path, stat.S_IFREG)  # another user's, a FIFO, a link: not ours to judge or remove
        if st is None or (_TMP_RE.match(path.name) and now - st.st_mtime <= TMP_GRACE_S):
            continue  # a temporary: its creator may be about to lock it
        if _unlocked(path):
            again = _ours(path, stat.S_IFREG)
            if again is None or (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                continue  # replaced since the check: not the file we judged
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.warning("removed %d shared-memory segment(s) left by a dead run: %s",
                    len(removed), ", ".join(removed))
    return removed


def run_dirs() -> list[tuple[Path, str, bool]]:
    """Every run's socket/config directory (the supervisor's mkdtemp `edgert.<run id>.<random>`),
    as (path, run id, whether its supervisor is alive), oldest first. Alive: its owner.lock is
    held. A directory without one is either just made (alive while its PID is, for TMP_GRACE_S)
    or was left by a supervisor that died before locking it (dead after that).
    Only this user's own directories count (`owned`: not another user's, not a link, not group or
    world writable), and only those whose name holds a plausible PID.
    """
    out = []
    now = time.time()
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}.*.*.*"):
        pid_text, token = d.name.split(".")[1:3]
        pid = plausible_pid(pid_text)
        st = _ours(d, stat.S_IFDIR) if pid is not None else None
        if pid is None or st is None:
            continue
        mtime = st.st_mtime
        if os.path.lexists(d / RUN_LOCK) and _ours(d / RUN_LOCK, stat.S_IFREG) is None:
            continue  # its owner.lock is a FIFO, a link or another user's: not a run we made
        free = _unlocked(d / RUN_LOCK)
        alive = (now - mtime <= TMP_GRACE_S and pid_alive(pid)) if free is None else not free
        out.append((d, f"{pid_text}.{token}", alive, mtime))
    return [r[:3] for r in sorted(out, key=lambda r: r[3])]


def list_segments(run_id: str) -> list[str]:
    """Names of this run's segments still present (tests use it to prove nothing leaked)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"{PREFIX}.{run_id}."))
