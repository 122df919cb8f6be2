"""Commands on CAN: frame layout, CRC-8 and alive counter, and the control stage on a virtual bus."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import can
import pytest
from conftest import StageHarness
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.runtime import canbus, wire
from edgert.runtime.config import ConfigError, from_dict
from edgert.runtime.e2e import Verdict
from edgert.runtime.stages.control import ControlStage
from edgert.runtime.transport import publisher
from edgert.runtime.wire import MsgType, Stamp


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
    rec = wire.new_message(MsgType.RESULT)
    rec["n_values"], rec["values"][0] = 1, 0.2
    first = None
    end = time.monotonic() + 30.0  # until the stage is set up and connected (a busy machine): its first frame
    while first is None and time.monotonic() < end:
        h.send_start()  # again each time: one sent before the stage subscribed is lost
        rec["frame_id"] += 1
        rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        pub.send(wire.encode(rec))
        first = rx.recv(1 / 30)
    assert first is not None, "the control stage sent nothing on the bus"
    for _ in range(9):
        rec["frame_id"] += 1
        rec["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        pub.send(wire.encode(rec))
        time.sleep(1 / 30)
    time.sleep(0.05)
    pub.close(0)
    h.close()  # the stage stops: its last frame is the SHUTDOWN takeover
    checker = canbus.CanChecker(cfg.control.can_id)
    got = [checker.check(bytes(first.data))]
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


# -- the frame's description (DBC) and the receiver (actuator side) ------------------------------

def _dbc():
    cantools = pytest.importorskip("cantools", reason="the DBC check needs cantools (pip install -e .[test])")
    return cantools.database.load_file(str(canbus.DBC_PATH))


@settings(max_examples=300, deadline=None)
@given(steer=st.floats(-40, 40), accel=st.floats(-40, 40), flags=st.integers(0, 3), reason=st.integers(0, 15),
       seq=st.integers(0, 2**40), age=st.integers(-10**9, 10**9))
def test_dbc_describes_the_encoder_exactly(steer, accel, flags, reason, seq, age):
    """cantools reads every real frame as runtime/canbus.py means it, and writes the same bytes back."""
    db = _dbc()
    data = canbus.encode(steer, accel, flags, reason, seq, age)
    sig = db.decode_message(canbus.DEFAULT_ID, data, decode_choices=False)
    ours = canbus.decode(data)
    assert sig["SteeringAngle"] == pytest.approx(ours.steer_rad, abs=1e-9)
    assert sig["Acceleration"] == pytest.approx(ours.accel_mps2, abs=1e-9)
    assert (sig["Takeover"], sig["FailSafe"]) == (ours.flags & 1, ours.flags >> 1)
    assert (sig["TakeoverReason"], sig["AliveCounter"], sig["FrameAge"]) == (ours.reason, ours.counter, ours.age_ms)
    assert sig["CRC"] == data[7]
    assert db.encode_message(canbus.DEFAULT_ID, sig) == data


def test_dbc_message_matches_the_defaults():
    msg = _dbc().get_message_by_name("EDGERT_Command")
    assert (msg.frame_id, msg.length, msg.is_extended_frame) == (canbus.DEFAULT_ID, 8, False)
    assert msg.cycle_time == 33  # one command per frame period at 30 fps
    reasons = msg.get_signal_by_name("TakeoverReason").choices
    assert {int(k): str(v) for k, v in reasons.items()} == {r.value: r.name for r in wire.TakeoverReason}
    assert canbus.DBC_PATH.name in (Path(__file__).parents[1] / "pyproject.toml").read_text()  # it ships


def test_an_age_from_a_future_stamp_is_zero_not_a_crash():
    """A negative age (a capture stamp after the send) must not raise inside the sender."""
    assert canbus.decode(canbus.encode(0.1, 0.0, 0, 0, 1, -5_000_000)).age_ms == 0


MS = 1_000_000
T0 = 10**12


def _frame(counter: int, age_ms: int = 10, flags: int = 0, steer: float = 0.1) -> bytes:
    return canbus.encode(steer, -2.0 if flags else 0.0, flags, 1 if flags else 0, counter, age_ms * MS)


def test_receiver_takes_over_within_one_timeout_of_the_last_valid_frame():
    rx = canbus.CanReceiver(timeout_ns=66 * MS)
    assert not rx.lost(T0) and not rx.takeover(T0)  # nothing received: not engaged, nothing to time out
    t = T0
    for seq in range(1, 11):  # a command every 33 ms, its frame 10 ms old when sent
        t += 33 * MS
        assert rx.receive(_frame(seq), t)[1] is Verdict.OK
        assert not rx.takeover(t)
    last = t
    assert not rx.lost(last + 56 * MS)  # the frame behind it is 66 ms old: still within the deadline
    assert rx.lost(last + 56 * MS + 1) and rx.takeover(last + 56 * MS + 1)
    assert rx.lost_since_ns == last + 56 * MS and rx.counters.timeouts == 1
    assert rx.receive(_frame(11), last + 500 * MS)[1] is Verdict.OK  # a fresh valid frame re-engages
    assert not rx.lost(last + 500 * MS) and rx.lost_since_ns == 0


def test_receiver_holds_a_failsafe_frame_one_timeout_and_says_takeover():
    rx = canbus.CanReceiver(timeout_ns=66 * MS)
    rx.receive(_frame(1, age_ms=0, flags=3), T0)
    assert rx.takeover(T0) and not rx.lost(T0 + 66 * MS) and rx.lost(T0 + 66 * MS + 1)


def test_receiver_refuses_corrupt_repeated_stale_and_out_of_sequence_frames():
    rx = canbus.CanReceiver(timeout_ns=66 * MS)
    assert rx.receive(_frame(1), T0)[1] is Verdict.OK
    bad = bytearray(_frame(2))
    bad[0] ^= 1
    assert rx.receive(bytes(bad), T0)[1] is Verdict.CORRUPTED
    assert rx.receive(_frame(1), T0)[1] is Verdict.REPEATED
    assert rx.receive(_frame(2, age_ms=67), T0)[1] is Verdict.STALE  # its frame is older than the timeout
    assert rx.receive(_frame(3, age_ms=255, flags=0), T0)[1] is Verdict.STALE  # saturated: any age
    assert rx.receive(_frame(10), T0)[1] is Verdict.SYNC  # a jump of 7: not in sequence, not yet trusted
    assert rx.receive(_frame(11), T0)[1] is Verdict.OK  # the next one in sequence re-establishes it
    c = rx.counters
    assert (c.ok, c.corrupted, c.repeated, c.stale, c.unsynced, c.resyncs) == (2, 1, 1, 2, 1, 1)


_FRAMES = st.one_of(
    st.tuples(st.just("frame"), st.integers(0, 15), st.integers(0, 255), st.integers(0, 3)),  # CRC-valid
    st.tuples(st.just("junk"), st.binary(min_size=0, max_size=9), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(_FRAMES, st.integers(0, 200 * MS)), max_size=40),
       start=st.integers(0, 15), timeout_ms=st.integers(20, 250))
def test_receiver_never_holds_a_command_past_its_timeout_and_follows_a_genuine_stream(events, start, timeout_ms):
    """Whatever CRC-valid or broken frames arrive, the receiver never acts on a command longer than one
    timeout after it arrived, and a genuine stream after them is followed within SYNC_FRAMES frames."""
    timeout = timeout_ms * MS
    rx = canbus.CanReceiver(timeout_ns=timeout)
    t = T0
    for (kind, a, age, flags), dt in events:
        t += dt
        data = canbus.encode(0.1, 0.0, flags, 0, a, age * MS) if kind == "frame" else a
        rx.receive(data, t)
        if rx.valid_until_ns:
            assert rx.valid_until_ns - rx.last_valid_ns <= timeout
        assert rx.lost(t) == bool(rx.valid_until_ns and t > rx.valid_until_ns)
        assert not rx.lost(t) or t - rx.last_valid_ns > 0
    verdicts = []
    for i in range(canbus.SYNC_FRAMES + 3):
        t += 33 * MS
        verdicts.append(rx.receive(_frame((start + i) % 16, age_ms=min(5, timeout_ms - 1)), t)[1])
    first = verdicts.index(Verdict.OK)
    assert first <= canbus.SYNC_FRAMES and set(verdicts[first:]) == {Verdict.OK}
    assert not rx.takeover(t)
