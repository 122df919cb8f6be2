"""Frame pool: real shared memory across real processes; the seqlock catches torn reads."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.runtime import shm
from edgert.runtime.framepool import FramePool, SlotError

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (512, 1024, 4)  # 2 MiB frames: big enough that a copy takes long enough to be lapped


def _writer(run_id: str, seconds: float, out: mp.Queue, stop: mp.synchronize.Event) -> None:
    """Fill slots as fast as possible, until `stop` or `seconds`; every byte of frame k is k % 251
    so a torn frame is visible."""
    pool = FramePool.attach(run_id, "cam")
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end and not stop.is_set():
        k += 1
        slot = pool.acquire()
        pool.view(slot, SHAPE, np.uint8).fill(k % 251)
        gen = pool.publish(slot)
        out.put((slot, gen, k % 251))
        time.sleep(0.0003)
    out.put(None)
    pool.close()


def _latest(q: mp.Queue) -> tuple[int, int, int] | None:
    """Newest descriptor queued (latest-only, like the stages); None once the writer is done."""
    item = q.get(timeout=30)
    while item is not None:
        try:
            nxt = q.get_nowait()
        except Exception:
            return item
        item = nxt
    return None


def test_torn_reads_detected_under_concurrent_writer(run_id):
    pool = FramePool.create(run_id, "cam", n_slots=2, slot_bytes=int(np.prod(SHAPE)))
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    # the writer stops once the race was seen (a torn read caught) and enough frames passed, not
    # after a fixed 3 s; 120 s only bounds a machine too loaded to ever lap the reader
    w = ctx.Process(target=_writer, args=(run_id, 120.0, q, stop))
    w.start()
    accepted = dropped_before = dropped_after = torn_caught = 0
    copy = np.empty(SHAPE, np.uint8)
    try:
        while (item := _latest(q)) is not None:
            slot, gen, value = item
            if not pool.is_current(slot, gen):
                dropped_before += 1
                continue
            view = pool.view(slot, SHAPE, np.uint8)
            np.copyto(copy[:256], view[:256])
            if (accepted + dropped_after) % 2:
                time.sleep(0.004)  # a slow consumer: the writer laps it mid-read
            np.copyto(copy[256:], view[256:])
            if pool.is_current(slot, gen):
                accepted += 1
                # The guarantee: a frame that passed both checks is exactly the frame announced.
                assert copy.min() == copy.max() == value, "torn frame accepted"
            else:
                dropped_after += 1
                torn_caught += int(copy.min() != copy.max())
            if accepted > 10 and torn_caught > 0:
                stop.set()  # then drain what the writer queued, up to its None
    finally:
        w.join(10)
    assert w.exitcode == 0
    assert accepted > 10
    # The race must really have happened, or this test proves nothing.
    assert dropped_before + dropped_after > 0 and torn_caught > 0
    print(f"accepted={accepted} dropped_before={dropped_before} dropped_after={dropped_after} "
          f"torn_caught={torn_caught}")
    pool.close()
    pool.unlink()
    assert shm.list_segments(run_id) == []


def test_attach_reads_layout_and_shares_bytes(run_id):
    pool = FramePool.create(run_id, "s", n_slots=3, slot_bytes=100)
    other = FramePool.attach(run_id, "s")
    assert (other.n_slots, other.slot_bytes) == (3, 100)
    assert not other.has_published()  # a reader starting now is in time for the first frame
    slot = pool.acquire()
    assert other.has_published()  # ... and now it is not (a restart into a running stream)
    assert not other.is_current(slot, 1)  # odd generation: being written
    pool.view(slot, (10, 10), np.uint8)[:] = 7
    gen = pool.publish(slot)
    assert gen % 2 == 0 and other.is_current(slot, gen)
    assert (other.view(slot, (10, 10), np.uint8) == 7).all()
    other.close()
    pool.close()
    pool.unlink()


def test_bad_descriptors_rejected(run_id):
    pool = FramePool.create(run_id, "s", n_slots=2, slot_bytes=64)
    with pytest.raises(SlotError, match="slot 5 outside pool of 2"):
        pool.is_current(5, 2)
    with pytest.raises(SlotError, match="needs 400 bytes, a slot holds 64"):
        pool.view(0, (10, 10), np.float32)
    with pytest.raises(ValueError, match="at least 2 slots"):
        FramePool.create(run_id, "t", n_slots=1, slot_bytes=64)
    pool.close()
    pool.unlink()


def test_a_crafted_shape_is_refused_exactly_and_cannot_grow_the_view_cache(run_id):
    pool = FramePool.create(run_id, "s", n_slots=2, slot_bytes=64)
    try:
        # 2**64 bytes: np.prod wraps to 0 and the reshape raised a ValueError no reader catches
        with pytest.raises(SlotError, match="needs 18446744073709551616 bytes"):
            pool.view(0, (65536,) * 4, np.uint8)
        for k in range(1, 65):  # every shape fits the slot, each one new
            pool.view(k % 2, (1, k), np.uint8)
        assert len(pool._views) <= 4 * pool.n_slots
        assert pool.view(1, (8, 8), np.uint8).shape == (8, 8)
    finally:
        pool.close()
        pool.unlink()


def test_attach_missing_segment_says_why(run_id):
    with pytest.raises(FileNotFoundError, match="supervisor that owns this run"):
        FramePool.attach(run_id, "nope")


def test_writer_crash_mid_write_leaves_slot_rejected(run_id):
    pool = FramePool.create(run_id, "s", n_slots=2, slot_bytes=64)
    slot = pool.acquire()
    gen = int(pool._gen[slot])
    assert gen % 2 == 1 and not pool.is_current(slot, gen)
    # A restarted writer attaches and takes the slot again: it must end even, never reuse the odd value.
    w2 = FramePool.attach(run_id, "s")
    s2 = w2.acquire()
    assert s2 == slot and w2.publish(s2) % 2 == 0
    w2.close()
    pool.close()
    pool.unlink()


def _orphan(code: str) -> None:
    """Run `code` in a fresh interpreter that makes shared memory and exits without cleaning up."""
    subprocess.run([sys.executable, "-c", "from edgert.runtime import shm\n" + code], cwd=ROOT, check=True, timeout=60)


def test_sweep_removes_segments_of_dead_runs_only(run_id):
    # an owner that died (its PID gone), and one whose PID lives on in another process: in a
    # container a restarted supervisor is PID 1 again. Here the live PID is this test's own.
    dead_pid = mp.get_context("spawn").Process(target=os.getpid)
    dead_pid.start()
    dead_pid.join()
    dead = shm.segment_name(f"{dead_pid.pid}.deadbeef", "cam")
    reused = shm.segment_name(f"{os.getpid()}.cafef00d", "cam")
    for name in (dead, reused):
        _orphan(f"shm.Segment.create({name!r}, 4096)")
    live = FramePool.create(run_id, "cam", n_slots=2, slot_bytes=64)
    try:
        removed = shm.sweep_stale()
        assert dead in removed and reused in removed
        assert not (shm.SHM_DIR / dead).exists() and not (shm.SHM_DIR / reused).exists()
        assert shm.list_segments(run_id) == [live.segment.name]  # held by this process: kept
    finally:
        live.close()
        live.unlink()
    for name in (dead, reused):
        (shm.SHM_DIR / name).unlink(missing_ok=True)


def test_sweep_leaves_a_segment_being_made_and_removes_an_old_unlocked_temporary():
    fresh = shm.SHM_DIR / f".edgert.{os.getpid()}.0badf00d.cam.1234abcd.tmp"
    old = shm.SHM_DIR / f".edgert.{os.getpid()}.0badf00d.cam.5678abcd.tmp"
    for path in (fresh, old):
        path.write_bytes(b"\0" * 64)
    past = time.time() - 2 * shm.TMP_GRACE_S
    os.utime(old, (past, past))
    try:
        removed = shm.sweep_stale()
        assert old.name in removed and not old.exists()
        assert fresh.name not in removed and fresh.exists()  # its creator may be about to lock it
    finally:
        fresh.unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def test_sweep_keeps_an_old_temporary_its_creator_still_holds():
    import fcntl

    path = shm.SHM_DIR / f".edgert.{os.getpid()}.0badf00d.cam.9abcabcd.tmp"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        past = time.time() - 2 * shm.TMP_GRACE_S  # a slow fallocate of a huge pool, say
        os.utime(path, (past, past))
        assert path.name not in shm.sweep_stale() and path.exists()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def test_segment_create_that_cannot_reserve_memory_says_so_and_leaves_nothing(run_id, monkeypatch):
    import errno

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # a full /dev/shm, without filling this machine's
    with pytest.raises(OSError, match="cannot reserve .* free /dev/shm, enlarge it"):
        shm.Segment.create(shm.segment_name(run_id, "cam"), 4096)
    assert not [p for p in shm.SHM_DIR.iterdir() if run_id in p.name]


def test_segment_create_refuses_an_existing_name_and_leaves_no_temporary(run_id):
    a = shm.Segment.create(shm.segment_name(run_id, "cam"), 4096)
    try:
        with pytest.raises(FileExistsError):
            shm.Segment.create(shm.segment_name(run_id, "cam"), 4096)
        assert not [p for p in shm.SHM_DIR.iterdir() if p.name.startswith(f".edgert.{run_id}.")]
    finally:
        a.close()
        a.unlink()


def test_run_dirs_alive_by_lock_not_by_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pid = os.getpid()
    held = tmp_path / f"edgert.{pid}.aaaa0001.x"
    held.mkdir()
    fd = shm.hold_run_dir(held)
    # made by a process that exited, under this (live) PID: dead although the PID runs
    _orphan(f"import os, pathlib; d = pathlib.Path({str(tmp_path)!r}) / 'edgert.{pid}.aaaa0002.x'; "
            "d.mkdir(); shm.hold_run_dir(d)")
    new_live = tmp_path / f"edgert.{pid}.aaaa0003.x"  # just made, no lock yet: judged by its PID
    new_live.mkdir()
    never_locked = tmp_path / f"edgert.{pid}.aaaa0004.x"  # its supervisor died before locking it
    never_locked.mkdir()
    past = time.time() - 2 * shm.TMP_GRACE_S
    os.utime(never_locked, (past, past))
    (tmp_path / f"edgert.{pid}.aaaa0005.x").write_text("a file, not a run: skipped, not a crash")
    try:
        alive = {d.name: a for d, _, a in shm.run_dirs()}
        assert alive == {held.name: True, f"edgert.{pid}.aaaa0002.x": False, new_live.name: True,
                         never_locked.name: False}
    finally:
        os.close(fd)
    assert {d.name: a for d, _, a in shm.run_dirs()}[held.name] is False  # lock released
