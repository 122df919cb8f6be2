"""The network transport is authenticated or refused (issue 17, point 3), over real sockets and
processes: message-size limits per topic, CURVE peers without the run's keys dropped and counted,
a squatter on a restarting stage's port unheard, and heartbeats only from the started stages."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth
from conftest import SHARED_MACHINE_CONTROL, free_port_block
from zmq.utils.monitor import recv_monitor_message

from edgert.runtime import curve, transport, wire
from edgert.runtime import supervisor as supervisor_mod
from edgert.runtime.config import DEFAULT_CONFIG, load
from edgert.runtime.supervisor import ProcessHandle, Supervisor
from edgert.runtime.topics import TOPICS
from edgert.runtime.transport import Endpoints, publisher, subscriber
from edgert.runtime.wire import MsgType, ResultStatus, StageState, Stamp

MiB = 1 << 20
SPAWN = mp.get_context("spawn")


def _endpoints(tmp: Path, kind: str, run_id: str = "t") -> Endpoints:
    """ipc:// in tmp, or tcp:// on 127.0.0.1 with CURVE keys made in tmp (as the supervisor makes them)."""
    if kind == "ipc":
        return Endpoints("ipc", run_id, run_dir=str(tmp))
    keys = curve.make_keys(tmp)
    return Endpoints("tcp", run_id, run_dir=str(tmp), tcp_base_port=free_port_block(len(TOPICS)), curve_dir=str(keys))


def _foreign_client(sock: zmq.Socket, ep: Endpoints) -> None:
    """Valid CURVE keys, just not this run's; the run's server public key (the worst case: it knows it)."""
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.curve_serverkey, _ = zmq.auth.load_certificate(str(Path(ep.curve_dir) / "server.key_secret"))


def test_plain_tcp_on_loopback_runs_with_a_warning_naming_the_fix(tmp_path, caplog):
    plain = load(DEFAULT_CONFIG).replace(pipeline={"transport": "tcp"})
    assert not Endpoints.for_run(plain, "t", tmp_path).curve_dir
    assert "pipeline.curve is off: any local process can connect" in caplog.text
    assert "set pipeline.curve = true" in caplog.text
    caplog.clear()
    with_curve = load(DEFAULT_CONFIG).replace(pipeline={"transport": "tcp", "curve": True})
    assert Endpoints.for_run(with_curve, "t", tmp_path).curve_dir and "pipeline.curve" not in caplog.text


# -- maximum message size ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ipc", "tcp+curve"])
def test_every_socket_refuses_messages_larger_than_its_topic_carries(tmp_path, kind):
    ep = _endpoints(tmp_path, kind)
    ctx = zmq.Context()
    try:
        for name, t in TOPICS.items():
            sub, pub = subscriber(ctx, ep, name), publisher(ctx, ep, name)
            layout = wire.LAYOUTS[t.msg].itemsize
            if kind == "ipc":  # exactly the topic's wire layout; a PUB takes only subscriptions
                assert sub.getsockopt(zmq.MAXMSGSIZE) == layout, name
                assert pub.sock.getsockopt(zmq.MAXMSGSIZE) == max(10, 25), name
            else:  # the layout in its CURVE box, not below the CURVE handshake's INITIATE
                assert sub.getsockopt(zmq.MAXMSGSIZE) == max(layout + 33, 276) < 1024, name
                assert pub.sock.getsockopt(zmq.MAXMSGSIZE) == 276, name
            sub.close(0)
            pub.close(0)
        assert transport.max_message_size("results", zmq.SUB, False) == wire.LAYOUTS[MsgType.RESULT].itemsize == 160
    finally:
        ctx.destroy(linger=0)


def _vm_hwm_bytes() -> int:
    """This process's peak resident memory."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _receiver(ep: Endpoints, events, stop) -> None:
    """The supervisor's end of the heartbeat topic, in a process of its own (its peak memory is
    the measure): reports its peak before, every message's size, and every peer disconnected."""
    ctx = zmq.Context()
    gate = curve.start_authenticator(ctx, ep.curve_dir) if ep.curve_dir else None
    sock = subscriber(ctx, ep, "heartbeat")
    mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(mon, zmq.POLLIN)
    events.put(("ready", _vm_hwm_bytes()))
    biggest = 0
    end = time.monotonic() + 150
    while not stop.is_set() and time.monotonic() < end:
        for s, _ in poller.poll(100):
            if s is sock:
                n = len(sock.recv())
                biggest = max(biggest, n)
                events.put(("message", n))
            else:
                recv_monitor_message(mon)
                events.put(("disconnected", 0))
    events.put(("done", _vm_hwm_bytes(), biggest))
    sock.disable_monitor()
    mon.close(0)
    sock.close(0)
    if gate is not None:
        gate.stop()
    ctx.term()


def _next(events, kind: str, timeout_s: float) -> tuple:
    """The next event of `kind`, skipping others; None if none came in time."""
    end = time.monotonic() + timeout_s
    while (left := end - time.monotonic()) > 0:
        try:
            ev = events.get(timeout=left)
        except queue.Empty:
            return None
        if ev[0] == kind:
            return ev
    return None


def _probe_until_heard(pub: zmq.Socket, events, timeout_s: float = 60) -> bool:
    """Send small messages until the receiver has one (the PUB sends only once it has the subscription)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        pub.send(b"probe")
        if _next(events, "message", 0.1):
            return True
    return False


@pytest.mark.parametrize("kind", ["ipc", "tcp+curve"])
def test_a_100_MiB_message_is_refused_without_the_receiver_growing(tmp_path, kind):
    """A peer that may connect (on tcp: with the run's own CURVE keys) sends one real 100 MiB
    message: the receiver disconnects it on the size field alone, takes nothing and stays small;
    the peer reconnects and small messages flow again."""
    ep = _endpoints(tmp_path, kind)
    events, stop = SPAWN.Queue(), SPAWN.Event()
    proc = SPAWN.Process(target=_receiver, args=(ep, events, stop), daemon=True)
    proc.start()
    ctx = zmq.Context()
    try:
        ready = _next(events, "ready", 120)
        assert ready, "the receiver did not start"
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        if ep.curve_dir:
            curve.as_client(pub, ep.curve_dir)
        pub.connect(ep("heartbeat"))
        assert _probe_until_heard(pub, events), "the receiver never heard the small probes"
        pub.send(b"\0" * (100 * MiB))
        assert _next(events, "disconnected", 120), "the 100 MiB message was taken in: the peer was not disconnected"
        assert _probe_until_heard(pub, events), "after refusing the big message the socket took nothing more"
        stop.set()
        done = _next(events, "done", 60)
        assert done, "the receiver did not report"
        _, peak_after, biggest = done
        assert biggest < 1024, f"the receiver took a {biggest}-byte message"
        grown = peak_after - ready[1]
        assert grown < 16 * MiB, f"the receiver's peak memory grew by {grown / MiB:.1f} MiB"
        pub.close(0)
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        ctx.destroy(linger=0)


# -- CURVE: outsiders dropped and counted, squatters unheard ---------------------------------------

def test_an_unauthenticated_peer_is_dropped_and_counted(tmp_path):
    """Real CURVE on 127.0.0.1, as the supervisor sets it up: the run's stage gets its heartbeats
    through; a peer with other CURVE keys and one without CURVE get nothing through, and the
    refusals are counted where the supervisor reports them (summary()["transport"])."""
    ep = _endpoints(tmp_path, "tcp+curve")
    cfg = load(DEFAULT_CONFIG).replace(pipeline={"transport": "tcp", "curve": True})
    sup = Supervisor(cfg)
    sup.telemetry = None
    ctx = zmq.Context()
    sup.auth = curve.start_authenticator(ctx, ep.curve_dir)
    try:
        sock = subscriber(ctx, ep, "heartbeat")
        insider = publisher(ctx, ep, "heartbeat")  # a stage of this run: the run's client keys
        outsiders = {b"foreign%d" % i: ctx.socket(zmq.PUB) for i in range(3)}  # each with keys of its own
        for s in outsiders.values():
            _foreign_client(s, ep)
        outsiders[b"plain"] = ctx.socket(zmq.PUB)  # no CURVE at all
        for s in outsiders.values():
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep("heartbeat"))
        got: dict[bytes, int] = {}
        end = time.monotonic() + 60
        while time.monotonic() < end and (got.get(b"insider", 0) < 20 or sup.auth.denied < 3):
            insider.send(b"insider")
            for tag, s in outsiders.items():
                s.send(tag)
            while sock.poll(10):
                msg = sock.recv()
                got[msg] = got.get(msg, 0) + 1
        assert got.get(b"insider", 0) >= 20, got  # the channel works for the run's own keys
        assert set(got) == {b"insider"}, got  # nothing from the others, while they kept trying
        refused = sup.summary()["transport"]
        assert refused["denied_peers"] == sup.auth.denied >= 3, refused  # one per CURVE outsider
        for s in (sock, *outsiders.values()):
            s.close(0)
        insider.close()
    finally:
        sup.auth.stop()
        ctx.destroy(linger=0)


def _forged_result() -> bytes:
    r = wire.new_message(MsgType.RESULT)
    r["frame_id"], r["status"], r["n_values"] = 1, int(ResultStatus.OK), 1
    r["values"][0] = 0.5  # steer hard
    r["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
    return wire.encode(r)


def test_a_squatter_on_a_restarting_stages_port_feeds_control_nothing(tmp_path):
    """infer is restarting and its results port is free; another process binds it first and
    publishes well-formed results. Control's subscriber (the run's CURVE client) fails every
    handshake with it, since the squatter lacks the run's server secret key, and hears nothing;
    once the real infer binds, its results arrive."""
    ep = _endpoints(tmp_path, "tcp+curve")
    ctx = zmq.Context()
    try:
        squatter = ctx.socket(zmq.PUB)
        squatter.setsockopt(zmq.LINGER, 0)
        public, secret = zmq.curve_keypair()  # its own server keys: it cannot have the run's secret one
        squatter.curve_server, squatter.curve_publickey, squatter.curve_secretkey = True, public, secret
        squatter.bind(ep("results"))
        control = subscriber(ctx, ep, "results")
        mon = control.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                          | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        forged, failed, heard = _forged_result(), 0, 0
        end = time.monotonic() + 60
        while failed < 3 and time.monotonic() < end:  # control retries; each retry fails again
            squatter.send(forged)
            if control.poll(10):
                control.recv()
                heard += 1
            while mon.poll(0):
                ev = recv_monitor_message(mon)
                assert ev["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED, "control completed a handshake with the squatter"
                failed += 1
        assert failed >= 3 and heard == 0, (failed, heard)
        squatter.close(0)
        infer = None
        end = time.monotonic() + 60
        while time.monotonic() < end:  # the port is released asynchronously; the real infer binds it
            try:
                infer = publisher(ctx, ep, "results")
                break
            except zmq.ZMQError:
                time.sleep(0.1)
        assert infer is not None, "the real infer could not bind its port"
        genuine = _forged_result()
        while time.monotonic() < end and not control.poll(10):
            infer.send(genuine)
        assert control.poll(0) and control.recv() == genuine
        control.disable_monitor()
        for s in (mon, control):
            s.close(0)
        infer.close()
    finally:
        ctx.destroy(linger=0)


# -- heartbeats only from the started stages; a flood holds nothing --------------------------------

def _heartbeat(stage: bytes, pid: int, frames: int) -> bytes:
    h = wire.new_message(MsgType.HEARTBEAT)
    h["stage"], h["pid"], h["state"], h["frames"] = stage, pid, int(StageState.RUNNING), frames
    return wire.encode(h)


def _stage(ep: Endpoints, stop) -> None:
    """A stage process as the supervisor would have started it: heartbeats with its pid, 20 a second."""
    ctx = zmq.Context()
    pub = publisher(ctx, ep, "heartbeat")
    frames = 0
    while not stop.wait(0.05):
        frames += 1
        pub.send(_heartbeat(b"control", os.getpid(), frames))
    pub.close()
    ctx.term()


def _flood(ep: Endpoints, flooding, over, stop) -> None:
    """Another local process, which can reach the socket, sends as fast as it can: heartbeats as
    control (its own pid, absurd counters), as a stage that does not exist, and garbage. It gives
    up after 90 s, so a supervisor held by the flood is seen, not waited on forever."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(ep("heartbeat"))
    msgs = [_heartbeat(b"control", os.getpid(), 10**12), _heartbeat(b"ghost", os.getpid(), 1), b"EDRT" + bytes(84)]
    flooding.set()
    end = time.monotonic() + 90
    while not stop.is_set() and time.monotonic() < end:
        for m in msgs * 100:
            pub.send(m)
    over.set()
    pub.close(0)
    ctx.term()


def test_a_heartbeat_flood_from_an_unknown_process_holds_nothing_and_counts_for_nothing(tmp_path):
    cfg = load(DEFAULT_CONFIG)
    sup = Supervisor(cfg)
    sup.telemetry = None
    sup.endpoints = ep = Endpoints("ipc", sup.run_id, run_dir=str(tmp_path))
    ctx = zmq.Context()
    sup.heartbeats = subscriber(ctx, ep, "heartbeat")
    stop, flooding, over = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    stage = SPAWN.Process(target=_stage, args=(ep, stop), daemon=True)
    flood = SPAWN.Process(target=_flood, args=(ep, flooding, over, stop), daemon=True)
    handle = ProcessHandle("control", tmp_path, sup.run_id)
    handle.proc = stage  # the process this supervisor started as control (a real one)
    sup.handles = {"control": handle}
    try:
        flood.start()
        assert flooding.wait(120), "the flooder did not start"
        stage.start()
        st = sup.status["control"]
        calls, seen = 0, set()
        end = time.monotonic() + 120
        batch = supervisor_mod.HEARTBEAT_BATCH * len(sup.status)  # what one poll may read, stages' own included
        while time.monotonic() < end and len(seen) < 10:
            before = getattr(sup, "foreign_heartbeats", 0)
            sup._poll_heartbeats(20)
            calls += 1
            assert sup.foreign_heartbeats - before <= batch  # each poll returns after a bounded batch
            assert not over.is_set(), (f"the supervisor's loop was held by the flood: {calls} poll(s) returned "
                                       "in its 90 s")
            if st.counters:
                seen.add(st.counters["frames"])
        assert len(seen) >= 10, f"the started stage's heartbeats were crowded out: {sorted(seen)}"
        assert st.pid == stage.pid and max(seen) < 10**6, (st.pid, stage.pid, max(seen))  # never the forged ones
        assert sup.foreign_heartbeats >= 1000  # the flood did reach the socket, and was counted
        assert sup.summary()["transport"]["foreign_heartbeats"] == sup.foreign_heartbeats
        assert sup.status["capture"].counters is None  # not started: no heartbeat can speak for it
        assert calls >= 10
    finally:
        stop.set()
        for p in (stage, flood):
            p.join(30)
            if p.is_alive():
                p.kill()
        sup.heartbeats.close(0)
        ctx.destroy(linger=0)


def test_a_curve_pipeline_reports_the_outsiders_it_refused():
    """The whole pipeline over tcp:// with CURVE on 127.0.0.1: while it runs, a peer with other
    CURVE keys sends heartbeats as control to the supervisor's socket. None is taken; the run's
    summary counts the refused peer; the stages run on undisturbed."""
    cfg = load(DEFAULT_CONFIG).replace(pipeline={"transport": "tcp", "curve": True,
                                                 "tcp_base_port": free_port_block(len(TOPICS))},
                                       control=SHARED_MACHINE_CONTROL)
    sup = Supervisor(cfg, duration_s=4.0, mode="processes")
    sent = threading.Event()

    def outsider() -> None:
        while not sup.running.is_set():
            time.sleep(0.05)
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        _foreign_client(pub, sup.endpoints)
        pub.connect(sup.endpoints("heartbeat"))
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pub.send(_heartbeat(b"control", os.getpid(), 10**12))
            time.sleep(0.001)
        sent.set()
        pub.close(0)
        ctx.term()

    t = threading.Thread(target=outsider, daemon=True)
    t.start()
    s = sup.run()
    t.join(10)
    assert sent.is_set(), "the outsider thread failed"
    assert s["transport"]["denied_peers"] >= 1, s["transport"]
    assert s["stages"]["control"]["frames"] < 10**6, s["stages"]["control"]  # its counters were never taken
    assert s["exit_reason"].startswith("duration") and s["frames"] > 0, s
    assert all(st["restarts"] == 0 for st in s["stages"].values()), s["stages"]
