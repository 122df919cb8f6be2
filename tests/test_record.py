"""Recording: the ring, the MCAP files, the recorder stage on real sockets and shared memory,
clips around a takeover, a slow disk, and a recorder killed mid-clip in a real pipeline."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MACHINE_CONTROL, StageHarness, make_steer_model, write_manifest

from edgert.runtime import cli, paths, wire
from edgert.runtime.config import CameraSection, ConfigError, from_dict
from edgert.runtime.fleet import mcapio
from edgert.runtime.fleet.ring import Ring
from edgert.runtime.framepool import FramePool
from edgert.runtime.stages import STAGE_NAMES, stage_names
from edgert.runtime.stages.capture import CAMERA_STREAM, STREAM_IDS
from edgert.runtime.stages.recorder import RecorderStage
from edgert.runtime.transport import publisher
from edgert.runtime.wire import CommandFlags, MsgType, Stamp, TakeoverReason

W, H = 64, 48
# The camera-health check flags repeated frames; the tests' small synthetic roads may repeat one.
NO_FROZEN = {"frozen_frames": 0} if "frozen_frames" in CameraSection.__dataclass_fields__ else {}


# -- helpers shared with test_replay.py ------------------------------------------------------
def signed_tiny(root: Path, weight: float = 0.5, name: str = "tiny") -> tuple[Path, Path]:
    """A tiny real steering model (steer = weight * mean(image)), signed and approved for "sim";
    returns (model dir, trusted-keys dir). Signing is skipped on a tree without runtime/signing.py."""
    d = root / name
    d.mkdir(parents=True)
    make_steer_model(d / "model.onnx", weight=weight)
    write_manifest(d)
    keys = root / "keys"
    try:
        from edgert.runtime import signing
    except ImportError:  # pragma: no cover - before market approval existed
        return d, keys
    text = (d / "manifest.toml").read_text()
    (d / "manifest.toml").write_text(text.replace('markets = ["EU"]', 'markets = ["sim"]\npublisher = "test-pub"'))
    if not (keys / "test-pub.pem").exists():
        signing.keygen(keys, "test-pub")
    signing.sign(d, keys / "test-pub.pem")
    return d, keys


def pipeline_config(model: Path, keys: Path, width: int = 160, height: int = 120,
                    **record):  # type: ignore[no-untyped-def]
    infer = {"model": str(model)}
    if keys.exists():
        infer["trusted_keys"] = str(keys)
    # the roomier deadline of every real-pipeline test: a loaded 2-core machine is no reason for a takeover
    raw = {"camera": {"width": width, "height": height, **NO_FROZEN}, "infer": infer, "control": SHARED_MACHINE_CONTROL}
    if record:  # the vehicle key that authenticates each file's metadata: the test's own, not the user's
        raw["record"] = {"enabled": True, "region": "sim", "keys_dir": str(model.parent / "fleet-keys"), **record}
    return from_dict(raw)


def frame_pixels(frame_id: int, shape=(H, W, 3)) -> np.ndarray:
    return np.random.default_rng(frame_id).integers(0, 256, shape, dtype=np.uint8)


# -- ring ------------------------------------------------------------------------------------
def test_ring_keeps_entries_intact_within_its_byte_and_age_bounds():
    rng = np.random.default_rng(1)
    ring = Ring(capacity=10_000, max_age_ns=1_000_000, max_entries=64)
    written = {}
    t = 0
    for i in range(2000):
        n = int(rng.integers(1, 3000))
        data = rng.integers(0, 256, n, dtype=np.uint8)
        dst = ring.reserve(n)
        dst[:] = data
        if i % 7 == 3:  # a torn copy: given back, never becomes an entry
            ring.abort()
            continue
        t += int(rng.integers(1, 50_000))
        seq = ring.commit(i % 5, t)
        written[seq] = (i % 5, t, data.tobytes())
        assert ring.bytes_used <= ring.capacity
        assert len(ring) <= 64
        oldest = ring.meta(ring.first)
        assert oldest is not None and t - oldest[1] <= 1_000_000 or len(ring) == 1
        if i % 50 == 0:
            for s in range(ring.first, ring.next):  # every live entry reads back exactly as written
                assert ring.copy_out(s) == written[s]
    assert ring.copy_out(ring.first - 1) is None  # evicted: None, never another entry's bytes
    assert ring.evicted == ring.first
    with pytest.raises(ValueError, match="ring_mb"):
        ring.reserve(10_001)


def test_ring_find_by_time():
    ring = Ring(capacity=1 << 16, max_age_ns=10**12)
    for i in range(100):
        ring.reserve(10)[:] = i
        ring.commit(0, 1000 + 10 * i)
    assert ring.find(0) == 0
    assert ring.find(1000 + 10 * 42) == 42
    assert ring.find(1000 + 10 * 42 - 3) == 42
    assert ring.find(10**9) == ring.next


# -- MCAP files --------------------------------------------------------------------------------
def _frame_msg(frame_id: int, pixels: np.ndarray) -> bytes:
    f = wire.new_message(MsgType.FRAME)
    f["stream"], f["dtype"], f["ndim"] = STREAM_IDS[CAMERA_STREAM], 1, pixels.ndim
    f["shape"][: pixels.ndim] = pixels.shape
    f["frame_id"] = frame_id
    f["stamps"][Stamp.CAPTURE] = 1_000_000 + frame_id
    return wire.encode(f) + pixels.tobytes()


def _wire_msgs(frame_id: int) -> dict[str, bytes]:
    r = wire.new_message(MsgType.RESULT)
    r["frame_id"], r["n_values"] = frame_id, 1
    r["values"][0] = np.float32(0.1) * frame_id
    r["stamps"][Stamp.CAPTURE] = 5
    c = wire.new_message(MsgType.COMMAND)
    c["seq"], c["frame_id"], c["steer"] = frame_id, frame_id, 0.01
    c["stamps"][Stamp.CAPTURE] = 5
    v = wire.new_message(MsgType.VEHICLE)
    v["frame_id"], v["lateral"] = frame_id, 0.25
    return {"/results": wire.encode(r), "/commands": wire.encode(c), "/vehicle": wire.encode(v)}


def test_raw_frames_round_trip_bit_exact_and_json_topics_follow_their_schemas(tmp_path):
    path = tmp_path / "rec.mcap"
    f = mcapio.McapFile(path, {"region": "eu", "edgert_version": "test"})
    for i in range(1, 21):
        f.write(mcapio.RAW_TOPIC, i, i, _frame_msg(i, frame_pixels(i)), i)
        for topic, msg in _wire_msgs(i).items():
            f.write(topic, i, i, mcapio.wire_json(msg), i)
    assert not path.exists() and f.tmp.exists()  # a file being written never has the final name
    f.close()
    assert path.exists() and not f.tmp.exists()
    info = mcapio.inspect(path)
    assert info.complete and info.error == ""
    assert info.topics == {mcapio.RAW_TOPIC: 20, "/results": 20, "/commands": 20, "/vehicle": 20}
    assert info.region == "eu" and info.metadata["edgert.stats"]["payload_bytes"]
    assert info.schemas["/results"] == "edgert.Result" and info.schemas[mcapio.RAW_TOPIC] == "edgert.RawFrame"
    frames = [mcapio.decode_raw_frame(m.data) for _, m in mcapio.iter_messages(path, {mcapio.RAW_TOPIC})]
    assert [fr.frame_id for fr in frames] == list(range(1, 21))
    for fr in frames:
        assert np.array_equal(fr.pixels, frame_pixels(fr.frame_id)) and fr.capture_ns == 1_000_000 + fr.frame_id
    schemas = {t: mcapio.wire_json_schema(mt) for t, mt in mcapio.WIRE_TOPICS.items()}
    kinds = {"integer": int, "number": (int, float), "array": list, "string": str}
    for topic, msg in mcapio.iter_messages(path, set(schemas)):
        obj = json.loads(msg.data)
        props = schemas[topic]["properties"]
        assert set(obj) == set(props), topic
        for k, v in obj.items():
            assert isinstance(v, kinds[props[k]["type"]]), (topic, k, v)
    result = next(json.loads(m.data) for t, m in mcapio.iter_messages(path, {"/results"}))
    assert np.float32(result["values"][0]) == np.float32(0.1) * 1  # float32 survives JSON exactly


def test_raw_frame_decoding_refuses_a_damaged_message():
    msg = bytearray(_frame_msg(3, frame_pixels(3)))
    with pytest.raises(ValueError, match="pixel bytes"):
        mcapio.decode_raw_frame(bytes(msg[:-1]))
    msg[20] ^= 0xFF  # inside the header: the CRC catches it
    with pytest.raises(ValueError, match="CRC"):
        mcapio.decode_raw_frame(bytes(msg))


def test_a_truncated_file_is_reported_with_what_is_readable(tmp_path):
    path = tmp_path / "rec.mcap"
    f = mcapio.McapFile(path, {"region": "eu"}, chunk_size=64 * 1024)
    for i in range(1, 61):
        f.write(mcapio.RAW_TOPIC, i, i, _frame_msg(i, frame_pixels(i)), i)
    f.close()
    data = path.read_bytes()
    readable = []
    for cut in (len(data) // 4, len(data) // 2, len(data) - 200):
        p = tmp_path / f"cut{cut}.mcap"
        p.write_bytes(data[:cut])
        info = mcapio.inspect(p)
        assert not info.complete and info.error and info.region == "eu"  # the metadata comes first
        ids = []
        with pytest.raises(mcapio.TruncatedRecording, match="truncated after") as e:
            for _, m in mcapio.iter_messages(p):
                ids.append(mcapio.decode_raw_frame(m.data).frame_id)
        assert e.value.messages == info.messages and ids == list(range(1, len(ids) + 1))
        readable.append(info.messages)
    assert 0 < readable[0] <= readable[1] < readable[2]  # every chunk before the cut reads back
    assert readable[2] == 60  # only the summary was cut: all messages read, and still reported truncated


def test_recover_partials_keeps_and_reports_a_cut_off_file(tmp_path):
    whole = tmp_path / "a.mcap"
    f = mcapio.McapFile(whole, {"region": "eu"})
    f.write(mcapio.RAW_TOPIC, 1, 1, _frame_msg(1, frame_pixels(1)), 1)
    f.close()
    cut = mcapio.McapFile(tmp_path / "b.mcap", {"region": "eu", "event_kind": "takeover"}, chunk_size=1024)
    for i in range(1, 10):
        cut.write(mcapio.RAW_TOPIC, i, i, _frame_msg(i, frame_pixels(i)), i)
    cut.abandon()  # as a crash leaves it
    found = mcapio.recover_partials(tmp_path)
    assert [i.path.name for i in found] == ["b" + mcapio.TRUNCATED]
    assert not found[0].complete and found[0].messages >= 1
    assert mcapio.read_metadata(found[0].path)["event_kind"] == "takeover"
    assert mcapio.inspect(whole).complete
    assert cli.main(["record", "list", str(tmp_path)]) == 1  # a truncated file makes the listing fail


# -- config ----------------------------------------------------------------------------------
def test_record_config_is_checked_with_the_fix(tiny_model):
    base = {"infer": {"model": str(tiny_model)}}
    with pytest.raises(ConfigError, match="record.region: required"):
        from_dict({**base, "record": {"enabled": True}})
    with pytest.raises(ConfigError, match="record.region: 'EU'"):
        from_dict({**base, "record": {"enabled": True, "region": "EU"}})
    with pytest.raises(ConfigError, match="record.pre_s.*raise ring_s"):
        from_dict({**base, "record": {"pre_s": 12.0}})
    with pytest.raises(ConfigError, match="record.ring_mb: 100 MiB cannot hold.*raise ring_mb"):
        from_dict({**base, "record": {"ring_mb": 100}})  # 5 s of 1080p frames need ~900 MiB
    with pytest.raises(ConfigError, match="record.mode"):
        from_dict({**base, "record": {"mode": "some"}})
    with pytest.raises(ConfigError, match="replay.file: required"):
        from_dict({**base, "camera": {"source": "replay"}})
    with pytest.raises(ConfigError, match="unknown key 'record.pre_secs'"):
        from_dict({**base, "record": {"pre_secs": 1.0}})
    off = from_dict(base)
    on = from_dict({**base, "record": {"enabled": True, "region": "eu"}})
    assert stage_names(off) == STAGE_NAMES and stage_names(on) == STAGE_NAMES + ("recorder",)


# -- the recorder stage on real sockets and shared memory ----------------------------------------
class FakePipeline:
    """Publishes what the pipeline would, at 30 Hz: camera frames into a real pool, results, commands."""

    def __init__(self, h: StageHarness, pattern=frame_pixels) -> None:  # type: ignore[no-untyped-def]
        self.h = h
        self.pattern = pattern
        self.shape = (h.cfg.camera.height, h.cfg.camera.width, 3)
        self.pool = FramePool.create(h.run_id, CAMERA_STREAM, 4, int(np.prod(self.shape)))
        self.pubs = {t: publisher(h.zmq, h.endpoints, t) for t in ("frames", "results", "commands", "vehicle")}
        self.frame = wire.new_message(MsgType.FRAME)
        self.frame["stream"], self.frame["dtype"], self.frame["ndim"] = STREAM_IDS[CAMERA_STREAM], 1, 3
        self.frame["shape"][:3] = self.shape
        self.sent = 0
        self.takeover_from = 0  # frame id from which commands request a takeover

    def tick(self, frame_id: int) -> None:
        slot = self.pool.acquire()
        self.pool.view(slot, self.shape, np.uint8)[:] = self.pattern(frame_id)
        f = self.frame
        f["slot"], f["generation"], f["frame_id"] = slot, self.pool.publish(slot), frame_id
        f["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        self.pubs["frames"].send(wire.encode(f))
        msgs = _wire_msgs(frame_id)
        if self.takeover_from and frame_id >= self.takeover_from:
            c = wire.decode(msgs["/commands"]).copy()
            c["flags"] = int(CommandFlags.TAKEOVER | CommandFlags.FAILSAFE)
            c["reason"], c["frame_id"] = int(TakeoverReason.DEADLINE), 0
            msgs["/commands"] = wire.encode(c)
        for topic, msg in msgs.items():
            self.pubs[topic.strip("/")].send(msg)
        self.sent += 1

    def run(self, seconds: float, first_id: int, at: dict | None = None) -> int:
        """Tick at 30 Hz for `seconds`; `at` maps a frame id to a callable run just before that tick."""
        next_t = time.monotonic()
        fid = first_id
        end = next_t + seconds
        while next_t < end:
            if at and fid in at:
                at[fid]()
            self.tick(fid)
            fid += 1
            next_t += 1 / 30
            time.sleep(max(0.0, next_t - time.monotonic()))
        return fid

    def close(self) -> None:
        for s in self.pubs.values():
            s.close(0)
        self.pool.close()
        self.pool.unlink()


def _start_recorder(tmp_path, tiny_model, stage_cls=RecorderStage, pattern=frame_pixels, size=(W, H),
                    **record):  # type: ignore[no-untyped-def]
    cfg = from_dict({"camera": {"width": size[0], "height": size[1]}, "infer": {"model": str(tiny_model)},
                     "record": {"enabled": True, "region": "sim", "dir": str(tmp_path / "rec"), "nice": 0,
                                "keys_dir": str(tmp_path / "fleet-keys"), **record}})
    h = StageHarness(cfg)
    fake = FakePipeline(h, pattern)
    h.start(stage_cls)
    deadline = time.monotonic() + 10
    while getattr(h.stage, "writer", None) is None or not h.stage.writer._thread.is_alive():
        assert time.monotonic() < deadline and h.thread.is_alive(), "recorder did not start"
        time.sleep(0.01)
    time.sleep(0.2)  # subscriptions settle
    return h, fake


def test_a_frame_is_copied_once_its_command_is_out_or_a_frame_period_has_passed(tmp_path, tiny_model):
    """The 6 MB copy waits for the pipeline's idle time: after the frame's command, else one period."""
    h, fake = _start_recorder(tmp_path, tiny_model)
    try:
        stage = h.stage

        def frame_only(fid: int) -> None:
            slot = fake.pool.acquire()
            fake.pool.view(slot, fake.shape, np.uint8)[:] = frame_pixels(fid)
            f = fake.frame
            f["slot"], f["generation"], f["frame_id"] = slot, fake.pool.publish(slot), fid
            f["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
            fake.pubs["frames"].send(wire.encode(f))

        def wait_for(cond, limit_s: float) -> float:  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            while not cond():
                assert time.monotonic() - t0 < limit_s, "timed out"
                time.sleep(0.001)
            return time.monotonic() - t0

        frame_only(1)
        wait_for(lambda: stage._pending is not None, 2.0)
        time.sleep(0.005)
        assert stage.frames == 0  # received, not copied: its command is not out yet
        fake.pubs["commands"].send(_wire_msgs(1)["/commands"])
        wait_for(lambda: stage.frames == 1, 2.0)
        assert stage._pending is None
        frame_only(2)  # no command ever comes for this one: copied after one frame period (33 ms)
        waited = wait_for(lambda: stage.frames == 2, 2.0)
        assert waited >= 0.02, waited
        assert stage.overwritten == 0 and stage.missed == 0
    finally:
        fake.close()
        h.close()


def test_crafted_frame_descriptors_are_rejected_and_cannot_crash_the_recorder_or_grow_its_caches(tmp_path,
                                                                                                   tiny_model):
    h, fake = _start_recorder(tmp_path, tiny_model)
    try:
        stage = h.stage
        f = fake.frame.copy()
        f["stamps"][Stamp.CAPTURE] = time.monotonic_ns()
        crafted = [(65536,) * 4,  # 2**64 bytes: wrapped to 0 by np.prod, then a ValueError in the reshape
                   *[(1, 1, k) for k in range(1, 200)],  # each fits a slot, each a new shape
                   (2, H, W, 3)]  # two cameras' worth: more than a slot holds
        for i, shape in enumerate(crafted):
            f["ndim"], f["shape"] = len(shape), 0
            f["shape"][: len(shape)] = shape
            slot = fake.pool.acquire()  # a slot that really holds a frame: the descriptor passes is_current
            f["slot"], f["generation"], f["frame_id"] = slot, fake.pool.publish(slot), 10_000 + i
            fake.pubs["frames"].send(wire.encode(f))
            time.sleep(0.005)  # under the sockets' high-water mark: every one arrives
        deadline = time.monotonic() + 30
        while stage.rejected < len(crafted):
            assert h.thread.is_alive(), "the recorder crashed on a crafted descriptor"
            assert time.monotonic() < deadline, f"{stage.rejected} of {len(crafted)} rejected"
            time.sleep(0.01)
        assert len(stage.pool._views) <= 4 * stage.pool.n_slots
        fake.run(0.5, first_id=20_000)  # real frames are still recorded
        deadline = time.monotonic() + 30
        while stage.frames == 0:
            assert time.monotonic() < deadline and h.thread.is_alive()
            time.sleep(0.01)
    finally:
        fake.close()
        h.close()


def test_clip_around_a_takeover_holds_pre_and_post_seconds_and_grows_with_a_second_event(tmp_path, tiny_model):
    h, fake = _start_recorder(tmp_path, tiny_model, pre_s=0.5, post_s=0.5, ring_s=2.0)
    marks = {}
    try:
        fid = fake.run(1.0, 1)  # quiet: nothing is written
        assert not list((tmp_path / "rec").iterdir())
        fake.takeover_from = fid + 5
        trigger_id = fid + 5 + 9  # an operator trigger 0.3 s into the clip
        at = {fid + 5: lambda: marks.setdefault("takeover", time.monotonic_ns()),
              trigger_id: lambda: (marks.setdefault("operator", time.monotonic_ns()), h.stage.trigger())}
        fid = fake.run(2.0, fid, at)
        deadline = time.monotonic() + 5
        while not h.stage.writer.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        stage = h.stage
    finally:
        fake.close()  # its sockets first: the harness terminates the ZeroMQ context
        h.close()
    assert h.code == 0
    assert stage.frames == fake.sent and stage.dropped == 0 and stage.rejected == 0  # nothing missed
    clips = sorted((tmp_path / "rec").glob("*.mcap"))
    assert len(clips) == 1, clips  # the operator trigger inside the clip extended it, no second file
    info = mcapio.inspect(clips[0])
    meta = info.metadata["edgert"]
    assert info.complete and meta["region"] == "sim" and meta["event_kind"] == "takeover"
    assert meta["event_reason"] == "deadline" and meta["model_sha256"] and json.loads(meta["config"])
    offset = int(meta["wall_offset_ns"])
    events = [json.loads(m.data) for _, m in mcapio.iter_messages(clips[0], {mcapio.EVENTS_TOPIC})]
    assert [(e["kind"], e["reason"]) for e in events] == [("takeover", "deadline"), ("operator", "operator")]
    t_take, t_op = events[0]["t_ns"], events[1]["t_ns"]
    assert 0 <= t_take - marks["takeover"] < 100e6 and 0 <= t_op - marks["operator"] < 100e6
    frames = [(m.log_time - offset, mcapio.decode_raw_frame(m.data))
              for _, m in mcapio.iter_messages(clips[0], {mcapio.RAW_TOPIC})]
    first_t, last_t = frames[0][0], frames[-1][0]
    period = 1e9 / 30
    assert t_take - 0.5e9 <= first_t <= t_take - 0.5e9 + 2 * period  # pre_s before the takeover
    assert t_op + 0.5e9 - 2 * period <= last_t <= t_op + 0.5e9  # post_s after the last event
    ids = [fr.frame_id for _, fr in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap inside the clip
    for _, fr in frames:
        assert np.array_equal(fr.pixels, frame_pixels(fr.frame_id))  # the pixels the camera wrote, bit for bit
    cmds = [json.loads(m.data) for _, m in mcapio.iter_messages(clips[0], {"/commands"})]
    assert any(c["flags"] == 3 and c["reason"] == int(TakeoverReason.DEADLINE) for c in cmds)
    stats = info.metadata["edgert.stats"]
    assert json.loads(stats["lost_messages"]) == 0 and json.loads(stats["pre_short_s"]) == 0


def test_a_slow_disk_makes_the_writer_drop_and_count_never_the_receive_loop(tmp_path, tiny_model, monkeypatch):
    real_write = mcapio.McapFile.write
    writers: set[int] = set()  # the threads that wrote to the disk

    def slow_write(self, topic, *args):  # type: ignore[no-untyped-def]
        if topic == mcapio.RAW_TOPIC:
            writers.add(threading.get_ident())
            time.sleep(0.08)  # a disk that takes 80 ms per frame: 12 frames/s for 30 coming in
        real_write(self, topic, *args)
    monkeypatch.setattr(mcapio.McapFile, "write", slow_write)
    h, fake = _start_recorder(tmp_path, tiny_model, mode="all", pre_s=0.0, ring_s=0.3)
    steppers: set[int] = set()  # the threads that ran the receive loop
    real_step = h.stage.step

    def watched_step() -> None:
        steppers.add(threading.get_ident())
        real_step()
    h.stage.step = watched_step
    try:
        fake.run(2.0, 1)
        time.sleep(0.2)
        stage = h.stage
    finally:
        fake.close()  # its sockets first: the harness terminates the ZeroMQ context
        h.close()
    w = stage.writer
    assert stage.frames == fake.sent and stage.missed == 0  # every frame reached the ring
    assert w.lost_frames > 0.3 * fake.sent  # the writer could not keep up: frames lost, and counted
    assert stage.dropped == w.lost_frames + stage.overwritten
    # the receive loop never waited for the disk: another thread made every write (whatever the load,
    # where a bound on how long a step took would measure the scheduler)
    assert writers and steppers and not writers & steppers, (writers, steppers)
    written = sum(mcapio.inspect(p).topics.get(mcapio.RAW_TOPIC, 0) for p in w.closed)
    assert written + w.lost_frames == stage.frames
    lost = sum(json.loads(mcapio.inspect(p).metadata["edgert.stats"]["lost_messages"]) for p in w.closed)
    assert lost == w.lost  # each file says how much it is missing


def _smooth(frame_id: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 3, y * 4, (x + y + frame_id) % 256], axis=-1)
    return (img % 256).astype(np.uint8)


def test_jpeg_frames_are_foxglove_compressed_images_of_the_camera_frames(tmp_path, tiny_model):
    import base64

    import cv2

    h, fake = _start_recorder(tmp_path, tiny_model, pattern=_smooth, mode="all", frames="jpeg", pre_s=0.0)
    try:
        fake.run(0.5, 1)
        time.sleep(0.2)
    finally:
        fake.close()
        h.close()
    (path,) = (tmp_path / "rec").glob("*.mcap")
    info = mcapio.inspect(path)
    assert info.schemas[mcapio.JPEG_TOPIC] == "foxglove.CompressedImage" and mcapio.RAW_TOPIC not in info.topics
    n = 0
    for _, m in mcapio.iter_messages(path, {mcapio.JPEG_TOPIC}):
        obj = json.loads(m.data)
        assert obj["format"] == "jpeg" and set(obj["timestamp"]) == {"sec", "nsec"}
        img = cv2.imdecode(np.frombuffer(base64.b64decode(obj["data"]), np.uint8), cv2.IMREAD_COLOR)
        ref = _smooth(obj["edgert_frame_id"]).astype(np.int16)
        assert img.shape == (H, W, 3) and np.abs(img.astype(np.int16) - ref).mean() < 8  # lossy, but that frame
        n += 1
    assert n == fake.sent


def test_frame_filter_and_clip_hooks_run_on_what_is_written(tmp_path, tiny_model):
    def black_top(bgr: np.ndarray) -> None:  # stands in for the anonymiser: edits in place
        bgr[: H // 2] = 0

    def moved(path: Path) -> Path:  # stands in for encryption at rest
        dest = path.with_name(path.name + ".done")
        path.rename(dest)
        return dest

    class Hooked(RecorderStage):
        def __init__(self, ctx):  # type: ignore[no-untyped-def]
            super().__init__(ctx, frame_filter=black_top, on_clip_closed=moved)

    h, fake = _start_recorder(tmp_path, tiny_model, stage_cls=Hooked, mode="all", pre_s=0.0)
    try:
        fake.run(0.5, 1)
        time.sleep(0.2)
        closed = h.stage.writer.closed
    finally:
        fake.close()
        h.close()
    assert [p.name.endswith(".mcap.done") for p in closed] == [True]
    assert mcapio.read_metadata(closed[0])["anonymised"] == "true"
    frames = [mcapio.decode_raw_frame(m.data) for _, m in mcapio.iter_messages(closed[0], {mcapio.RAW_TOPIC})]
    assert len(frames) == fake.sent
    for fr in frames:
        want = frame_pixels(fr.frame_id)
        want[: H // 2] = 0
        assert np.array_equal(fr.pixels, want)


def test_a_frame_the_filter_fails_on_is_dropped_and_counted_never_written_unfiltered(tmp_path, tiny_model):
    calls = {"n": 0}

    def flaky(bgr: np.ndarray) -> None:  # every fifth frame: the anonymiser raises
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise RuntimeError("detector failed")
        bgr[: H // 2] = 0

    class Hooked(RecorderStage):
        def __init__(self, ctx):  # type: ignore[no-untyped-def]
            super().__init__(ctx, frame_filter=flaky)

    h, fake = _start_recorder(tmp_path, tiny_model, stage_cls=Hooked, mode="all", pre_s=0.0)
    try:
        fake.run(0.5, 1)
        time.sleep(0.2)
        stage = h.stage
    finally:
        fake.close()
        h.close()
    (path,) = stage.writer.closed
    frames = [mcapio.decode_raw_frame(m.data) for _, m in mcapio.iter_messages(path, {mcapio.RAW_TOPIC})]
    assert stage.filter_failed == fake.sent // 5 > 0
    assert len(frames) == fake.sent - stage.filter_failed  # the failed ones are missing, not there in the clear
    assert all(not fr.pixels[: H // 2].any() for fr in frames)
    assert mcapio.read_metadata(path)["anonymised"] == "true"  # true: every frame written went through the filter
    assert stage.dropped == stage.filter_failed and stage.errors == stage.filter_failed


FW, FH = 320, 240  # frames big enough for a face detector


def _face_scene(frame_id: int) -> np.ndarray:
    """A dim noisy frame (different per frame) with the synthetic face in it."""
    from edgert.bench.anonymise import draw_face

    img = np.random.default_rng(frame_id).integers(60, 120, (FH, FW, 3), dtype=np.uint8)
    draw_face(img, 40, 30, scale=0.4)  # a 256 x 192 patch, the oval 64 x 84 px at (136, 84)
    return img


def test_recorder_in_an_anonymise_and_encrypt_region_writes_encrypted_anonymised_clips(tmp_path, tiny_model,
                                                                                         capsys):
    from edgert.runtime.fleet import audit, crypto
    from edgert.runtime.fleet.anonymise import Anonymiser

    keys = tmp_path / "keys"
    crypto.keygen(keys, "eu")
    # region eu of the shipped policy: anonymise = true, encrypt = true; hooks come from the policy, not the test
    h, fake = _start_recorder(tmp_path, tiny_model, pattern=_face_scene, size=(FW, FH), region="eu", mode="all",
                              pre_s=0.0, keys_dir=str(keys))
    try:
        assert isinstance(h.stage.frame_filter, Anonymiser) and h.stage.on_clip_closed is not None
        fake.run(0.5, 1)
        time.sleep(0.2)
        stage = h.stage
    finally:
        fake.close()
        h.close()
    assert h.code == 0 and stage.filter_failed == 0
    rec = tmp_path / "rec"
    (enc,) = stage.writer.closed
    assert enc.name.endswith(".mcap" + crypto.SUFFIX) and sorted(rec.iterdir()) == [enc]  # no plaintext left
    assert crypto.read_header(enc)["region"] == "eu"
    assert cli.main(["record", "list", str(rec)]) == 0
    assert f"encrypted {enc.name}  region=eu anonymised=true" in capsys.readouterr().out
    with pytest.raises(crypto.CryptoError):  # another region's key does not open it
        crypto.decrypt_file(enc, crypto.load_key(keys, crypto.keygen(keys, "us").stem))
    plain = tmp_path / "clip.mcap"
    crypto.decrypt_file(enc, crypto.load_key(keys, "eu"), plain)
    info = mcapio.inspect(plain)
    assert info.complete and info.region == "eu" and info.metadata["edgert"]["anonymised"] == "true"
    ref = Anonymiser((FH, FW, 3))
    frames = [mcapio.decode_raw_frame(m.data) for _, m in mcapio.iter_messages(plain, {mcapio.RAW_TOPIC})]
    assert len(frames) == fake.sent > 0
    face = (slice(84 + 17, 84 + 67), slice(136 + 13, 136 + 51))  # inside the oval: eyes, nose, mouth
    for fr in frames:
        original = _face_scene(fr.frame_id)
        want = original.copy()
        assert ref(want) >= 1  # the face is found in every frame
        assert np.array_equal(fr.pixels, want)  # what was written is exactly the anonymised frame
        assert np.count_nonzero(original[face] < 60) > 100 and np.count_nonzero(fr.pixels[face] < 60) == 0
        assert np.array_equal(fr.pixels[:, 260:], original[:, 260:])  # away from the face: as the camera saw it

    # export under the policy: eu -> cn is forbidden, eu -> us has an approved transfer; both audited
    log = tmp_path / "audit.jsonl"
    common = ["--audit", str(log), "--keys", str(keys)]
    assert cli.main(["fleet", "export", str(enc), "--to", "cn", "--dest", str(tmp_path / "cn"), *common]) == 1
    assert "REFUSED" in capsys.readouterr().err and not (tmp_path / "cn").exists()
    assert cli.main(["fleet", "export", str(enc), "--to", "us", "--dest", str(tmp_path / "us"), *common]) == 0
    assert (tmp_path / "us" / enc.name).read_bytes() == enc.read_bytes()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["to"]) for e in entries] == [("export_refused", "cn"), ("export", "us")], entries
    assert "transfer" in entries[0]["reason"] or "cn" in entries[0]["reason"]
    assert audit.verify(log).ok


def test_record_policy_keys_are_checked(tiny_model, tmp_path):
    base = {"infer": {"model": str(tiny_model)}}
    with pytest.raises(ConfigError, match=r"record.policy / record.region: region 'xx' is not in the policy"):
        from_dict({**base, "record": {"enabled": True, "region": "xx"}})
    with pytest.raises(ConfigError, match=r"record.policy / record.region: policy file .*nope.toml not found"):
        from_dict({**base, "record": {"enabled": True, "region": "eu", "policy": str(tmp_path / "nope.toml")}})
    cfg = from_dict({**base, "record": {"enabled": True, "region": "xx", "policy": "off"}})  # replay's scratch
    assert cfg.record_path("policy") is None and cfg.record_path("face_model") is None
    cfg = from_dict({**base, "record": {"keys_dir": "k", "face_model": "yunet.onnx"}}, base_dir=tmp_path)
    assert cfg.record_path("keys_dir") == tmp_path / "k" and cfg.record_path("face_model") == tmp_path / "yunet.onnx"


def test_a_region_whose_duty_cannot_be_met_fails_the_recorder_start(tmp_path, tiny_model):
    cfg = from_dict({"camera": {"width": W, "height": H}, "infer": {"model": str(tiny_model)},
                     "record": {"enabled": True, "region": "eu", "dir": str(tmp_path / "rec"),
                                "keys_dir": str(tmp_path / "no-keys")}})
    h = StageHarness(cfg)
    try:
        from edgert.runtime.fleet.crypto import CryptoError
        from edgert.runtime.stage import StageContext

        stage = RecorderStage(StageContext("recorder", cfg, h.run_id, h.endpoints, h.zmq, h.stop))
        with pytest.raises(CryptoError, match="eu"):  # no key for eu: no recording rather than one in the clear
            stage.setup()
    finally:
        h.close()


def test_a_policy_off_recording_is_authenticated_so_it_can_be_pruned_and_replayed(tmp_path, tiny_model):
    """record.policy = "off" (replay's scratch recordings) skips the region's duties, not the vehicle
    key: without `edgert.auth` export, prune and replay refuse a clip, and prune could never delete it."""
    from edgert.runtime.fleet import crypto
    from edgert.runtime.fleet.audit import AuditLog
    from edgert.runtime.fleet.export import authenticated_metadata, prune, read_clip_info
    from edgert.runtime.fleet.policy import Policy

    h, fake = _start_recorder(tmp_path, tiny_model, policy="off", mode="all", pre_s=0.0)
    try:
        fake.run(0.5, 1)
    finally:
        fake.close()
        h.close()
    assert h.code == 0
    clips = sorted((tmp_path / "rec").glob("*.mcap"))
    assert len(clips) == 1, clips
    keys = tmp_path / "fleet-keys"
    auth = mcapio.inspect(clips[0]).metadata.get(mcapio.AUTH_RECORD)
    assert auth is not None and auth["key_id"] == crypto.key_id(crypto.load_key(keys, crypto.VEHICLE))
    assert read_clip_info(clips[0], keys).region == "sim"  # what export and prune decide on
    with open(clips[0], "rb") as f:
        meta, encrypted = authenticated_metadata(f, clips[0], keys)  # what replay checks first
    assert meta["region"] == "sim" and not encrypted
    later = time.time_ns() + 8 * 24 * 3600 * 10**9  # past sim's 7-day retention
    res = prune(tmp_path / "rec", Policy.load(paths.fleet_policy()),
                AuditLog(tmp_path / "audit.jsonl"), later, keys)
    assert res.errors == [] and res.deleted == clips and not clips[0].exists()


# -- a real pipeline: takeover clip, then the recorder SIGKILLed mid-clip ---------------------------
def test_takeover_clip_in_a_real_pipeline_survives_a_recorder_killed_mid_clip(tmp_path):
    from edgert.runtime.supervisor import Supervisor

    model, keys = signed_tiny(tmp_path)
    rec_dir = tmp_path / "rec"
    # a pre-roll longer than the deadline, so it reaches back before the kill (results in the clip); the
    # recorder at the pipeline's priority: at its default (SCHED_IDLE) a CPU-bound process beside the
    # test starves it, by design, and the clip loses frames
    cfg = pipeline_config(model, keys, dir=str(rec_dir), pre_s=1.0, post_s=1.0, ring_s=2.0, nice=0, idle_class=False)
    # each step waits for what the last one caused, so a loaded machine only makes it slower; the run
    # stops once the restarted recorder has reported the cut clip (600 s: only a bound for a hung test)
    sup = Supervisor(cfg, duration_s=600.0, mode="processes")
    marks: dict[str, float] = {}

    def wait_for(cond) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 120
        while not cond():
            assert time.monotonic() < deadline and not sup.stop_requested.is_set(), "chaos step timed out"
            time.sleep(0.05)

    def clips(suffix: str) -> list[Path]:
        return [p for p in rec_dir.glob("*" + suffix) if not p.name.endswith(mcapio.TRUNCATED)]

    def chaos() -> None:
        try:
            wait_for(lambda: sup.running.is_set())
            time.sleep(1.5)  # at least the pre-roll (1 s) of frames in the recorder's ring
            marks["kill_infer"] = time.monotonic_ns()
            os.kill(sup.handles["infer"].pid, signal.SIGKILL)  # control fails safe: a DEADLINE takeover
            wait_for(lambda: clips(".mcap"))  # the takeover clip has closed (1 s after the event)
            marks["trigger_rc"] = cli.main(["record", "trigger", "--run", sup.run_id])  # SIGUSR1: a second clip opens
            wait_for(lambda: clips(".partial"))
            time.sleep(0.3)  # some frames in it
            recorder = sup.handles["recorder"].pid
            os.kill(recorder, signal.SIGKILL)  # ... and the recorder dies inside it
            wait_for(lambda: list(rec_dir.glob("*" + mcapio.TRUNCATED)))  # its successor found the cut-off file
        finally:
            sup.stop_requested.set()
    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    s = sup.run()
    t.join()
    assert marks["trigger_rc"] == 0
    assert s["stages"]["infer"]["restarts"] == 1 and s["stages"]["recorder"]["restarts"] == 1, s["stages"]
    files = sorted(rec_dir.glob("*.mcap"))
    whole = [p for p in files if not p.name.endswith(mcapio.TRUNCATED)]
    cut = [p for p in files if p.name.endswith(mcapio.TRUNCATED)]
    assert len(whole) == 1 and len(cut) == 1, files
    assert not list(rec_dir.glob("*.partial"))  # the restarted recorder renamed the cut-off file

    info = mcapio.inspect(whole[0])  # the clip written before the crash is whole and readable
    meta = info.metadata["edgert"]
    assert info.complete and meta["event_kind"] == "takeover" and meta["event_reason"] == "deadline"
    offset = int(meta["wall_offset_ns"])
    event = next(json.loads(m.data) for _, m in mcapio.iter_messages(whole[0], {mcapio.EVENTS_TOPIC}))
    assert 0 < event["t_ns"] - marks["kill_infer"] < cfg.deadline_ns + 2e9  # caused by the kill (bound: not a speed check)
    frame_times = [m.log_time - offset for _, m in mcapio.iter_messages(whole[0], {mcapio.RAW_TOPIC})]
    assert frame_times[0] <= event["t_ns"] - 1.0e9 + 0.1e9  # the pre-roll, from before the takeover
    assert frame_times[-1] >= event["t_ns"] + 1.0e9 - 0.2e9  # post_s after it
    assert info.topics["/commands"] > 0 and info.topics["/results"] > 0

    bad = mcapio.inspect(cut[0])  # the clip the crash interrupted: reported, with what it holds
    assert not bad.complete and bad.error
    assert bad.metadata["edgert"]["event_kind"] == "operator" and bad.region == "sim"
    # the restarted recorder sealed its readable part (the vehicle key's word on it): export may decide on it
    from edgert.runtime.fleet.export import read_clip_info
    assert bad.metadata["edgert.seal"]["recovered"] and "cut off by a crash" in bad.error
    fleet_keys = cfg.record_path("keys_dir")
    assert read_clip_info(cut[0], fleet_keys).region == "sim" and read_clip_info(whole[0], fleet_keys).region == "sim"
    assert cli.main(["record", "list", str(rec_dir)]) == 1


# -- the supervisor and the recorder: an early operator trigger, a recorder that keeps crashing ----------
class SlowStartRecorder(RecorderStage):
    """A recorder whose process takes a while to start (imports, a big ring): the trigger lands in here.
    It waits, before RecorderStage installs its SIGUSR1 handler, until the test says the trigger was
    sent (a file it makes), so the trigger lands in that window however loaded the machine is."""

    def __init__(self, ctx):  # type: ignore[no-untyped-def]
        sent = Path(os.environ["EDGERT_TEST_TRIGGER_SENT"])
        deadline = time.monotonic() + 120  # only a bound for a test that never sends it
        while not sent.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        super().__init__(ctx)


class CrashingRecorder(RecorderStage):
    def step(self) -> None:
        super().step()
        if self.frames >= 5:  # once the pipeline runs (frames flow only after every stage is ready)
            raise RuntimeError("recorder bug")


def test_an_operator_trigger_sent_while_the_recorder_starts_is_kept_not_fatal(tmp_path, monkeypatch):
    from edgert.runtime.supervisor import Supervisor
    from edgert.runtime.wire import StageState

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    model, keys = signed_tiny(tmp_path)
    rec_dir = tmp_path / "rec"
    marker = tmp_path / "trigger-sent"
    monkeypatch.setenv("EDGERT_TEST_TRIGGER_SENT", str(marker))
    cfg = pipeline_config(model, keys, dir=str(rec_dir), pre_s=0.2, post_s=0.3, ring_s=1.0)
    sup = Supervisor(cfg, duration_s=2.0, mode="processes",
                     stage_classes={"recorder": f"{Path(__file__).stem}:SlowStartRecorder"})
    sent: dict[str, object] = {}

    def trigger_asap() -> None:
        deadline = time.monotonic() + 120  # only a bound for a hung test
        try:
            while time.monotonic() < deadline and "recorder" not in getattr(sup, "handles", {}):
                time.sleep(0.01)
            while time.monotonic() < deadline:  # as soon as the process is called edgert-recorder
                if cli.main(["record", "trigger", "--run", sup.run_id]) == 0:
                    sent["state"] = sup.status["recorder"].state
                    return
                time.sleep(0.01)
        finally:
            marker.touch()  # the recorder may go on starting
    t = threading.Thread(target=trigger_asap, daemon=True)
    t.start()
    s = sup.run()
    t.join()
    assert sent["state"] not in (StageState.READY, StageState.RUNNING)  # it did arrive before the recorder was up
    assert s["stages"]["recorder"]["restarts"] == 0, s["stages"]  # ... and did not kill it
    (clip,) = rec_dir.glob("*.mcap")  # it became a clip once the recorder ran
    assert mcapio.read_metadata(clip)["event_kind"] == "operator"


def test_a_recorder_that_keeps_crashing_is_given_up_and_the_run_and_control_go_on(tmp_path, caplog):
    import logging

    from edgert.runtime.supervisor import MAX_RESTARTS, Supervisor

    model, keys = signed_tiny(tmp_path)
    cfg = pipeline_config(model, keys, dir=str(tmp_path / "rec"), mode="all", pre_s=0.0, ring_s=1.0)
    sup = Supervisor(cfg, duration_s=6.0, mode="threads",
                     stage_classes={"recorder": f"{Path(__file__).stem}:CrashingRecorder"})
    with caplog.at_level(logging.ERROR, logger="edgert.supervisor"):
        s = sup.run()
    rec = s["stages"]["recorder"]
    assert rec["given_up"] and rec["restarts"] == MAX_RESTARTS, s["stages"]
    assert s["exit_reason"] == "duration 6 s reached"  # the run was not ended by it
    assert not any(st["given_up"] or st["restarts"] for n, st in s["stages"].items() if n != "recorder")
    c = s["commands"]
    assert c["model_commands"] > 0.8 * c["commands"], c
    assert set(c["takeover_reasons"]) <= {"SHUTDOWN"}, c  # control never noticed: no takeover but the planned stop
    given_up = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert len(given_up) == 1 and "the pipeline and control run on without it" in given_up[0]
    assert "fail-safe" not in given_up[0]
