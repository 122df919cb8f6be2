"""Wire format: round trips of every message, and rejection of every kind of malformed bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.runtime import wire
from edgert.runtime.wire import MsgType, WireError

u64 = st.integers(0, 2**64 - 1)
stamps = st.lists(st.integers(1, 2**63 - 1), min_size=wire.N_STAMPS, max_size=wire.N_STAMPS)
finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def _frame(slot: int, gen: int, fid: int, shape: list[int], dtype_code: int, st_: list[int]) -> np.ndarray:
    r = wire.new_message(MsgType.FRAME)
    r["stream"], r["slot"], r["generation"], r["frame_id"] = 1, slot, gen, fid
    r["dtype"], r["ndim"] = dtype_code, len(shape)
    r["shape"][: len(shape)] = shape
    r["stamps"][:] = st_
    return r


@settings(max_examples=200, deadline=None)
@given(slot=st.integers(0, 65535), gen=u64, fid=u64,
       shape=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4),
       dtype_code=st.sampled_from(sorted(wire.DTYPE_CODES)), st_=stamps)
def test_frame_round_trip(slot, gen, fid, shape, dtype_code, st_):
    buf = wire.encode(_frame(slot, gen, fid, shape, dtype_code, st_))
    rec = wire.decode(buf, MsgType.FRAME)
    assert (int(rec["slot"]), int(rec["generation"]), int(rec["frame_id"])) == (slot, gen, fid)
    assert [int(d) for d in rec["shape"][: len(shape)]] == shape
    assert [int(s) for s in rec["stamps"]] == st_


@settings(max_examples=200, deadline=None)
@given(seq=u64, fid=u64, steer=finite32, accel=finite32, flags=st.sampled_from([0, 1, 2, 3]),
       reason=st.sampled_from([int(r) for r in wire.TakeoverReason]), st_=stamps)
def test_command_round_trip(seq, fid, steer, accel, flags, reason, st_):
    r = wire.new_message(MsgType.COMMAND)
    r["seq"], r["frame_id"], r["steer"], r["accel"], r["flags"], r["reason"] = seq, fid, steer, accel, flags, reason
    r["stamps"][:] = st_
    rec = wire.decode(wire.encode(r), MsgType.COMMAND)
    assert int(rec["seq"]) == seq and float(rec["steer"]) == pytest.approx(steer)
    assert wire.to_dict(rec)["flags"] == flags


@settings(max_examples=100, deadline=None)
@given(values=st.lists(finite32, min_size=0, max_size=wire.MAX_VALUES), fid=u64, st_=stamps)
def test_result_round_trip(values, fid, st_):
    r = wire.new_message(MsgType.RESULT)
    r["frame_id"], r["n_values"] = fid, len(values)
    r["values"][: len(values)] = values
    r["stamps"][:] = st_
    rec = wire.decode(wire.encode(r))
    assert np.allclose(rec["values"][: len(values)], values)


def test_result_ok_with_nonfinite_values_rejected():
    r = wire.new_message(MsgType.RESULT)
    r["n_values"], r["values"][0] = 1, math.nan
    r["stamps"][:] = 1
    with pytest.raises(WireError, match="OK but carries NaN"):
        wire.decode(wire.encode(r))
    r["status"] = int(wire.ResultStatus.NONFINITE)  # said honestly, it is a valid message
    assert int(wire.decode(wire.encode(r))["status"]) == wire.ResultStatus.NONFINITE


def test_heartbeat_and_vehicle_round_trip():
    h = wire.new_message(MsgType.HEARTBEAT)
    h["stage"], h["state"], h["frames"] = b"infer", int(wire.StageState.RUNNING), 42
    d = wire.to_dict(wire.decode(wire.encode(h), MsgType.HEARTBEAT))
    assert d["stage"] == "infer" and d["frames"] == 42
    v = wire.new_message(MsgType.VEHICLE)
    v["lateral"], v["x"] = 0.25, 10.0
    assert wire.to_dict(wire.decode(wire.encode(v)))["lateral"] == 0.25


def _valid_command() -> bytes:
    r = wire.new_message(MsgType.COMMAND)
    r["seq"], r["steer"] = 1, 0.1
    r["stamps"][:] = 1
    return wire.encode(r)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:10], "too short"),
    (lambda b: b[:-1], "bytes"),
    (lambda b: b + b"\0", "bytes"),
    (lambda b: b"XXXX" + b[4:], "bad magic"),
    (lambda b: b[:4] + (99).to_bytes(2, "little") + b[6:], "version 99"),
    (lambda b: b[:6] + (77).to_bytes(2, "little") + b[8:], "unknown message type"),
    (lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:], "CRC"),
])
def test_malformed_bytes_rejected_with_reason(mutate, match):
    with pytest.raises(WireError, match=match):
        wire.decode(mutate(_valid_command()))


def test_wrong_type_rejected():
    with pytest.raises(WireError, match="expected a FRAME message, got COMMAND"):
        wire.decode(_valid_command(), MsgType.FRAME)


@pytest.mark.parametrize("field, value, match", [
    ("steer", math.nan, "not finite"),
    ("accel", math.inf, "not finite"),
    ("flags", 0x80, "unknown bits"),
    ("reason", 999, "reason 999 unknown"),
])
def test_command_values_validated(field, value, match):
    r = wire.new_message(MsgType.COMMAND)
    r[field] = value
    with pytest.raises(WireError, match=match):
        wire.decode(wire.encode(r))


@pytest.mark.parametrize("field, value, match", [
    ("ndim", 0, "ndim 0"),
    ("ndim", 5, "ndim 5"),
    ("dtype", 200, "dtype code 200"),
])
def test_frame_values_validated(field, value, match):
    r = _frame(0, 2, 1, [4, 4, 3], 1, [1] * wire.N_STAMPS)
    r[field] = value
    with pytest.raises(WireError, match=match):
        wire.decode(wire.encode(r))


def test_frame_shape_must_match_ndim_and_capture_stamp_required():
    r = _frame(0, 2, 1, [4, 4, 3], 1, [1] * wire.N_STAMPS)
    r["shape"][3] = 7  # a dimension beyond ndim
    with pytest.raises(WireError, match="inconsistent"):
        wire.decode(wire.encode(r))
    r = _frame(0, 2, 1, [4, 4, 3], 1, [0] * wire.N_STAMPS)
    with pytest.raises(WireError, match="capture stamp"):
        wire.decode(wire.encode(r))


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 200), xor=st.integers(1, 255))
def test_any_single_byte_corruption_is_rejected(pos, xor):
    buf = bytearray(_valid_command())
    pos %= len(buf)
    buf[pos] ^= xor
    with pytest.raises(WireError):
        wire.decode(bytes(buf))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=256))
def test_fuzz_random_bytes_never_crash(data):
    try:
        wire.decode(data)
    except WireError:
        pass  # rejected with a reason: the only acceptable failure


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=200))
def test_fuzz_valid_header_random_body(data):
    """Garbage behind a well-formed header and a valid CRC reaches the value checks, which must hold."""
    layout = wire.LAYOUTS[MsgType.COMMAND]
    body = (data * (layout.itemsize // len(data) + 1))[: layout.itemsize]
    rec = np.frombuffer(bytearray(body), dtype=layout)[0]
    rec["magic"], rec["version"], rec["type"], rec["length"] = wire.MAGIC, wire.VERSION, int(MsgType.COMMAND), layout.itemsize
    try:
        out = wire.decode(wire.encode(rec))
    except WireError:
        return
    assert math.isfinite(float(out["steer"])) and int(out["flags"]) <= 3


# -- CAMERA: a camera source's state (runtime/stages/source.py) -----------------------------------
def _camera(state: int = int(wire.CameraState.LOST), why: bytes = b"/dev/video0: unplugged") -> np.ndarray:
    r = wire.new_message(MsgType.CAMERA)
    r["camera"], r["state"], r["frame_id"], r["capture_ns"] = 1, state, 41, 1_000
    r["since_ns"], r["t_ns"], r["why"] = 2_000, 3_000, why
    return r


@settings(max_examples=200, deadline=None)
@given(camera=st.integers(0, wire.MAX_CAMERAS - 1), state=st.sampled_from([int(s) for s in wire.CameraState]),
       fid=u64, capture=st.integers(0, 2**62), since=st.integers(1, 2**62), later=st.integers(0, 2**62),
       why=st.text(max_size=100))
def test_camera_round_trip(camera, state, fid, capture, since, later, why):
    r = wire.new_message(MsgType.CAMERA)
    r["camera"], r["state"], r["frame_id"] = camera, state, fid
    r["since_ns"], r["t_ns"] = since, since + later
    r["capture_ns"] = capture
    r["why"] = wire.encode_why(why)  # any text: printable ASCII, cut to WHY_BYTES
    d = wire.to_dict(wire.decode(wire.encode(r), MsgType.CAMERA))
    assert (d["camera"], d["state"], d["frame_id"], d["t_ns"]) == (camera, state, fid, since + later)
    assert d["why"] == wire.encode_why(why).decode() and len(d["why"]) <= wire.WHY_BYTES
    assert wire.LAYOUTS[MsgType.CAMERA].itemsize == 120  # docs/wire.md


def test_camera_why_keeps_a_file_name_readable():
    assert wire.encode_why("video: /data/straße.mp4 ended at 12.5 s") == b"video: /data/stra?e.mp4 ended at 12.5 s"
    assert len(wire.encode_why("x" * 500)) == wire.WHY_BYTES


@pytest.mark.parametrize("field, value, match", [
    ("state", 7, "CAMERA state 7 unknown; known: 0 OK, 1 LOST"),
    ("camera", wire.MAX_CAMERAS, "camera index 16 not below 16"),
    ("t_ns", 0, "since_ns 2000 / t_ns 0"),
    ("since_ns", 0, "since_ns 0 / t_ns 3000"),
    ("since_ns", 4_000, "since not after t_ns"),
    ("why", b"lost\x01", "not printable ASCII"),
    ("why", b"a\x00b", "not printable ASCII"),  # a NUL inside: only padding may be NUL
    ("why", "é".encode(), "not printable ASCII"),
])
def test_camera_values_validated(field, value, match):
    r = _camera()
    wire.decode(wire.encode(r), MsgType.CAMERA)  # valid as made
    r[field] = value
    with pytest.raises(WireError, match=match):
        wire.decode(wire.encode(r), MsgType.CAMERA)


def test_camera_malformed_bytes_rejected():
    buf = wire.encode(_camera())
    with pytest.raises(WireError, match="CAMERA message is 119 bytes"):
        wire.decode(buf[:-1])
    with pytest.raises(WireError, match="CAMERA message failed its CRC-32"):
        wire.decode(buf[:30] + bytes([buf[30] ^ 1]) + buf[31:])
    with pytest.raises(WireError, match="expected a CAMERA message, got COMMAND"):
        wire.decode(_valid_command(), MsgType.CAMERA)
