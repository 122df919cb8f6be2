"""Another local user cannot stop, spoof or hijack a run through /dev/shm or the temp directory.

Both are shared by every user of the machine. These tests plant there what a hostile user could
(entries owned by another uid, FIFOs, symlinks, absurd PIDs, a group-writable directory) and run
the real sweeps and run discovery in a fresh interpreter with a time limit: a blocking open would
show as a timeout, a crash as a non-zero exit. They need root (to chown to another uid), which is
how the project's CI and this machine run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.runtime import shm
from edgert.runtime.config import DEFAULT_CONFIG, load

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files owned by another user")


def _python(code: str, tmpdir: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"blocked for {timeout} s (an open of a FIFO?): {code}")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_shm_sweep_skips_other_users_fifos_and_links_without_blocking(tmp_path):
    dead = _dead_pid()
    mine = shm.SHM_DIR / shm.segment_name(f"{dead}.0000aaaa", "cam")  # a dead run of ours: removed
    theirs = shm.SHM_DIR / shm.segment_name(f"{dead}.0000bbbb", "cam")  # another user's, unlocked
    fifo = shm.SHM_DIR / shm.segment_name(f"{dead}.0000cccc", "cam")  # an open(2) of it would block
    link = shm.SHM_DIR / shm.segment_name(f"{dead}.0000dddd", "cam")  # leads to a file of ours elsewhere
    old_tmp = shm.SHM_DIR / f".edgert.{dead}.0000eeee.cam.1234abcd.tmp"  # an old temporary, another user's
    target = tmp_path / "target"
    target.write_bytes(b"keep me")
    try:
        mine.write_bytes(b"\0" * 64)
        theirs.write_bytes(b"\0" * 64)
        os.chown(theirs, NOBODY, NOBODY)
        os.mkfifo(fifo, 0o600)
        link.symlink_to(target)
        old_tmp.write_bytes(b"\0" * 64)
        os.chown(old_tmp, NOBODY, NOBODY)
        os.utime(old_tmp, (0, 0))
        r = _python("import json; from edgert.runtime import shm; print(json.dumps(shm.sweep_stale()))")
        assert r.returncode == 0, r.stderr
        removed = json.loads(r.stdout.splitlines()[-1])
        assert mine.name in removed and not mine.exists()  # the sweep still does its job
        assert not {theirs.name, fifo.name, link.name, old_tmp.name} & set(removed), removed
        assert theirs.exists() and fifo.exists() and link.is_symlink() and old_tmp.exists()
        assert target.read_bytes() == b"keep me"
    finally:
        for p in (mine, theirs, fifo, link, old_tmp):
            p.unlink(missing_ok=True)


def _spoofed_runs(tmp: Path) -> list[int]:
    """What a hostile user can leave in the temp dir; returns descriptors of the locks it holds."""
    pid = os.getpid()
    cfg_json = load(DEFAULT_CONFIG).to_json()
    fds = []
    theirs = tmp / f"edgert.{pid}.ffff0001.x"  # a live-looking run with its own pipeline.json: another user's
    theirs.mkdir(mode=0o700)
    (theirs / "pipeline.json").write_text(cfg_json)
    fds.append(shm.hold_run_dir(theirs))
    for p in (theirs / shm.RUN_LOCK, theirs / "pipeline.json", theirs):
        os.chown(p, NOBODY, NOBODY)
    fifo_lock = tmp / f"edgert.{pid}.ffff0002.x"  # ours to look at, but its owner.lock is a FIFO
    fifo_lock.mkdir(mode=0o700)
    (fifo_lock / "pipeline.json").write_text(cfg_json)
    os.mkfifo(fifo_lock / shm.RUN_LOCK, 0o600)
    (tmp / "edgert.99999999999999999999.ffff0003.x").mkdir(mode=0o700)  # no lock, fresh: judged by a PID
    (tmp / "edgert.0.ffff0004.x").mkdir(mode=0o700)  # PID 0 = kill(0, 0) signals our own process group
    shared = tmp / f"edgert.{pid}.ffff0005.x"  # ours, but anyone may write into it
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "pipeline.json").write_text(cfg_json)
    fds.append(shm.hold_run_dir(shared))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "pipeline.json").write_text(cfg_json)
    fds.append(shm.hold_run_dir(elsewhere))
    (tmp / f"edgert.{pid}.ffff0006.x").symlink_to(elsewhere)  # a link to a live-looking run
    os.mkfifo(tmp / f"edgert.{pid}.ffff0007.x", 0o600)  # not a directory at all
    return fds


def test_run_discovery_lists_only_this_users_own_runs_without_blocking_or_crashing(tmp_path):
    fds = _spoofed_runs(tmp_path)
    ours = tmp_path / f"edgert.{os.getpid()}.0000aaaa.x"  # the one real run
    ours.mkdir(mode=0o700)
    fds.append(shm.hold_run_dir(ours))
    try:
        r = _python("import json; from edgert.runtime import shm; "
                    "print(json.dumps([(d.name, rid, a) for d, rid, a in shm.run_dirs()]))", tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1]) == [[ours.name, f"{os.getpid()}.0000aaaa", True]]
        # the supervisor's start-up sweep removes dead runs' directories: never another user's, never through a link
        r = _python("from edgert.runtime.supervisor import sweep_stale_run_dirs; sweep_stale_run_dirs()", tmp_path)
        assert r.returncode == 0, r.stderr
        assert len(list(tmp_path.glob("edgert.*"))) == 8 and (tmp_path / "elsewhere" / "pipeline.json").exists()
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.parametrize("command", [["echo", "commands", "--count", "1"], ["record", "trigger"]])
def test_echo_and_record_trigger_ignore_planted_runs_and_say_none_is_running(tmp_path, command):
    fds = _spoofed_runs(tmp_path)
    try:
        r = _python(f"import sys; from edgert.runtime import cli; sys.exit(cli.main({command!r}))", tmp_path)
    finally:
        for fd in fds:
            os.close(fd)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "no running pipeline found" in r.stderr and "Traceback" not in r.stderr, r.stderr

