"""Commands on CAN: frame layout, CRC-8 and alive counter, and the control stage on a virtual bus."""

from __future__ import annotations

import time
import uuid

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import StageHarness
from runtime import canbus, wire
from runtime.config import ConfigError, from_dict
from runtime.stages.control import ControlStage
from runtime.transport import publisher
from runtime.wire import MsgType, Stamp


def test_crc_is_sae_j1850():
    assert canbus._CRC.checksum(b"123456789") == 0x4B  # the standard check value


@settings(max_examples=300, deadline=None)
@given(steer=st.floats(-0.6, 0.6), accel=st.floats(-5, 5), flags=st.integers(0, 3), reason=st.integers(0, 5),
       seq=st.integers(0, 2**40), age=st.integers(0, 10**9))
def test_round_trip(steer, accel, flags, reason, seq, age):
    cmd = canbus.decode(canbus.encode(steer, accel, flags, reason, seq, age))
    assert cmd.steer_rad == pytest.approx(steer, abs=5e-4) and cmd.accel_mps2 == pytest.approx(accel, abs=5e-4)
    assert (cmd.flags, cmd.reason, cmd.counter, cmd.age_ms) == (flags, reason, seq % 16, min(age // 10**6, 255))


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 7), xor=st.integers(1, 255))
def test_any_single_byte_corruption_rejected(pos, xor):
    data = bytearray(canbus.encode(0.1, -1.0, 3, 1, 7, 5_000_000))
    data[pos] ^= xor
    with pytest.raises(canbus.CanError, match="CRC"):
        canbus.decode(bytes(data))


def test_frame_for_another_id_fails_the_check():
    data = canbus.encode(0.1, 0.0, 0, 0, 1, 0, can_id=0x100)
    with pytest.raises(canbus.CanError):
        canbus.decode(data, can_id=0x101)  # the data id is part of the CRC: a frame cannot be mis-routed


def test_alive_counter_finds_loss_and_repetition():
    ch = canbus.CanChecker()
    for seq in (1, 2, 2, 5, 6):
        ch.check(canbus.encode(0.0, 0.0, 0, 0, seq, 0))
    assert (ch.ok, ch.repeated, ch.lost) == (4, 1, 2)


def test_config_requires_a_channel_and_a_standard_id():
    with pytest.raises(ConfigError, match="control.can_channel: required"):
        from_dict({"control": {"can_interface": "virtual"}})
    with pytest.raises(ConfigError, match="not a standard 11-bit CAN id"):
        from_dict({"control": {"can_interface": "virtual", "can_channel": "x", "can_id": 0x800}})


def test_control_stage_sends_checked_frames_on_a_virtual_bus(tiny_model):
    channel = f"edgert-test-{uuid.uuid4().hex[:8]}"
    cfg = from_dict({"infer": {"model": str(tiny_model)}, "control": {
        "can_interface": "virtual", "can_channel": channel, "deadline_ms": 250.0}})
    rx = can.Bus(interface="virtual", channel=channel)
    h = StageHarness(cfg)
    pub = publisher(h.zmq, h.endpoints, "results")
    h.start(ControlStage)
    time.sleep(0.4)
    h.send_start()
    rec = wire.new_message(MsgType.RESULT)
    rec["n_values"] = 1
    for i in range(10):
        rec["frame_id"], rec["values"][0] = i + 1, 0.2
        rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        pub.send(wire.encode(rec))
        time.sleep(1 / 30)
    time.sleep(0.05)
    pub.close(0)
    h.close()  # the stage stops: its last frame is the SHUTDOWN takeover
    checker = canbus.CanChecker(cfg.control.can_id)
    got = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end and (msg := rx.recv(0.2)) is not None:
        assert msg.arbitration_id == cfg.control.can_id and not msg.is_extended_id
        got.append(checker.check(bytes(msg.data)))
    rx.shutdown()
    assert h.code == 0
    assert len(got) >= 8 and checker.corrupted == checker.repeated == checker.lost == 0
    steers = [g.steer_rad for g in got if g.flags == 0]
    assert steers == sorted(steers) and 0 < steers[-1] <= 0.2 + 1e-3  # the rate-limited ramp toward 0.2
    assert got[-1].flags == 3 and got[-1].reason == wire.TakeoverReason.SHUTDOWN  # the last word on the bus


@pytest.fixture
def vcan_channel():
    """A SocketCAN vcan interface to test on: an existing one, or one made now (and removed after);
    skipped with the reason where the kernel or the permissions do not allow it."""
    import shutil
    import subprocess
    from pathlib import Path

    for dev in sorted(Path("/sys/class/net").glob("vcan*")):
        if (dev / "operstate").read_text().strip() in ("up", "unknown"):
            yield dev.name
            return
    if not shutil.which("ip"):
        pytest.skip("SocketCAN: no vcan interface up and no `ip` tool to create one")
    name = f"vcan{uuid.uuid4().int % 900 + 100}"
    add = subprocess.run(["ip", "link", "add", "dev", name, "type", "vcan"], capture_output=True, text=True)
    if add.returncode:
        pytest.skip(f"SocketCAN: cannot create a vcan interface here (`ip link add dev {name} type vcan`: "
                    f"{add.stderr.strip() or add.returncode}; needs the vcan kernel module and CAP_NET_ADMIN); "
                    "the virtual-bus tests cover the same frames")
    try:
        subprocess.run(["ip", "link", "set", "up", name], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


def test_command_frames_on_socketcan_vcan(vcan_channel):
    """The same E2E-protected frames through python-can's socketcan interface, on a kernel vcan bus."""
    channel = vcan_channel
    sink = canbus.CanSink("socketcan", channel)
    rx = can.Bus(interface="socketcan", channel=channel, receive_own_messages=False)
    try:
        for seq in range(1, 6):
            sink.send(0.01 * seq, -0.5, 0, 0, seq, 3_000_000)
        checker = canbus.CanChecker()
        got = [checker.check(bytes(m.data)) for m in iter(lambda: rx.recv(0.5), None)]
    finally:
        rx.shutdown()
        sink.close()
    assert [round(g.steer_rad, 3) for g in got] == [0.01, 0.02, 0.03, 0.04, 0.05]
    assert checker.ok == 5 and checker.corrupted == checker.lost == 0 and sink.errors == 0
