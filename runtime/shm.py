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
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import secrets
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
    def create(cls, name: str, size: int) -> "Segment":
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
    def attach(cls, name: str) -> "Segment":
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlocked(path: Path) -> bool | None:
    """True if no process holds a lock on `path` (its owner is gone), False if one does, None if
    the file is gone. Takes the lock for a moment: a file nobody owns stays nobody's."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:  # another user's (EACCES), or not a file we made (ENOTDIR...): cannot tell, keep it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


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
        if _NAME_RE.match(path.name):
            stale = _unlocked(path)
        elif _TMP_RE.match(path.name):  # a creator that died between open and link
            try:
                stale = now - path.stat().st_mtime > TMP_GRACE_S and _unlocked(path)
            except FileNotFoundError:
                continue
        else:
            continue
        if stale:
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
    or was left by a supervisor that died before locking it (dead after that)."""
    out = []
    now = time.time()
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}.*.*.*"):
        pid, token = d.name.split(".")[1:3]
        try:
            if not pid.isdigit() or not d.is_dir():
                continue
            mtime = d.stat().st_mtime
        except OSError:  # removed since the glob
            continue
        free = _unlocked(d / RUN_LOCK)
        alive = (now - mtime <= TMP_GRACE_S and pid_alive(int(pid))) if free is None else not free
        out.append((d, f"{pid}.{token}", alive, mtime))
    return [r[:3] for r in sorted(out, key=lambda r: r[3])]


def list_segments(run_id: str) -> list[str]:
    """Names of this run's segments still present (tests use it to prove nothing leaked)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"{PREFIX}.{run_id}."))
