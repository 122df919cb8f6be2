"""Recordings as MCAP files: one schema per topic, written crash-safe, read back with checks.

Why MCAP: an indexed, chunked container that Foxglove and the `mcap` CLI open as they are.
Topics and encodings (docs/fleet.md has the full table):

    /camera/raw   edgert.RawFrame, message encoding "edgert-frame-v1": our wire FRAME record
                  (docs/wire.md, CRC-checked on reading) followed by the pixel bytes in C order,
                  exactly as the camera wrote them into its slot: replay is bit-exact
    /camera/image foxglove.RawImage (json; record.frames = "image"): the pixels in the camera's
                  own format with Foxglove's encoding for it, viewable in Foxglove, plus the wire
                  FRAME record (edgert_frame): replay is bit-exact (IMAGE_ENCODING below)
    /camera/jpeg  foxglove.CompressedImage (json): for viewing; lossy, replayable but not bit-exact
    /results /commands /vehicle
                  json, one JSON Schema per wire type (the fields of runtime/wire.py's records,
                  as wire.to_dict gives them, per-stage monotonic stamps included)
    /events       json: takeover requests and operator triggers, the reasons clips exist

log_time is the recorder's receipt time on the wall clock (CLOCK_MONOTONIC plus an offset
fixed at the file's start, so times never step inside a file); publish_time is the frame's
capture time where the message has one. The file's `edgert` metadata record (written first,
so even a truncated file says where it came from) holds the region of collection, vehicle,
run, model and its sha256, edgert version and the pipeline config.

A file is written under `NAME.mcap.partial` and renamed to `NAME.mcap` only once complete
and fsynced: after a crash or power cut every file without the suffix is whole; a leftover
`.partial` is checked and reported as truncated, never passed off as a clip.

With the vehicle key, the metadata is authenticated (`edgert.auth`, written right after it)
and the content is sealed at close (`edgert.seal`, runtime/fleet/seal.py: an HMAC over the
metadata and a SHA-256 of every message); `seal_recovered` seals what a crash left readable.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from mcap.records import Channel, Footer, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from edgert.runtime import wire
from edgert.runtime.errors import EdgertError
from edgert.runtime.fleet import crypto, seal
from edgert.runtime.wire import MsgType

PARTIAL = ".partial"  # suffix of a file still being written
TRUNCATED = ".truncated.mcap"  # a .partial found after a crash is renamed to this, and reported
FRAME_ENCODING = "edgert-frame-v1"
RAW_TOPIC, JPEG_TOPIC, IMAGE_TOPIC = "/camera/raw", "/camera/jpeg", "/camera/image"
# camera.format -> foxglove.RawImage encoding. Foxglove has no I420: its planes are stored as NV12
# (the same bytes, U and V interleaved: lossless) and put back on reading, by edgert_format.
IMAGE_ENCODING = {"bgr": "bgr8", "rgb": "rgb8", "nv12": "nv12", "i420": "nv12", "yuyv": "yuyv"}
EVENTS_TOPIC = "/events"
WIRE_TOPICS = {"/results": MsgType.RESULT, "/commands": MsgType.COMMAND, "/vehicle": MsgType.VEHICLE}
COMPRESSION = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
CHUNK_BYTES = 1 << 20  # what a crash can lose of an open file, at most (plus the open chunk's frame)

_FIELD_NOTES = {
    "stamps": "time.monotonic_ns() per stage: 0 capture, 1 preprocess received, 2 preprocess done, "
              "3 infer received, 4 infer done, 5 control received, 6 control sent, 7 actuated (0 = none)",
    "status": ", ".join(f"{s.value} {s.name}" for s in wire.ResultStatus),
    "flags": "bits: " + ", ".join(f"{f.value} {f.name}" for f in wire.CommandFlags if f.value),
    "reason": "takeover reason: " + ", ".join(f"{r.value} {r.name}" for r in wire.TakeoverReason),
}


def _json_type(dt: np.dtype) -> dict[str, Any]:
    if dt.kind == "S":
        return {"type": "string"}
    return {"type": "number" if dt.kind == "f" else "integer"}


def wire_json_schema(msg_type: MsgType) -> dict[str, Any]:
    """A JSON Schema for `wire.to_dict` of a record of `msg_type`, derived from its layout."""
    layout = wire.LAYOUTS[msg_type]
    assert layout.names is not None and layout.fields is not None  # a record layout
    props: dict[str, Any] = {}
    for name in layout.names:
        if name.startswith("_") or name in ("magic", "crc", "length"):
            continue
        dt = layout.fields[name][0]
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            prop = {"type": "array", "items": _json_type(base), "minItems": shape[0], "maxItems": shape[0]}
        else:
            prop = _json_type(dt)
        if name in _FIELD_NOTES:
            prop["description"] = _FIELD_NOTES[name]
        props[name] = prop
    return {"title": f"edgert.{msg_type.name.title()}", "type": "object", "properties": props,
            "description": f"edgert wire {msg_type.name} v{wire.VERSION} (docs/wire.md), as JSON"}


EVENT_SCHEMA = {
    "title": "edgert.Event", "type": "object",
    "description": "why a clip exists: a takeover request began, or an operator asked for a clip",
    "properties": {"kind": {"type": "string", "enum": ["takeover", "operator"]},
                   "reason": {"type": "string"}, "frame_id": {"type": "integer"},
                   "t_ns": {"type": "integer", "description": "time.monotonic_ns() when the recorder saw it"}},
}
COMPRESSED_IMAGE_SCHEMA = {  # foxglove.CompressedImage, plus the edgert frame id
    "title": "foxglove.CompressedImage", "type": "object",
    "properties": {
        "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
        "frame_id": {"type": "string"},
        "data": {"type": "string", "contentEncoding": "base64"},
        "format": {"type": "string"},
        "edgert_frame_id": {"type": "integer"},
    },
}
RAW_IMAGE_SCHEMA = {  # foxglove.RawImage, plus what makes the replay bit-exact
    "title": "foxglove.RawImage", "type": "object",
    "properties": {
        "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
        "frame_id": {"type": "string"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "encoding": {"type": "string"}, "step": {"type": "integer"},
        "data": {"type": "string", "contentEncoding": "base64"},
        "edgert_frame_id": {"type": "integer"},
        "edgert_format": {"type": "string", "description": "camera.format of the slot the pixels came from"},
        "edgert_frame": {"type": "string", "contentEncoding": "base64",
                         "description": "the wire FRAME record (docs/wire.md): frame id, slot shape, stamps"},
    },
}
RAW_FRAME_SCHEMA = (
    "edgert wire FRAME record (docs/wire.md, little-endian, CRC-32 checked) of "
    f"{wire.LAYOUTS[MsgType.FRAME].itemsize} bytes: frame_id, shape, dtype code, stamps (stamps[0] = "
    "capture, monotonic ns); then prod(shape) * itemsize pixel bytes in C order, BGR for 3 channels."
).encode()


def _schema_for(topic: str) -> tuple[str, str, bytes, str]:
    """(schema name, schema encoding, schema data, message encoding) of one of our topics."""
    if topic == RAW_TOPIC:
        return "edgert.RawFrame", "edgert-text", RAW_FRAME_SCHEMA, FRAME_ENCODING
    if topic == JPEG_TOPIC:
        return "foxglove.CompressedImage", "jsonschema", json.dumps(COMPRESSED_IMAGE_SCHEMA).encode(), "json"
    if topic == IMAGE_TOPIC:
        return "foxglove.RawImage", "jsonschema", json.dumps(RAW_IMAGE_SCHEMA).encode(), "json"
    if topic == EVENTS_TOPIC:
        return "edgert.Event", "jsonschema", json.dumps(EVENT_SCHEMA).encode(), "json"
    if topic in WIRE_TOPICS:
        schema = wire_json_schema(WIRE_TOPICS[topic])
        return schema["title"], "jsonschema", json.dumps(schema).encode(), "json"
    raise KeyError(f"no schema for topic {topic!r}; topics: {RAW_TOPIC}, {IMAGE_TOPIC}, {JPEG_TOPIC}, "
                   f"{', '.join(WIRE_TOPICS)}, {EVENTS_TOPIC}")


# -- encoding messages ---------------------------------------------------------------------
def wire_json(buf: bytes) -> bytes:
    """A received wire message (already validated) as the JSON its topic's schema describes."""
    return json.dumps(wire.to_dict(wire.decode(buf)), separators=(",", ":")).encode()


def jpeg_json(jpeg: bytes, frame_id: int, capture_wall_ns: int) -> bytes:
    sec, nsec = divmod(int(capture_wall_ns), 1_000_000_000)
    return json.dumps({"timestamp": {"sec": sec, "nsec": nsec}, "frame_id": "camera", "format": "jpeg",
                       "edgert_frame_id": int(frame_id), "data": base64.b64encode(jpeg).decode()}).encode()


@dataclasses.dataclass(frozen=True)
class RawFrame:
    frame_id: int
    capture_ns: int  # monotonic, on the recording machine
    pixels: np.ndarray  # read-only view into the message bytes


def decode_raw_frame(data: bytes) -> RawFrame:
    """Split and check a /camera/raw message: a valid FRAME record and exactly the pixel bytes it announces."""
    n = wire.LAYOUTS[MsgType.FRAME].itemsize
    try:
        rec = wire.decode(data[:n], MsgType.FRAME)
    except wire.WireError as e:
        raise RecordingError(f"raw frame message: {e}") from None
    ndim = int(rec["ndim"])
    shape = tuple(int(d) for d in rec["shape"][:ndim])
    dtype = wire.DTYPE_CODES[int(rec["dtype"])]
    want = int(np.prod(shape)) * dtype.itemsize
    if len(data) - n != want:
        raise RecordingError(f"raw frame message: {len(data) - n} pixel bytes, header {shape} {dtype} says {want}")
    pixels = np.frombuffer(data, dtype=dtype, count=want // dtype.itemsize, offset=n).reshape(shape)
    return RawFrame(int(rec["frame_id"]), int(rec["stamps"][wire.Stamp.CAPTURE]), pixels)


def raw_image_json(frame_record: bytes, pixels: np.ndarray, fmt: str, capture_wall_ns: int) -> bytes:
    """A camera slot as foxglove.RawImage JSON: `frame_record` is its wire FRAME record (the
    /camera/raw header), `pixels` the slot's (N, ...) array in camera.format `fmt`."""
    one = 2 if fmt in ("nv12", "i420") else 3  # the dimensions of one image
    n = pixels.shape[0] if pixels.ndim == one + 1 else 1
    rows, w = pixels.shape[-one], pixels.shape[-one + 1]
    data = pixels
    if fmt in ("nv12", "i420") and n > 1:  # N 4:2:0 images are no one NV12 image: their planes, as grey
        encoding, height, step = "mono8", n * rows, w
    else:
        encoding, height = IMAGE_ENCODING[fmt], n * (rows * 2 // 3 if one == 2 else rows)
        step = w * {"bgr8": 3, "rgb8": 3, "yuyv": 2}.get(encoding, 1)
        if fmt == "i420":
            data = i420_as_nv12(pixels)
    sec, nsec = divmod(int(capture_wall_ns), 1_000_000_000)
    rec = wire.decode(frame_record, MsgType.FRAME)
    return json.dumps({"timestamp": {"sec": sec, "nsec": nsec}, "frame_id": "camera", "width": int(w),
                       "height": int(height), "encoding": encoding, "step": int(step),
                       "data": base64.b64encode(np.ascontiguousarray(data).data).decode(),
                       "edgert_frame_id": int(rec["frame_id"]), "edgert_format": fmt,
                       "edgert_frame": base64.b64encode(frame_record).decode()}).encode()


def i420_as_nv12(img: np.ndarray) -> np.ndarray:
    """One I420 image (H * 3 / 2, W) as NV12: the same Y plane, U and V interleaved (lossless)."""
    h = img.shape[0] * 2 // 3
    out = img.copy()
    chroma = img[h:].reshape(2, -1)  # the U plane, then the V plane
    out[h:] = np.stack([chroma[0], chroma[1]], -1).reshape(out[h:].shape)
    return out


def nv12_as_i420(img: np.ndarray) -> np.ndarray:
    """`i420_as_nv12` undone."""
    h = img.shape[0] * 2 // 3
    out = img.copy()
    uv = img[h:].reshape(-1, 2)
    out[h:] = np.concatenate([uv[:, 0], uv[:, 1]]).reshape(out[h:].shape)
    return out


def decode_raw_image(data: bytes) -> RawFrame:
    """A /camera/image message back to the slot it was recorded from, bit for bit (the FRAME
    record gives its shape; an I420 camera's NV12-stored planes are put back in I420 order)."""
    try:
        obj = json.loads(data)
        header, pixels = base64.b64decode(obj["edgert_frame"]), base64.b64decode(obj["data"])
        fmt = obj["edgert_format"]
    except (ValueError, KeyError, TypeError) as e:
        raise RecordingError(f"foxglove.RawImage message: {type(e).__name__}: {e}") from None
    frame = decode_raw_frame(header + pixels)
    if fmt == "i420" and frame.pixels.ndim == 2:
        frame = dataclasses.replace(frame, pixels=nv12_as_i420(frame.pixels))
    return frame


# -- writing -------------------------------------------------------------------------------
AUTH_RECORD = "edgert.auth"  # HMAC of the `edgert` record with the vehicle key: export, prune, replay check it


def auth_record(key: bytes, meta: dict[str, str]) -> dict[str, str]:
    """The `edgert.auth` metadata that authenticates META (the `edgert` record) with the vehicle KEY."""
    return {"alg": "hmac-sha256", "key": crypto.VEHICLE, "key_id": crypto.key_id(key),
            "mac": crypto.meta_mac(key, meta)}


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class McapFile:
    """One recording file being written: `NAME.mcap.partial` until `close()` makes it `NAME.mcap`."""

    def __init__(self, path: str | Path, metadata: dict[str, str], compression: str = "lz4",
                 chunk_size: int = CHUNK_BYTES, auth_key: bytes | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix != ".mcap":
            raise ValueError(f"recording path {self.path} must end in .mcap")
        self.tmp = self.path.with_name(self.path.name + PARTIAL)
        if compression not in COMPRESSION:
            raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSION)}")
        # Never clobber: names carry a timestamp and a counter. Closed by close().
        self._f = open(self.tmp, "xb")  # noqa: SIM115
        self._w = Writer(self._f, chunk_size=chunk_size, compression=COMPRESSION[compression])
        self._w.start(profile="", library=f"edgert {metadata.get('edgert_version', '')}".strip())
        meta = {k: str(v) for k, v in metadata.items()}
        self._w.add_metadata("edgert", meta)
        if auth_key is not None:  # right after it, so a file cut off by a crash is still authenticated
            self._w.add_metadata(AUTH_RECORD, auth_record(auth_key, meta))
        self._f.flush()  # the metadata reaches the disk with the first chunk, even if nothing else does
        self._channels: dict[str, int] = {}
        self._key, self._meta, self._content = auth_key, meta, seal.ContentHash()
        self.counts: dict[str, int] = {}
        self.bytes = 0
        self.first_ns = 0
        self.last_ns = 0

    def _channel(self, topic: str) -> int:
        ch = self._channels.get(topic)
        if ch is None:
            name, enc, data, msg_enc = _schema_for(topic)
            ch = self._w.register_channel(topic, msg_enc, self._w.register_schema(name, enc, data))
            self._channels[topic] = ch
        return ch

    def write(self, topic: str, log_ns: int, publish_ns: int, data: bytes, sequence: int = 0) -> None:
        self._w.add_message(self._channel(topic), log_time=log_ns, data=data, publish_time=publish_ns,
                            sequence=sequence & 0xFFFFFFFF)
        if self._key is not None:
            self._content.update(topic, log_ns, publish_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.bytes += len(data)
        self.first_ns = self.first_ns or log_ns
        self.last_ns = log_ns

    def close(self, summary: dict[str, Any] | None = None, recovered: str = "") -> Path:
        """Finish the file (index, summary, `edgert.stats`, `edgert.seal`), fsync it, then give it its final name.

        RECOVERED (only from `seal_recovered`) says why the clip is sealed after a crash.
        """
        stats = {"messages": json.dumps(self.counts), "payload_bytes": str(self.bytes), **{
            k: v if isinstance(v, str) else json.dumps(v) for k, v in (summary or {}).items()}}
        self._w.add_metadata("edgert.stats", stats)
        if self._key is not None:  # last: binds the metadata to every message written
            self._w.add_metadata(seal.SEAL_RECORD, seal.seal_record(self._key, crypto.key_id(self._key), self._meta,
                                                                    self._content, recovered))
        self._w.finish()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.rename(self.tmp, self.path)  # atomic: the complete name appears only for a complete file
        _fsync_dir(self.path.parent)
        return self.path

    def abandon(self) -> None:
        """Stop writing without finishing (disk error): the .partial stays and is reported as truncated."""
        try:
            self._f.close()
        except OSError:
            pass


# -- reading -------------------------------------------------------------------------------
class RecordingError(EdgertError, ValueError):
    """A file is not a recording edgert can replay: no edgert metadata, no frames, a frame that does not decode."""


class TruncatedRecording(EdgertError):
    """A recording ends (or breaks) before its footer: what was readable was read, the rest is lost."""

    def __init__(self, path: Path, messages: int, why: str) -> None:
        super().__init__(f"{path}: truncated after {messages} readable message(s) ({why}); the file was cut "
                         "short by a crash or power loss during writing, or damaged since")
        self.path, self.messages, self.why = path, messages, why


def iter_messages(path: str | Path, topics: set[str] | None = None
                  ) -> Iterator[tuple[str, Message]]:
    """(topic, message) in file order, CRC-checked; raises TruncatedRecording where the file breaks off."""
    path = Path(path)
    channels: dict[int, Channel] = {}
    n = 0
    with open(path, "rb") as f:
        try:
            for rec in StreamReader(f, validate_crcs=True, record_size_limit=1 << 31).records:
                if isinstance(rec, Channel):
                    channels[rec.id] = rec
                elif isinstance(rec, Message):
                    ch = channels.get(rec.channel_id)
                    if ch is None:
                        raise ValueError(f"message on unknown channel {rec.channel_id}")
                    n += 1
                    if topics is None or ch.topic in topics:
                        yield ch.topic, rec
                elif isinstance(rec, Footer):
                    return
        except Exception as e:  # noqa: BLE001 - any failure to parse a file is reported as truncation
            raise TruncatedRecording(path, n, f"{type(e).__name__}: {e}".rstrip(": ")) from None
    raise TruncatedRecording(path, n, "no footer")  # pragma: no cover - StreamReader raises first


@dataclasses.dataclass
class RecordingInfo:
    """What `inspect` found: whole or truncated, how many messages per topic, the file's metadata."""

    path: Path
    complete: bool
    error: str  # why it is not complete ("" if it is)
    messages: int
    topics: dict[str, int]
    metadata: dict[str, dict[str, str]]
    schemas: dict[str, str]  # topic -> schema name
    start_ns: int
    end_ns: int

    @property
    def region(self) -> str:
        return self.metadata.get("edgert", {}).get("region", "")

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9 if self.messages else 0.0


def inspect(path: str | Path) -> RecordingInfo:
    """Read the whole file (CRCs checked) and say whether it is complete; never raises for a bad file."""
    path = Path(path)
    info = RecordingInfo(path, False, "", 0, {}, {}, {}, 0, 0)
    channels: dict[int, Channel] = {}
    schemas: dict[int, Schema] = {}
    try:
        with open(path, "rb") as f:
            for rec in StreamReader(f, validate_crcs=True, record_size_limit=1 << 31).records:
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec
                elif isinstance(rec, Channel):
                    channels[rec.id] = rec
                    info.schemas[rec.topic] = schemas[rec.schema_id].name if rec.schema_id in schemas else ""
                elif isinstance(rec, Message):
                    topic = channels[rec.channel_id].topic
                    info.topics[topic] = info.topics.get(topic, 0) + 1
                    info.messages += 1
                    info.start_ns = min(info.start_ns or rec.log_time, rec.log_time)
                    info.end_ns = max(info.end_ns, rec.log_time)
                elif isinstance(rec, Metadata):
                    info.metadata[rec.name] = dict(rec.metadata)
                elif isinstance(rec, Footer):
                    info.complete = True
    except Exception as e:  # noqa: BLE001
        info.error = f"{type(e).__name__}: {e}".rstrip(": ") or type(e).__name__
    if not info.complete and not info.error:
        info.error = "no footer"
    recovered = info.metadata.get(seal.SEAL_RECORD, {}).get("recovered", "")
    if info.complete and recovered:  # rewritten whole by seal_recovered, but still only what a crash left
        info.complete, info.error = False, f"cut off by a crash ({recovered}); its readable part sealed at recovery"
    if path.name.endswith(PARTIAL) and info.complete:  # whole, but its writer never confirmed it
        info.complete, info.error = False, "still named .partial: its writer stopped before renaming it"
    return info


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `edgert` metadata record (region, vehicle, model, ...) of a recording, even a truncated one."""
    with open(path, "rb") as f:
        try:
            for rec in StreamReader(f, record_size_limit=1 << 31).records:
                if isinstance(rec, Metadata) and rec.name == "edgert":
                    return dict(rec.metadata)
        except Exception as e:  # noqa: BLE001
            raise TruncatedRecording(Path(path), 0, f"{type(e).__name__}: {e}") from None
    raise RecordingError(f"{path}: no 'edgert' metadata record: not a recording made by edgert")


def recover_partials(directory: str | Path, seal_key: bytes | None = None) -> list[RecordingInfo]:
    """After a crash: rename every leftover `.partial` to `NAME.truncated.mcap` and return what each holds.

    Nothing readable is deleted: the readable part of a cut-off clip may be exactly the moments
    before a crash. With SEAL_KEY (the vehicle key: the recorder's own folder), each is then
    sealed as far as it is readable (`seal_recovered`); `info.error` says so, or why it was not.
    """
    out = []
    for stale in Path(directory).glob(f"*{TRUNCATED}{PARTIAL}"):  # a rewrite a crash cut: its source is intact
        stale.unlink()
    for p in sorted(Path(directory).glob(f"*.mcap{PARTIAL}")):
        info = inspect(p)
        dest = p.with_name(p.name[: -len(".mcap" + PARTIAL)] + TRUNCATED)
        os.rename(p, dest)
        info.path = dest
        if seal_key is not None:
            why = seal_recovered(dest, seal_key)
            info.error += f"; {why}" if why else "; its readable part is now sealed"
        out.append(info)
    return out


def seal_recovered(path: Path, key: bytes) -> str:
    """Rewrite the cut-off clip PATH whole, with every readable message, sealed and marked `recovered`.

    Only a clip whose metadata this vehicle KEY authenticates is sealed: the recorder vouches for
    what its own writer left in its own 0700 folder, never for a file of someone else's making.
    Returns "" once sealed, else why it was left as it was (unsealed: export, prune and replay refuse it).
    """
    with open(path, "rb") as f:
        found = seal.read_clip(f)
    meta, auth = found.records.get(seal.META_RECORD), found.records.get(seal.AUTH_RECORD)
    if meta is None or auth is None or not crypto.check_meta_mac(key, meta, auth.get("mac", "")):
        return "not sealed: its metadata is not authenticated by this vehicle's key"
    if found.duplicate:
        return f"not sealed: it holds the {found.duplicate!r} record twice"
    if seal.SEAL_RECORD in found.records:
        return ""  # its writer sealed it before the crash (export checks that seal like any other)
    why = found.error or "whole"
    out = McapFile(path, meta, auth_key=key)  # to PATH.partial, renamed over PATH once complete
    try:
        try:  # streamed: a clip of raw frames may not fit in memory
            for topic, m in iter_messages(path):
                out.write(topic, m.log_time, m.publish_time, m.data, m.sequence)
        except TruncatedRecording:
            pass  # where it breaks off: everything before is written
        out.close({"recovered_from": why}, recovered=why)
    except (KeyError, OSError) as e:
        out.abandon()
        out.tmp.unlink(missing_ok=True)
        return f"not sealed: {type(e).__name__}: {e}"
    return ""


def wall_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now: monotonic stamps + this = wall-clock times for a file."""
    return time.time_ns() - time.monotonic_ns()
