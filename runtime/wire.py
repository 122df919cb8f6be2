"""Versioned, fixed-layout binary messages between stages.

Every message is one little-endian numpy structured record that starts with the same
16-byte header (magic, version, type, total length, CRC-32). Decoding checks all of
them, then the message's own value ranges, and raises `WireError` naming what is wrong;
the caller counts and logs the reject. Nothing received is ever unpickled or evaluated.

The layouts are documented in docs/wire.md; bump `VERSION` on any change.
"""

from __future__ import annotations

import enum
import math
import zlib
from typing import Any

import numpy as np

from edgert.runtime.errors import EdgertError

MAGIC = b"EDRT"
VERSION = 4  # 2: camera health; 3: LIGHT_OUTSIDE_ODD; 4: CAMERA message, CAMERA_LOST (docs/wire.md)
N_STAMPS = 8
MAX_VALUES = 16
MAX_DIMS = 4
MAX_CAMERAS = 16  # camera index limit of a CAMERA message (config camera.cameras <= 16)
WHY_BYTES = 64  # CAMERA `why`: longer reasons are cut


class MsgType(enum.IntEnum):
    FRAME = 1
    RESULT = 2
    COMMAND = 3
    HEARTBEAT = 4
    VEHICLE = 5
    CAMERA = 6  # a camera source's state: frames flowing, or lost (runtime/stages/source.py)


class Stamp(enum.IntEnum):
    """Index into every message's `stamps` array: `time.monotonic_ns()` per stage event."""

    CAPTURE = 0
    PRE_RECV = 1
    PRE_DONE = 2
    INFER_RECV = 3
    INFER_DONE = 4
    CTRL_RECV = 5
    CTRL_SEND = 6
    ACTUATE = 7


class ResultStatus(enum.IntEnum):
    OK = 0
    NONFINITE = 1  # NaN/Inf in the model output: never passed on as a value
    ERROR = 2
    CAMERA_BLACKOUT = 3  # the frame behind it was black (FrameFlags.CAMERA_DARK): no output computed
    CAMERA_FROZEN = 4  # the frame repeated the previous ones (FrameFlags.CAMERA_FROZEN): no output computed
    LIGHT_OUTSIDE_ODD = 5  # the frame's light is outside the model's validated range (FrameFlags.LIGHT_OUTSIDE_ODD)


class FrameFlags(enum.IntFlag):
    """Camera health, set by preprocess from a sampled statistic of the camera frame."""

    NONE = 0
    CAMERA_DARK = 1  # the image is black: a blackout, a covered lens, a dead sensor
    CAMERA_FROZEN = 2  # the image is bit-identical to the previous ones: a stuck camera or link
    LIGHT_OUTSIDE_ODD = 4  # the image's mean level is outside the range the model's manifest was validated for


class VehicleFlags(enum.IntFlag):
    """What the simulated car's actuator did, and which faults the simulator injected (ground truth)."""

    NONE = 0
    ACTUATOR_TIMEOUT = 1  # no valid command within the actuator's timeout: it ramps steering to neutral itself
    CAMERA_BLACKOUT = 2  # injected: this frame was rendered black
    CAMERA_FROZEN = 4  # injected: this frame repeats the previous image
    FRAME_DROPPED = 8  # injected: this frame was rendered but never published
    LIGHT_OUTSIDE_ODD = 16  # injected: the scenario set the light outside the model's validated range


class CommandFlags(enum.IntFlag):
    NONE = 0
    TAKEOVER = 1  # the driver must take over (Level 2)
    FAILSAFE = 2  # the command is the fail-safe ramp, not a model output


class TakeoverReason(enum.IntEnum):
    NONE = 0
    DEADLINE = 1  # no fresh valid result within the deadline
    INVALID_RESULT = 2  # NaN/Inf or out-of-range model output
    STALE_FRAME = 3  # result computed from a frame older than the deadline
    STARTUP = 4  # no valid result within the grace period after the pipeline started
    SHUTDOWN = 5  # the control stage is stopping: nothing will steer after this command
    CAMERA_BLACKOUT = 6  # the camera delivers black frames
    CAMERA_FROZEN = 7  # the camera repeats the same image
    LIGHT_OUTSIDE_ODD = 8  # the light is outside what the model was validated for (manifest [odd])
    CAMERA_LOST = 9  # the camera stopped delivering (unplugged, stalled, a dropped stream, corrupt frames)


class CameraState(enum.IntEnum):
    """What a CAMERA message says about its camera."""

    OK = 0  # frames flow
    LOST = 1  # no frames: the source is reconnecting (`why` says what went wrong)


def _all_bits(flags: type[enum.IntFlag]) -> int:
    """Every bit a flag type defines: what a validator accepts, so a new member needs no second edit."""
    return sum(int(f) for f in flags)


_FRAME_FLAG_BITS = _all_bits(FrameFlags)
_VEHICLE_FLAG_BITS = _all_bits(VehicleFlags)
_COMMAND_FLAG_BITS = _all_bits(CommandFlags)


class StageState(enum.IntEnum):
    STARTING = 0
    READY = 1
    RUNNING = 2
    STOPPING = 3
    FAILED = 4


# numpy dtype codes for frame descriptors (a closed list: unknown codes are rejected)
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.float32),
    3: np.dtype(np.float16),
    4: np.dtype(np.int32),
}
CODE_OF_DTYPE = {v: k for k, v in DTYPE_CODES.items()}

_HEADER = [("magic", "S4"), ("version", "<u2"), ("type", "<u2"), ("length", "<u4"), ("crc", "<u4")]
_STAMPS = ("stamps", "<u8", (N_STAMPS,))

LAYOUTS: dict[MsgType, np.dtype] = {
    MsgType.FRAME: np.dtype(
        _HEADER
        + [
            ("stream", "<u2"),
            ("slot", "<u2"),
            ("dtype", "u1"),
            ("ndim", "u1"),
            ("flags", "<u2"),
            ("generation", "<u8"),
            ("frame_id", "<u8"),
            ("shape", "<u4", (MAX_DIMS,)),
            _STAMPS,
        ]
    ),
    MsgType.RESULT: np.dtype(
        _HEADER
        + [
            ("frame_id", "<u8"),
            ("status", "<u2"),
            ("n_values", "<u2"),
            ("_pad", "<u4"),
            _STAMPS,
            ("values", "<f4", (MAX_VALUES,)),
        ]
    ),
    MsgType.COMMAND: np.dtype(
        _HEADER
        + [
            ("seq", "<u8"),
            ("frame_id", "<u8"),
            ("age_ns", "<u8"),
            ("steer", "<f4"),
            ("accel", "<f4"),
            ("flags", "<u2"),
            ("reason", "<u2"),
            ("_pad", "<u4"),
            _STAMPS,
        ]
    ),
    MsgType.HEARTBEAT: np.dtype(
        _HEADER
        + [
            ("stage", "S16"),
            ("state", "<u2"),
            ("_pad", "<u2"),
            ("pid", "<u4"),
            ("seq", "<u8"),
            ("t_ns", "<u8"),
            ("frames", "<u8"),
            ("dropped", "<u8"),
            ("rejected", "<u8"),
            ("errors", "<u8"),
        ]
    ),
    MsgType.VEHICLE: np.dtype(
        _HEADER
        + [
            ("frame_id", "<u8"),
            ("t_ns", "<u8"),
            ("x", "<f8"),
            ("y", "<f8"),
            ("yaw", "<f8"),
            ("speed", "<f8"),
            ("s", "<f8"),
            ("lateral", "<f8"),
            ("heading_err", "<f8"),
            ("steer", "<f4"),
            ("cmd_age_ns", "<u8"),
            ("flags", "<u2"),  # VehicleFlags
            ("_pad", "<u2"),
        ]
    ),
    MsgType.CAMERA: np.dtype(
        _HEADER
        + [
            ("camera", "<u2"),  # index of the camera (0 for the stream as a whole)
            ("state", "<u2"),  # CameraState
            ("_pad", "<u4"),
            ("frame_id", "<u8"),  # the last good frame published (0: none yet)
            ("capture_ns", "<u8"),  # its capture stamp (0: none yet)
            ("since_ns", "<u8"),  # when the camera entered this state
            ("t_ns", "<u8"),  # when this message was sent
            ("why", f"S{WHY_BYTES}"),  # LOST: what went wrong, printable ASCII, NUL-padded
        ]
    ),
}

_CRC_OFFSET = 12  # magic(4) version(2) type(2) length(4)
_BODY_OFFSET = 16


class WireError(EdgertError, ValueError):
    """A received message failed validation; it is dropped and counted, never used."""


def new_message(msg_type: MsgType) -> np.ndarray:
    """A zeroed, reusable record of `msg_type` with its header filled in."""
    rec = np.zeros((), dtype=LAYOUTS[msg_type])
    rec["magic"] = MAGIC
    rec["version"] = VERSION
    rec["type"] = int(msg_type)
    rec["length"] = LAYOUTS[msg_type].itemsize
    return rec


def _crc(buf: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(buf[_BODY_OFFSET:], zlib.crc32(buf[:_CRC_OFFSET])) & 0xFFFFFFFF


def encode(rec: np.ndarray | np.void) -> bytes:
    """The record's bytes with its CRC-32 filled in, ready to send."""
    buf = bytearray(rec.tobytes())
    buf[_CRC_OFFSET:_BODY_OFFSET] = _crc(buf).to_bytes(4, "little")
    return bytes(buf)


def decode(buf: bytes | memoryview, expect: MsgType | None = None) -> np.void:
    """Validate `buf` and return a read-only record view of it; raise `WireError` if bad."""
    n = len(buf)
    if n < _BODY_OFFSET:
        raise WireError(f"message too short: {n} bytes, a header alone is {_BODY_OFFSET}")
    if bytes(buf[:4]) != MAGIC:
        raise WireError(f"bad magic {bytes(buf[:4])!r}, expected {MAGIC!r}: not an edgert message")
    version = int.from_bytes(buf[4:6], "little")
    if version != VERSION:
        raise WireError(f"wire version {version} not supported (this build speaks {VERSION}); "
                        "run the same edgert version on both ends")
    type_code = int.from_bytes(buf[6:8], "little")
    try:
        msg_type = MsgType(type_code)
    except ValueError:
        raise WireError(f"unknown message type {type_code}") from None
    if expect is not None and msg_type != expect:
        raise WireError(f"expected a {expect.name} message, got {msg_type.name}")
    layout = LAYOUTS[msg_type]
    length = int.from_bytes(buf[8:12], "little")
    if length != layout.itemsize or n != layout.itemsize:
        raise WireError(f"{msg_type.name} message is {n} bytes (header says {length}), "
                        f"layout v{VERSION} is {layout.itemsize}")
    crc = int.from_bytes(buf[12:16], "little")
    if crc != _crc(buf):
        raise WireError(f"{msg_type.name} message failed its CRC-32 check: corrupted in transit")
    rec = np.frombuffer(buf, dtype=layout, count=1)[0]
    _VALIDATORS[msg_type](rec)
    return rec


def _check_stamps(rec: np.void) -> None:
    if not rec["stamps"][Stamp.CAPTURE]:
        raise WireError("capture stamp missing (0)")


def _validate_frame(rec: np.void) -> None:
    ndim = int(rec["ndim"])
    if not 1 <= ndim <= MAX_DIMS:
        raise WireError(f"FRAME ndim {ndim} outside 1..{MAX_DIMS}")
    if int(rec["dtype"]) not in DTYPE_CODES:
        raise WireError(f"FRAME dtype code {int(rec['dtype'])} unknown; known: {sorted(DTYPE_CODES)}")
    shape = rec["shape"]
    if any(int(d) == 0 for d in shape[:ndim]) or any(int(d) != 0 for d in shape[ndim:]):
        raise WireError(f"FRAME shape {tuple(int(d) for d in shape)} inconsistent with ndim {ndim}")
    if int(rec["flags"]) & ~_FRAME_FLAG_BITS:
        raise WireError(f"FRAME flags {int(rec['flags']):#x} has unknown bits")
    _check_stamps(rec)


def _validate_result(rec: np.void) -> None:
    n = int(rec["n_values"])
    if n > MAX_VALUES:
        raise WireError(f"RESULT n_values {n} > {MAX_VALUES}")
    try:
        status = ResultStatus(int(rec["status"]))
    except ValueError:
        raise WireError(f"RESULT status {int(rec['status'])} unknown") from None
    if status == ResultStatus.OK and not np.isfinite(rec["values"][:n]).all():
        raise WireError("RESULT says OK but carries NaN/Inf values")
    _check_stamps(rec)


def _validate_command(rec: np.void) -> None:
    if not (math.isfinite(float(rec["steer"])) and math.isfinite(float(rec["accel"]))):
        raise WireError("COMMAND steer/accel not finite")
    if int(rec["flags"]) & ~_COMMAND_FLAG_BITS:
        raise WireError(f"COMMAND flags {int(rec['flags']):#x} has unknown bits")
    try:
        TakeoverReason(int(rec["reason"]))
    except ValueError:
        raise WireError(f"COMMAND reason {int(rec['reason'])} unknown") from None


def _validate_heartbeat(rec: np.void) -> None:
    try:
        StageState(int(rec["state"]))
    except ValueError:
        raise WireError(f"HEARTBEAT state {int(rec['state'])} unknown") from None
    name = bytes(rec["stage"])
    if not name or not name.replace(b"_", b"").replace(b"-", b"").isalnum():
        raise WireError(f"HEARTBEAT stage name {name!r} invalid")


def _validate_vehicle(rec: np.void) -> None:
    for key in ("x", "y", "yaw", "speed", "s", "lateral", "heading_err", "steer"):
        if not math.isfinite(float(rec[key])):
            raise WireError(f"VEHICLE {key} not finite")
    if int(rec["flags"]) & ~_VEHICLE_FLAG_BITS:
        raise WireError(f"VEHICLE flags {int(rec['flags']):#x} has unknown bits")


def _validate_camera(rec: np.void) -> None:
    if int(rec["camera"]) >= MAX_CAMERAS:
        raise WireError(f"CAMERA camera index {int(rec['camera'])} not below {MAX_CAMERAS}")
    try:
        CameraState(int(rec["state"]))
    except ValueError:
        raise WireError(f"CAMERA state {int(rec['state'])} unknown; known: "
                        f"{', '.join(f'{s.value} {s.name}' for s in CameraState)}") from None
    since, sent = int(rec["since_ns"]), int(rec["t_ns"])
    if not sent or not since or since > sent:
        raise WireError(f"CAMERA stamps since_ns {since} / t_ns {sent}: both set, since not after t_ns")
    why = bytes(rec["why"])  # numpy strips trailing NULs: any NUL or byte left must be printable ASCII
    if not all(0x20 <= b < 0x7F for b in why):
        raise WireError(f"CAMERA why {why!r} is not printable ASCII")


def encode_why(why: str) -> bytes:
    """A CAMERA `why` from any text: printable ASCII (others become '?'), cut to WHY_BYTES."""
    return "".join(c if " " <= c <= "~" else "?" for c in why)[:WHY_BYTES].encode("ascii")


_VALIDATORS = {
    MsgType.FRAME: _validate_frame,
    MsgType.RESULT: _validate_result,
    MsgType.COMMAND: _validate_command,
    MsgType.HEARTBEAT: _validate_heartbeat,
    MsgType.VEHICLE: _validate_vehicle,
    MsgType.CAMERA: _validate_camera,
}


def to_dict(rec: np.void) -> dict[str, Any]:
    """A JSON-ready view of a decoded record (for `edgert echo`, logs and tests)."""
    out: dict[str, Any] = {}
    for name in rec.dtype.names or ():
        if name.startswith("_") or name in ("magic", "crc", "length"):
            continue
        v = rec[name]
        if isinstance(v, bytes):
            out[name] = v.rstrip(b"\0").decode("ascii", "replace")
        elif isinstance(v, np.ndarray):
            out[name] = v.tolist()
        else:
            out[name] = v.item()
    return out
