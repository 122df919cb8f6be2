"""Numba's on-disk cache for the kernels is keyed on every kernels/*.py source (kernels/jitcache.py).

Numba stamps a cached function with its own file's hash only, so a kernel that inlines a helper
from another module (kernels/store.py) would be loaded stale after an edit to the helper alone.
These tests edit a copy of the package in a temp dir and run fresh interpreters against it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgert import kernels
from edgert.kernels import jitcache

PROBE = '''
"""A cached function inlining a helper from another module of the package (as the kernels do)."""
import numba
from edgert.kernels.jitcache import njit
from edgert.kernels.probe_helper import helper


@njit(cache=True)
def keyed(x):
    return helper(x)


@numba.njit(cache=True)
def plain(x):  # Numba's own in-tree cache: the control
    return helper(x)
'''

HELPER = '''
from numba import njit


@njit(inline="always")
def helper(x):
    return x + {add}
'''

RUN = '''
import json, sys
# The copy under PYTHONPATH, not the installed edgert: an editable install's import hook comes first.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
from edgert.kernels import jitcache, probe
print(json.dumps({"keyed": probe.keyed(1), "plain": probe.plain(1), "dir": jitcache.cache_dir(),
                  "hits": sum(probe.keyed.stats.cache_hits.values()),
                  "misses": sum(probe.keyed.stats.cache_misses.values())}))
'''


def _package(tmp: Path, add: int) -> Path:
    pkg = tmp / "src" / "edgert" / "kernels"
    if not pkg.exists():
        shutil.copytree(Path(kernels.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
        (pkg.parent / "__init__.py").write_text("")
        (pkg.parent / "runtime").mkdir()  # jitcache asks runtime/paths.py where the user's cache is
        (pkg.parent / "runtime" / "__init__.py").write_text("")
        shutil.copy(Path(kernels.__file__).parents[1] / "runtime" / "paths.py", pkg.parent / "runtime")
        (pkg / "probe.py").write_text(PROBE)
    (pkg / "probe_helper.py").write_text(HELPER.format(add=add))
    return pkg


def _run(tmp: Path, env_cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(tmp / "src"), PYTHONDONTWRITEBYTECODE="1", XDG_CACHE_HOME=str(tmp / "xdg"))
    if env_cache is not None:
        env["NUMBA_CACHE_DIR"] = env_cache
    p = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("user_dir", [False, True], ids=["xdg", "NUMBA_CACHE_DIR"])
def test_editing_a_helper_module_recompiles_the_cached_kernel(tmp_path: Path, user_dir: bool) -> None:
    env_cache = str(tmp_path / "user-cache") if user_dir else None
    _package(tmp_path, add=1)
    first = _run(tmp_path, env_cache)
    assert first["keyed"] == 2 and first["misses"] == 1 and first["hits"] == 0  # compiled
    root = Path(env_cache) if user_dir else tmp_path / "xdg" / "edgert" / "numba"
    assert Path(first["dir"]).parent == root and Path(first["dir"]).name.startswith("kernels-")
    again = _run(tmp_path, env_cache)
    assert again == {**first, "hits": 1, "misses": 0}  # same sources: loaded from the cache

    _package(tmp_path, add=200)  # only the helper's module changes
    edited = _run(tmp_path, env_cache)
    assert edited["keyed"] == 201, "a stale compiled kernel was loaded after its helper changed"
    assert edited["misses"] == 1 and edited["dir"] != first["dir"]
    # Numba's own cache, keyed on probe.py alone, is what this guards against (the control):
    # kept as information, not asserted, since a future Numba may fix it.
    print("numba in-tree cache after the helper edit:", edited["plain"], "(stale)" if edited["plain"] == 2 else "")


def test_source_hash_follows_every_file(tmp_path: Path) -> None:
    pkg = tmp_path / "k"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 1\n")
    h0 = jitcache.source_hash(pkg)
    assert jitcache.source_hash(pkg) == h0 and len(h0) == 12
    (pkg / "b.py").write_text("y = 2\n")
    h1 = jitcache.source_hash(pkg)
    (pkg / "c.py").write_text("")
    assert len({h0, h1, jitcache.source_hash(pkg)}) == 3


def test_the_kernels_cache_under_the_keyed_directory() -> None:
    import numba.core.config

    from edgert.kernels import preprocess, yuvkernel

    before = numba.core.config.CACHE_DIR
    for k in (preprocess._kernel(False), yuvkernel.kernel(False)):
        assert k._cache._cache_path.startswith(jitcache.cache_dir() + os.sep)
    assert numba.core.config.CACHE_DIR == before  # restored for other Numba users in the process
    assert Path(jitcache.cache_dir()).name == f"kernels-{jitcache.source_hash()}"


def test_cache_directories_unused_for_30_days_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    from edgert.kernels.jitcache import UNUSED_S, prune_unused

    now = time.time()
    for name, age in (("kernels-aaaaaaaaaaaa", UNUSED_S + 60), ("kernels-bbbbbbbbbbbb", 3600),
                      ("kernels-cccccccccccc", UNUSED_S + 60), ("other", UNUSED_S + 60)):
        d = tmp_path / name
        d.mkdir()
        (d / "index.nbi").write_bytes(b"x")
        os.utime(d, (now - age, now - age))
    gone = prune_unused(tmp_path, keep="kernels-cccccccccccc")
    assert gone == ["kernels-aaaaaaaaaaaa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernels-bbbbbbbbbbbb", "kernels-cccccccccccc", "other"]


# -- the temp-dir fallback is private: Numba's cache index is a pickle ------------------------------
CACHE_DIR = "from edgert.kernels import jitcache; print(jitcache.cache_dir())"


def _fallback_run(tmp: Path) -> Path:
    """cache_dir() in a fresh interpreter whose home and XDG cache cannot be made: the temp-dir fallback."""
    blocker = tmp / "not-a-dir"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR",)}
    env.update(XDG_CACHE_HOME=str(blocker / "xdg"), HOME=str(blocker / "home"), TMPDIR=str(tmp / "shared"),
               PYTHONPATH=str(Path(kernels.__file__).parents[1]))
    p = subprocess.run([sys.executable, "-c", CACHE_DIR], env=env, cwd=tmp, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory owned by another user")
@pytest.mark.parametrize("planted", ["other-user", "world-writable", "symlink"])
def test_a_fallback_cache_dir_planted_by_another_user_is_not_used(tmp_path: Path, planted: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    fixed = shared / f"edgert-numba-{os.geteuid()}"
    if planted == "symlink":
        elsewhere = tmp_path / "attacker"
        elsewhere.mkdir(mode=0o700)
        os.chown(elsewhere, 65534, 65534)
        fixed.symlink_to(elsewhere)
    else:
        fixed.mkdir(mode=0o700)
        if planted == "other-user":
            os.chown(fixed, 65534, 65534)
        else:
            fixed.chmod(0o777)
    d = _fallback_run(tmp_path)
    assert fixed not in d.parents and not d.is_relative_to(fixed.resolve()), d
    root = d.parent
    st = root.lstat()
    assert root.parent == shared and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700, (root, st)
    assert not list((tmp_path / "attacker").iterdir()) if planted == "symlink" else True


def test_the_fallback_cache_dir_is_made_private_and_reused(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    first = _fallback_run(tmp_path)
    assert first.parent == tmp_path / "shared" / f"edgert-numba-{os.geteuid()}"
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert _fallback_run(tmp_path) == first  # the compiled kernels are found again next start


def test_a_fallback_cache_dir_an_older_edgert_made_0755_is_closed_and_kept(tmp_path: Path) -> None:
    """Ours and never writable by anyone else: nothing can have been planted in it, so it is made
    0700 and its compiled kernels are kept, rather than recompiling into a new folder every start."""
    shared = tmp_path / "shared"
    shared.mkdir()
    fixed = shared / f"edgert-numba-{os.geteuid()}"
    fixed.mkdir(mode=0o755)
    fixed.chmod(0o755)
    d = _fallback_run(tmp_path)
    assert d.parent == fixed and stat.S_IMODE(fixed.stat().st_mode) == 0o700, (d, oct(fixed.stat().st_mode))
    assert _fallback_run(tmp_path) == d
