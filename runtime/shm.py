"""POSIX shared-memory segments owned by one pipeline run.

We map files under /dev/shm ourselves instead of using multiprocessing.shared_memory:
before Python 3.13 that class registers every *attached* segment with a resource
tracker that may unlink it when an unrelated process exits, which breaks a run whose
stages restart. Here ownership is explicit: the supervisor creates and unlinks, stages
only attach. Names carry the supervisor's PID, so `sweep_stale()` can remove segments
left by a supervisor that was SIGKILLed (nothing else could clean up after it).
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import secrets
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "edgert"
_NAME_RE = re.compile(rf"^{PREFIX}\.(\d+)\.[0-9a-f]+\.[A-Za-z0-9_-]+$")


def new_run_id() -> str:
    """`<pid>.<random>`: unique per run, and tells which process owns the run's segments."""
    return f"{os.getpid()}.{secrets.token_hex(4)}"


def segment_name(run_id: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"segment name {name!r} may only use letters, digits, '_' and '-'")
    return f"{PREFIX}.{run_id}.{name}"


class Segment:
    """A mapped shared-memory file; `create` makes a new one, `attach` maps an existing one."""

    def __init__(self, name: str, size: int, mm: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.size = size
        self.buf = mm
        self.owner = owner

    @classmethod
    def create(cls, name: str, size: int) -> "Segment":
        path = SHM_DIR / name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)  # fail now with ENOSPC, not with SIGBUS on a later write
            except OSError as e:
                raise OSError(e.errno, f"cannot reserve {size / 2**20:.1f} MiB of shared memory in {SHM_DIR} "
                                       f"for {name}: {e.strerror}; free /dev/shm, enlarge it, or use smaller "
                                       "frames or fewer pool slots (camera.width/height, camera.pool_slots)") from None
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return cls(name, size, mm, owner=True)

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


def sweep_stale() -> list[str]:
    """Remove segments whose owning supervisor is no longer alive; return their names."""
    removed = []
    if not SHM_DIR.is_dir():
        return removed
    for path in SHM_DIR.iterdir():
        m = _NAME_RE.match(path.name)
        if m and not pid_alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.warning("removed %d shared-memory segment(s) left by a dead run: %s",
                    len(removed), ", ".join(removed))
    return removed


def run_dirs() -> list[tuple[Path, str, bool]]:
    """Every run's socket/config directory (the supervisor's mkdtemp `edgert.<run id>.<random>`),
    as (path, run id, whether its supervisor is alive), oldest first."""
    out = []
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}.*.*.*"):
        pid, token = d.name.split(".")[1:3]
        if pid.isdigit():
            out.append((d, f"{pid}.{token}", pid_alive(int(pid))))
    return sorted(out, key=lambda r: r[0].stat().st_mtime)


def list_segments(run_id: str) -> list[str]:
    """Names of this run's segments still present (tests use it to prove nothing leaked)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"{PREFIX}.{run_id}."))
