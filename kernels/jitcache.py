"""`njit` for the kernels, with Numba's on-disk cache keyed on all of kernels/*.py.

Why: Numba's cache index is stamped with the hash of the *defining* module's file only. The
kernels inline helpers from other modules (kernels/store.py into both kernels), so after a
change to store.py alone Numba would load the old compiled kernel from its cache and run it:
stale machine code, silently, in development and after an upgrade alike.

Fix: every cached kernel function here is compiled with its cache in a directory named after
a sha256 of the sources of the whole package, `<root>/kernels-<hash12>`, so any edit to any
kernels/*.py file starts from an empty cache (one compile, ~5 s per kernel family), and two
versions installed side by side never share compiled code. <root> is NUMBA_CACHE_DIR when the
user set it (their choice of place is kept; the keyed sub-directory is added), else
$XDG_CACHE_HOME/edgert/numba (~/.cache/edgert/numba), else a per-user folder in the temp dir
when that is not writable. Numba's cache index is a pickle, so whoever can write the cache
directory can run code in the pipeline: the temp-dir folder is used only if this user made it
(owner, a real directory, mode 0700: `private_dir`); one planted by another user, or opened
to group or others, is left alone and a fresh mkdtemp folder used instead. Each start marks
its directory as used (its mtime); `kernels-*` directories beside it that no start has used for
30 days (older versions, old edits; a few MB each) are deleted then. Deleting any of them by hand is always safe too.

How: Numba picks a function's cache directory once, when the dispatcher is created with
cache=True (numba.core.caching.UserProvidedCacheLocator reads numba.config.CACHE_DIR then).
`njit` below sets config.CACHE_DIR for the duration of that call only, under a lock, and
restores it, so other Numba users in the process keep their own cache place. edgert's other cached
functions (runtime/sim, camhealth, fence, bench/_noise) use this `njit` too: Numba's default puts its
cache in `__pycache__` beside the source, which for an installed edgert is inside site-packages.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core import config

from edgert.runtime.paths import bundled, cache_home

_PACKAGE = bundled(__package__ or "edgert.kernels")  # the kernels' own folder: its *.py are hashed
_lock = threading.Lock()
log = logging.getLogger(__name__)


def source_hash(package: Path = _PACKAGE) -> str:
    """First 12 hex digits of the sha256 over the package's *.py files (names and bytes, sorted)."""
    h = hashlib.sha256()
    for f in sorted(package.glob("*.py")):
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def private_dir(path: Path) -> Path:
    """`path` made 0700, or kept (and made 0700) if it is a directory, not a link, owned by this user,
    that neither group nor others can write; else a fresh mkdtemp folder beside it. In a shared
    directory (/tmp) another user may have made `path` first to plant files for us to load."""
    try:
        os.mkdir(path, 0o700)
        return path
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
        # ours, and nobody else could ever write into it (an older edgert made it 0755): close it, keep it
        if st.st_mode & 0o077:
            os.chmod(path, 0o700, follow_symlinks=False)
        return path
    fresh = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=path.parent))
    log.warning("%s is not a private directory of this user (owner uid %d, mode %o): not used for the Numba "
                "cache, whose index is a pickle; compiling into %s instead. Remove %s, or set NUMBA_CACHE_DIR",
                path, st.st_uid, stat.S_IMODE(st.st_mode), fresh, path)
    return fresh


@functools.lru_cache(maxsize=1)
def cache_dir() -> str:
    """The directory the kernels' compiled code is cached in (created; see the module docstring)."""
    name = f"kernels-{source_hash()}"
    user = os.environ.get("NUMBA_CACHE_DIR", "")
    root = Path(user) if user else cache_home() / "numba"
    path = root / name
    if not _writable(path):
        shared = Path(tempfile.gettempdir()) / f"edgert-numba-{os.geteuid() if hasattr(os, 'geteuid') else 0}"
        path = private_dir(shared) / name  # an OSError here is raised: never fall back to an unchecked path
        if not _writable(path):
            raise OSError(f"kernels: cannot create a Numba cache directory at {root / name} or {path}; "
                          "set NUMBA_CACHE_DIR to a writable directory")
    os.utime(path)  # used now: the mark prune_unused reads
    prune_unused(path.parent, keep=path.name)
    return str(path)


UNUSED_S = 30 * 86400


def prune_unused(root: Path, keep: str, unused_s: float = UNUSED_S) -> list[str]:
    """Delete the `kernels-*` cache directories in `root` (not `keep`) that no start has used for
    `unused_s`; returns their names. Another version in use keeps its directory's mark fresh."""
    gone = []
    now = time.time()
    for d in root.glob("kernels-*"):
        try:
            if d.name != keep and d.is_dir() and now - d.stat().st_mtime > unused_s:
                shutil.rmtree(d)
                gone.append(d.name)
        except OSError:  # another process pruning or using it: leave it
            continue
    return gone


def njit(*args: Any, **kwargs: Any) -> Any:
    """numba.njit, with cache=True caching under `cache_dir()` (the kernels' source hash)."""
    if not kwargs.get("cache"):
        return numba.njit(*args, **kwargs)
    if len(args) == 1 and callable(args[0]) and not isinstance(args[0], (list, tuple, str)):
        return _keyed(numba.njit(**kwargs))(args[0])  # bare @njit(cache=True) on a function
    return _keyed(numba.njit(*args, **kwargs))


def _keyed(decorate: Callable[[Callable], Any]) -> Callable[[Callable], Any]:
    def wrap(py_func: Callable) -> Any:
        path = cache_dir()
        with _lock:
            saved = config.CACHE_DIR
            config.CACHE_DIR = path
            try:
                return decorate(py_func)  # the dispatcher's cache locator reads CACHE_DIR here
            finally:
                config.CACHE_DIR = saved
    return wrap
