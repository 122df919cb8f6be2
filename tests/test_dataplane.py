"""The declared data plane: pools and mailboxes made from the tables, one answer to how a topic
travels, a ZeroMQ copy only while someone subscribes, and the supervisor's lifecycle API."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from edgert.runtime import shm
from edgert.runtime.config import DEFAULT_CONFIG, load
from edgert.runtime.framepool import FramePool
from edgert.runtime.mailbox import Mailbox, unsupported
from edgert.runtime.topics import STREAMS, TOPICS, StreamLayout, layout
from edgert.runtime.transport import Endpoints, confirmed_subscribers, publisher

PROJECT_ROOT = Path(__file__).resolve().parents[1]
needs_mailbox = pytest.mark.skipif(bool(unsupported()), reason=unsupported() or "mailboxes available")


def _small(**pipeline):
    cfg = load(DEFAULT_CONFIG)
    return cfg.replace(pipeline={"log_level": "WARNING", **pipeline})


# -- the tables ----------------------------------------------------------------------------------

def test_every_stream_names_a_declared_frame_topic_and_its_layout_follows_the_config():
    for s in STREAMS.values():
        assert s.topic in TOPICS and TOPICS[s.topic].publisher == s.writer
    assert len({s.stream_id for s in STREAMS.values()}) == len(STREAMS)
    cfg = _small().replace(camera={"pool_slots": 5, "width": 320, "height": 180})
    assert layout("camera", cfg) == StreamLayout((180, 320, 3), np.dtype(np.uint8), 5)
    multi = cfg.replace(camera={"source": "frames", "cameras": 2})
    assert layout("camera", multi).shape == (2, 180, 320, 3)

    class Spec:  # a manifest's TensorSpec, as far as layout reads it
        shape, dtype = (1, 3, 66, 200), "float32"
    t = layout("tensor", cfg, Spec())
    assert (t.shape, t.dtype, t.slots, t.slot_bytes) == ((1, 3, 66, 200), np.float32, cfg.infer.pool_slots,
                                                         3 * 66 * 200 * 4)
    with pytest.raises(ValueError, match="pass the manifest's inputs"):
        layout("tensor", cfg)
    with pytest.raises(KeyError, match="streams are: camera, tensor"):
        layout("lidar", cfg)


def test_routes_are_the_one_answer_to_how_a_topic_travels(tmp_path):
    cfg = _small()
    ipc = Endpoints.for_run(cfg, "r1", tmp_path)
    tcp = Endpoints.for_run(cfg.replace(pipeline={"transport": "tcp", "curve": False}), "r1", tmp_path)
    for name, t in TOPICS.items():
        r = ipc.route(name)
        assert r.endpoint == ipc(name) and r.publisher_binds == (not t.bound_by_subscriber)
        assert r.mailbox == (t.mailbox and not unsupported()) and r.zmq_on_demand == r.mailbox
        assert not tcp.route(name).mailbox and not tcp.route(name).zmq_on_demand  # across hosts: ZeroMQ only
    off = Endpoints.for_run(cfg.replace(pipeline={"mailbox": False}), "r1", tmp_path)
    assert not any(r.mailbox for r in off.routes())


def test_no_stage_imports_another_stage():
    """Constants (streams, ids, shapes) come from runtime/topics.py, never from a sibling stage."""
    stages = PROJECT_ROOT / "runtime" / "stages"
    shared = {"edgert.runtime.stages.source"}  # the camera sources' base class
    for path in stages.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgert.runtime.stages."):
                assert node.module in shared, f"{path.name} imports {node.module}"


# -- the ZeroMQ copy only while someone subscribes ----------------------------------------------

def _until(cond, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


@needs_mailbox
@pytest.mark.parametrize("transport", ["ipc", "inproc"])
def test_a_mailbox_topic_goes_out_on_zeromq_only_while_subscribed(tmp_path, run_id, transport):
    cfg = _small(mode="threads" if transport == "inproc" else "processes")
    ep = Endpoints.for_run(cfg, run_id, tmp_path)
    assert ep.route("tensors").zmq_on_demand
    mb = Mailbox.create(run_id, "tensors")
    ctx = zmq.Context()
    pub = publisher(ctx, ep, "tensors")
    try:
        for _ in range(5):
            pub.send(b"nobody")
        assert (pub.zmq_sent, pub.zmq_skipped) == (0, 5)  # the mailbox has it; ZeroMQ was not asked
        assert not pub.listening

        sub = confirmed_subscribers(ctx, ep, ["tensors"], 10.0)["tensors"]  # `edgert echo` attaching
        got: list[bytes] = []

        def received() -> bool:
            pub.send(b"hello")
            if sub.poll(10):
                got.append(sub.recv())
            return bool(got)
        assert _until(received), "the subscriber never got a message"
        assert got[0] == b"hello" and pub.zmq_sent > 0 and pub.listening

        sub.close(linger=0)  # the last subscriber leaves: sending stops again
        assert _until(lambda: not pub.listening)
        before = pub.zmq_sent
        pub.send(b"gone")
        assert pub.zmq_sent == before and pub.zmq_skipped >= 6
    finally:
        pub.close()
        ctx.term()
        mb.unlink()


def test_a_topic_without_a_mailbox_always_goes_out_on_zeromq(tmp_path, run_id):
    ep = Endpoints.for_run(_small(mailbox=False), run_id, tmp_path)
    ctx = zmq.Context()
    pub = publisher(ctx, ep, "tensors")
    try:
        pub.send(b"x")
        assert pub.listening and (pub.zmq_sent, pub.zmq_skipped) == (1, 0)
    finally:
        pub.close()
        ctx.term()


# -- the supervisor's lifecycle -----------------------------------------------------------------

def test_lifecycle_start_poll_stop_makes_the_tables_pools_and_removes_them():
    from edgert.runtime.signing import approved_manifest
    from edgert.runtime.supervisor import Supervisor

    cfg = _small(mode="threads")
    sup = Supervisor(cfg, duration_s=0)
    assert sup.phase == "new" and sup.pools == [] and sup.counters()["capture"]["frames"] == 0
    sup.start()
    try:
        assert sup.phase == "running" and sup.running.is_set()
        spec = approved_manifest(cfg).inputs[0]
        for name in STREAMS:  # one pool per declared stream, sized by its layout in this run
            want = layout(name, cfg, spec)
            pool = FramePool.attach(sup.run_id, name)
            assert (pool.n_slots, pool.slot_bytes) == (want.slots, want.slot_bytes)
            pool.close()
        boxes = sorted(m.segment.name for m in sup.mailboxes)
        assert boxes == sorted(shm.segment_name(sup.run_id, f"mbox-{r.topic}")
                               for r in sup.endpoints.routes() if r.mailbox)
        assert _until(lambda: sup.poll() and sup.counters()["control"]["frames"] >= 3, 60.0)
        assert sup.stage_thread_id("capture") is not None and sup.stage_pid("capture") is None
        sup.request_stop("test done")
        assert not sup.poll()
    finally:
        s = sup.stop()
    assert sup.phase == "stopped" and not sup.running.is_set()
    assert s["exit_reason"] == "test done" and s["stages"]["control"]["frames"] >= 3
    assert s["leaked_segments"] == [] and shm.list_segments(sup.run_id) == []
    assert sup.stop()["exit_reason"] == "test done"  # again: nothing left to do, same summary
    with pytest.raises(RuntimeError, match="a Supervisor runs once"):
        sup.start()


def test_a_failed_start_leaves_nothing_behind(monkeypatch):
    from edgert.runtime import supervisor as sv

    sup = sv.Supervisor(_small(mode="threads"))
    monkeypatch.setattr(sup, "_wait_ready", lambda: (_ for _ in ()).throw(sv.StageFailed("stage x failed")))
    with pytest.raises(sv.StageFailed, match="stage x failed"):
        sup.start()
    assert sup.phase == "stopped" and shm.list_segments(sup.run_id) == []
    assert sup.run_dir is not None and not sup.run_dir.exists()


def test_echo_attaching_to_a_topic_nobody_else_reads_gets_its_messages():
    """`tensors` has only the mailbox's reader (infer): its ZeroMQ copy starts when echo subscribes."""
    from edgert.runtime.supervisor import Supervisor

    sup = Supervisor(_small(mode="processes"), duration_s=0)
    sup.start()
    try:
        echo = subprocess.Popen([sys.executable, "-m", "edgert.runtime.cli", "echo", "tensors", "--run", sup.run_id,
                                 "--count", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT)
        end = time.monotonic() + 60
        while echo.poll() is None and time.monotonic() < end:
            sup.poll()
        out, err = echo.communicate(timeout=10)
    finally:
        echo.kill()
        sup.stop()
    msgs = [json.loads(line) for line in out.splitlines()]
    assert echo.returncode == 0 and len(msgs) == 3, err
    assert all(m["frame_id"] > 0 for m in msgs)


def test_frame_output_publishes_descriptors_that_frame_input_accepts(run_id):
    """One descriptor builder (FrameOutput) and one reader (FrameInput), on a real pool and socket."""
    import threading

    from edgert.runtime.frameinput import FrameInput, FrameOutput
    from edgert.runtime.stage import Stage, StageContext
    from edgert.runtime.topics import STREAM_IDS
    from edgert.runtime.wire import Stamp

    cfg = _small(mailbox=False).replace(camera={"width": 64, "height": 32})
    lay = layout("camera", cfg)
    pool = FramePool.create(run_id, "camera", lay.slots, lay.slot_bytes)
    ctx = zmq.Context()
    ep = Endpoints("inproc", run_id)
    writer, reader = (Stage(StageContext(n, cfg, run_id, ep, ctx, threading.Event())) for n in ("capture", "preprocess"))
    try:
        out = FrameOutput(writer, "camera", lay)
        inp = FrameInput.of(reader, "camera", lay)
        got = None
        for i in range(1, 200):  # until the subscription is in place (inproc: a moment)
            slot, view = out.acquire()
            view[:] = i
            out.publish(slot, frame_id=i)
            got = inp.next(20)
            if got is not None:
                break
        assert got is not None, "no frame came through"
        rec, frame = got
        assert int(rec["stream"]) == STREAM_IDS["camera"] and frame.shape == lay.shape == (32, 64, 3)
        assert (frame == int(rec["frame_id"])).all() and int(rec["stamps"][Stamp.CAPTURE]) > 0
        assert inp.still_valid(rec) and reader.rejected == 0
    finally:
        writer.teardown()
        reader.teardown()
        ctx.term()
        pool.close()
        pool.unlink()
