"""The actuator side of a hung control stage: a real control process, SIGSTOPped, and the
reference CAN receiver (runtime/canbus.py CanReceiver) on python-can's virtual bus must declare
the takeover by itself within one deadline of the last valid frame, and follow control's own
fail-safe frames once it runs again.

A python-can virtual bus lives inside one process, so the control process carries a gateway: a
thread that forwards every frame control puts on its bus over an ipc:// socket to this process,
which puts it on the receiver's virtual bus. A stopped process stops its gateway too, which is
what a hung ECU does to its bus: it goes quiet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import can
import zmq

from edgert.runtime import canbus, shm, wire
from edgert.runtime.config import from_dict
from edgert.runtime.transport import Endpoints, publisher
from edgert.runtime.wire import MsgType, StageState, Stamp, TakeoverReason

CHILD = r"""
import signal, sys, threading
import can, zmq
from edgert.runtime.config import PipelineConfig
from edgert.runtime.signals import set_on_signal
from edgert.runtime.stage import StageContext, run_stage
from edgert.runtime.stages.control import ControlStage
from edgert.runtime.transport import Endpoints

cfg_path, run_dir, run_id, gateway = sys.argv[1:5]
cfg = PipelineConfig.from_json(open(cfg_path).read())
stop = threading.Event()
set_on_signal(signal.SIGTERM, stop)
ctx = zmq.Context()
bus = can.Bus(interface="virtual", channel=cfg.control.can_channel)  # the control stage's CanSink joins it
out = ctx.socket(zmq.PUSH)
out.setsockopt(zmq.LINGER, 0)
out.connect(gateway)

def forward():
    while not stop.is_set():
        m = bus.recv(0.05)
        if m is not None:
            out.send_multipart([m.arbitration_id.to_bytes(2, "big"), bytes(m.data)])

threading.Thread(target=forward, daemon=True).start()
code = run_stage(ControlStage(StageContext("control", cfg, run_id, Endpoints("ipc", run_id, run_dir), ctx, stop)))
bus.shutdown()
out.close()
ctx.term()
sys.exit(code)
"""


def test_receiver_takes_over_within_one_deadline_of_a_sigstopped_control_stage(tiny_model, tmp_path):
    channel = f"edgert-rx-{uuid.uuid4().hex[:8]}"
    cfg = from_dict({"infer": {"model": str(tiny_model)},
                     "control": {"can_interface": "virtual", "can_channel": channel, "deadline_ms": 250.0}})
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "pipeline.json").write_text(cfg.to_json())
    run_id = shm.new_run_id()
    gateway = f"ipc://{run_dir}/can-gateway.sock"
    zctx = zmq.Context()
    ep = Endpoints("ipc", run_id, str(run_dir))
    results, supervisor = publisher(zctx, ep, "results"), publisher(zctx, ep, "supervisor")
    pull = zctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(gateway)
    tx = can.Bus(interface="virtual", channel=channel)  # the gateway's end of this side's bus
    rx_bus = can.Bus(interface="virtual", channel=channel)  # the actuator ECU's
    done = threading.Event()

    def gateway_in() -> None:
        while not done.is_set():
            if pull.poll(50):
                can_id, data = pull.recv_multipart()
                tx.send(can.Message(arbitration_id=int.from_bytes(can_id, "big"), data=data, is_extended_id=False))

    bridge = threading.Thread(target=gateway_in, daemon=True)
    bridge.start()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir / "pipeline.json"), str(run_dir), run_id, gateway],
                             env=env)
    receiver = canbus.CanReceiver(cfg.deadline_ns, cfg.control.can_id)
    go = wire.new_message(MsgType.HEARTBEAT)
    go["stage"], go["state"] = b"supervisor", int(StageState.RUNNING)
    res = wire.new_message(MsgType.RESULT)
    res["n_values"], res["values"][0] = 1, 0.1
    accepted: list[tuple[int, canbus.CanCommand]] = []

    def receive_for(seconds: float, results_too: bool, until) -> bool:  # type: ignore[no-untyped-def]
        """Pump: start signal and fresh results at 30 Hz (if asked), frames into the receiver; True once until()."""
        end = time.monotonic() + seconds
        next_result = 0.0
        while time.monotonic() < end:
            if results_too and time.monotonic() >= next_result:
                supervisor.send(wire.encode(go))
                res["frame_id"] += 1
                res["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
                results.send(wire.encode(res))
                next_result = time.monotonic() + 1 / 30
            m = rx_bus.recv(0.005)
            now = time.monotonic_ns()
            if m is not None and m.arbitration_id == cfg.control.can_id:
                cmd, verdict = receiver.receive(bytes(m.data), now)
                if verdict is canbus.Verdict.OK:
                    accepted.append((now, cmd))
            if until(now):
                return True
        return False

    try:
        # Engaged: model commands flowing (generous: the child imports and sets up on a busy machine).
        assert receive_for(120.0, True, lambda now: sum(1 for _, c in accepted if c.flags == 0) >= 10), \
            "the control process never sent 10 valid model frames"
        os.kill(child.pid, signal.SIGSTOP)  # control hangs: alive, silent
        assert receive_for(10.0, False, receiver.lost), "the receiver never declared the stream lost"
        assert child.poll() is None  # still there, still stopped: the takeover is the receiver's own
        assert receiver.takeover(time.monotonic_ns()) and receiver.counters.timeouts == 1
        # Within one deadline of the last valid frame, on the receiver's clock.
        assert 0 < receiver.lost_since_ns - receiver.last_valid_ns <= cfg.deadline_ns
        n_before = len(accepted)
        os.kill(child.pid, signal.SIGCONT)  # control runs again: its own watchdog hands over (DEADLINE)
        assert receive_for(10.0, False, lambda now: any(c.flags == 3 and c.reason == TakeoverReason.DEADLINE
                                                         for _, c in accepted[n_before:])), \
            "no DEADLINE fail-safe frame from control after it resumed"
        assert receiver.lost_since_ns == 0  # a fresh valid frame re-engaged the receiver
        assert receiver.counters.corrupted == 0
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.terminate()
        child.wait(30)
        done.set()
        bridge.join(5)
        for s in (results, supervisor):
            s.sock.close(0)
        pull.close(0)
        zctx.term()
        tx.shutdown()
        rx_bus.shutdown()
    assert child.returncode == 0
