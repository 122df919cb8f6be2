"""Shared fixtures: tiny real ONNX models with manifests, and a harness to run one stage on real sockets."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import onnx
import pytest
import zmq
from hypothesis import settings
from onnx import TensorProto, helper

from edgert.runtime import config as config_mod
from edgert.runtime import shm, wire
from edgert.runtime.stage import StageContext, run_stage
from edgert.runtime.transport import Endpoints, publisher, subscriber
from edgert.runtime.wire import MsgType, StageState

# CI (CI=true, as .ci/run's callers set it) draws the same Hypothesis examples on every run (derandomize:
# seeded by each test's name), so a red run is reproducible, not a new draw; a developer's run explores
# new examples and keeps failing ones in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

IR_VERSION = 10  # onnx >= 1.18 writes IR 11+ by default, newer than some onnxruntime releases read


def make_steer_model(path: Path, in_shape=(1, 3, 8, 8), weight: float = 0.5, op: str = "ReduceMean") -> None:
    """steer = weight * mean(image) (or NaN for op='NaN'): a real graph with a known answer."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("steer", TensorProto.FLOAT, [1, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [], [weight])
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
             helper.make_node("Reshape", ["m", "shape"], ["m2"]),
             helper.make_node("Mul", ["m2", "w"], ["y0"])]
    inits = [w, helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1])]
    if op == "NaN":  # sqrt(-1 - |y0|) is NaN for every input
        inits.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
        nodes += [helper.make_node("Abs", ["y0"], ["a"]), helper.make_node("Add", ["a", "one"], ["b"]),
                  helper.make_node("Neg", ["b"], ["c"]), helper.make_node("Sqrt", ["c"], ["steer"])]
    else:
        nodes[-1] = helper.make_node("Mul", ["m2", "w"], ["steer"])
    graph = helper.make_graph(nodes, "steer", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def write_manifest(model_dir: Path, in_shape=(1, 3, 8, 8), input_name: str = "image", sha: str | None = None,
                   src_size=(64, 48)) -> None:
    data = (model_dir / "model.onnx").read_bytes()
    sha = sha or hashlib.sha256(data).hexdigest()
    shape = ", ".join(map(str, in_shape))
    (model_dir / "manifest.toml").write_text(f"""
[model]
name = "tiny"
version = "0.0.1"
file = "model.onnx"
sha256 = "{sha}"
markets = ["EU"]

[[inputs]]
name = "{input_name}"
shape = [{shape}]
dtype = "float32"

[[outputs]]
name = "steer"
shape = [1, 1]
dtype = "float32"

[preprocess]
src_format = "bgr"
out_width = {in_shape[3]}
out_height = {in_shape[2]}
resize = "area"
color = "rgb"
layout = "nchw"
dtype = "float32"

[decoder]
kind = "steering"
output = "steer"
""")


# The closed-loop health tests (every frame through, nothing lost, no takeover but the planned
# stop) give control a roomier deadline than the default two frame periods (66.7 ms), as
# test_control does: the tests share 2 busy cores of a VM that, in 3 of 6 full runs of the
# seventh session, stalled every stage process for ~40 ms once, a real late frame that the
# fail-safe rightly handed over on; with a CPU-bound process beside them, 150 ms still saw
# DEADLINE takeovers and stale commands refused by the camera. The 66.7 ms deadline itself is
# tested with injected delays (test_control) and a stopped stage (test_pipeline's SIGSTOP test).
SHARED_MACHINE_CONTROL = {"deadline_ms": 500.0}

@pytest.fixture(autouse=True)
def _root_log_handlers():
    """A test that runs the CLI in-process points the root logger at pytest's captured stderr
    (runtime/logs.py); put the handlers back, or later tests log to a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    return d


@pytest.fixture
def run_id():
    """A fresh run id; whatever shared memory a test leaves under it is removed afterwards."""
    rid = shm.new_run_id()
    yield rid
    for name in shm.list_segments(rid):
        (shm.SHM_DIR / name).unlink(missing_ok=True)


def read_numbered(reader, proc, n: int, timeout_s: float = 120.0) -> list[int]:  # type: ignore[no-untyped-def]
    """Start `proc`, which sends 0..n-1 as 4-byte little-endian numbers, and take what `reader`
    (a LatestReader) gets of them until it has the last one; the sender is joined before returning.
    `timeout_s` only ends a test that would hang: how fast the sender starts and sends on a
    loaded machine is no part of any check, and a latest-only reader that falls behind skips
    (and counts) messages rather than losing the last one."""
    proc.start()
    got: list[int] = []
    deadline = time.monotonic() + timeout_s
    while (not got or got[-1] != n - 1) and time.monotonic() < deadline:
        msg = reader.recv(50)
        if msg is not None:
            got.append(int.from_bytes(msg, "little"))
    proc.join(30)
    return got


def all_accounted_for(got: list[int], skipped: int, n: int) -> bool:
    """A latest-only reader's guarantee, whatever the machine's load: what it took of 0..n-1 is in
    order, ends with the newest, and every message it did not take is counted as skipped."""
    return got == sorted(set(got)) and bool(got) and got[-1] == n - 1 and len(got) + skipped == n


class StageHarness:
    """Runs one real stage on a thread with inproc:// sockets, driven by the test."""

    def __init__(self, cfg: config_mod.PipelineConfig) -> None:
        self.cfg = cfg
        self.run_id = shm.new_run_id()
        self.zmq = zmq.Context()
        self.endpoints = Endpoints("inproc", self.run_id)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.code: int | None = None
        self.supervisor = publisher(self.zmq, self.endpoints, "supervisor")  # bound before the stage connects

    def send_start(self) -> None:
        """The supervisor's start signal (RUNNING), as the real one sends it once all stages are ready."""
        go = wire.new_message(MsgType.HEARTBEAT)
        go["stage"], go["state"] = b"supervisor", int(StageState.RUNNING)
        for _ in range(3):  # a few times, as the supervisor repeats it: one may precede the subscription
            self.supervisor.send(wire.encode(go))
            time.sleep(0.01)

    def start(self, stage_cls: type, ready_timeout_s: float = 120.0) -> None:
        """Start the stage and return once its setup is over (a heartbeat past STARTING: READY, or
        the periodic RUNNING ones should READY go out before this subscription is in place; or
        FAILED), so a start signal sent next finds its sockets open however slowly a loaded machine
        set it up. The bound only ends a test that would hang."""
        ctx = StageContext(stage_cls.name, self.cfg, self.run_id, self.endpoints, self.zmq, self.stop)
        self.stage = stage_cls(ctx)
        heartbeats = subscriber(self.zmq, self.endpoints, "heartbeat")  # bound before the stage connects

        def target() -> None:
            self.code = run_stage(self.stage)
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        try:
            deadline = time.monotonic() + ready_timeout_s
            while self.thread.is_alive() and time.monotonic() < deadline:
                if heartbeats.poll(50):
                    state = int(wire.decode(heartbeats.recv(), MsgType.HEARTBEAT)["state"])
                    if state != StageState.STARTING:
                        return
            assert not self.thread.is_alive(), f"{stage_cls.name} not set up within {ready_timeout_s} s"
        finally:
            heartbeats.close(0)

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(10)
        self.supervisor.close(0)
        self.zmq.term()
        for name in shm.list_segments(self.run_id):
            (shm.SHM_DIR / name).unlink(missing_ok=True)


def free_port_block(n: int) -> int:
    """A base port with n consecutive free loopback ports (tcp endpoints are base + topic index).

    Below the kernel's ephemeral range: a port free now but inside that range can be taken, before
    the stage binds it, as the source port of any outgoing connection (the run's own tcp connects)."""
    import random
    import socket
    from pathlib import Path

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        base = random.randint(10000, max(10001, low - n - 1))
        socks = []
        try:
            for port in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of loopback ports")


def wait_until(sup, cond, what: str = "a step", bound_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for `cond()` while `sup` runs: waits on the condition, not on a time, however loaded the
    machine; `bound_s` only ends a test that hangs, and a run that stopped early fails the step."""
    end = time.monotonic() + bound_s
    while not cond():
        assert time.monotonic() < end and not sup.stop_requested.is_set(), f"timed out waiting for {what}"
        time.sleep(0.05)


def run_scripted(sup, script, join_s: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    """`sup.run()` while `script()` drives the run from a thread (waiting on conditions, killing or
    unplugging things); the run is asked to stop as soon as the script returns or fails, so no test
    waits out a fixed duration. Returns the run's summary."""
    def body() -> None:
        try:
            script()
        finally:
            sup.stop_requested.set()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    s = sup.run()
    t.join(join_s)
    return s
