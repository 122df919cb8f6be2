"""recorder: frames, model outputs, commands, vehicle state and events into MCAP clips.

An optional fifth stage (record.enabled). It must never slow the control path, so it is a
process of its own at the lowest priority (SCHED_IDLE, or os.nice), it only subscribes to the
pipeline's data (a ZeroMQ publisher never waits for a slow subscriber: past the high-water mark
messages to it are dropped) and publishes one acknowledgement, `recorded`, that nothing on the
control path reads (a max-speed replay waits for it, runtime/stages/replaysource.py),
and its receive loop only copies into a preallocated ring (runtime/fleet/ring.py): a camera
frame is copied straight from its frame-pool slot, and dropped and counted if the camera
overwrote the slot during the copy (the seqlock). The copy waits until the frame's command
is out (or a frame period has passed): then the pipeline is idle until the next frame, and
the 6 MB copy does not compete for memory bandwidth with the stages working on that frame.
Turning entries into MCAP messages and writing files happens on a writer thread
(runtime/fleet/clips.py) that drops and counts when the disk is slow, and never holds the receive
loop up.

Events open clips: the start of a takeover request (a command with the TAKEOVER flag after
one without; SHUTDOWN is a planned stop, not an event) and operator triggers (SIGUSR1 to
the edgert-recorder process, `edgert record trigger`, or `trigger()` in threads mode).

Hooks for fleet policy, plain callables: `frame_filter(bgr)` edits a frame in place before
it is written (anonymisation), `on_clip_closed(path) -> path` takes each finished file
(encryption at rest). Both run on the writer thread, never on the receive loop. Unless given
to the constructor, setup builds them from the residency policy for record.region
(runtime/fleet/export.recorder_hooks): a region that requires anonymisation gets the
Anonymiser, one that requires encryption gets its key, and a duty that cannot be met (no key,
no face detector) fails the start rather than recording in the clear. A frame the filter
fails on is dropped and counted, never written unfiltered, so a file's `anonymised` flag is
true exactly when every frame in it went through the filter. Files a crash cut off are
renamed *.truncated.mcap at the next start and, where the policy encrypts, encrypted then.
Every file's metadata is authenticated with the vehicle key (`edgert.auth`, made at the first
start), so export, prune and replay can refuse an edited one; a file that cannot be encrypted
is quarantined unreadable (runtime/fleet/export.encrypt_or_quarantine).
A file's content is sealed to that metadata at close (`edgert.seal`, runtime/fleet/seal.py), so
genuine metadata moved onto other messages is refused too; a cut-off file's readable part is
sealed when it is recovered, before the encryption hook sees it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import zmq

from edgert.runtime import wire
from edgert.runtime.config import ConfigError, ring_bytes
from edgert.runtime.fleet import crypto, mcapio
from edgert.runtime.fleet.clips import ClipPolicy, ClipWriter, Event
from edgert.runtime.fleet.export import recorder_hooks
from edgert.runtime.fleet.policy import Policy
from edgert.runtime.fleet.ring import Ring
from edgert.runtime.framepool import FramePool, SlotError
from edgert.runtime.manifest import load_manifest
from edgert.runtime.node import Node
from edgert.runtime.signals import set_on_signal
from edgert.runtime.stage import StageContext
from edgert.runtime.topics import CAMERA_STREAM, STREAM_IDS, layout
from edgert.runtime.transport import confirmed_subscribers, publisher, subscriber
from edgert.runtime.wire import CommandFlags, MsgType, TakeoverReason

FRAMES, RESULTS, COMMANDS, VEHICLE, EVENTS = range(5)  # topic ids in the ring
_WIRE = {"results": (RESULTS, MsgType.RESULT), "commands": (COMMANDS, MsgType.COMMAND),
         "vehicle": (VEHICLE, MsgType.VEHICLE)}
_MCAP_TOPIC = {RESULTS: "/results", COMMANDS: "/commands", VEHICLE: "/vehicle", EVENTS: mcapio.EVENTS_TOPIC}
DRAIN_PER_STEP = 16  # messages per socket per step, so a burst never delays heartbeats
CONNECT_WAIT_S = 30.0  # setup: for the subscriptions' handshakes (a stage that binds late is still loading)
_FRAME_HEADER = wire.LAYOUTS[MsgType.FRAME].itemsize
_U8 = wire.CODE_OF_DTYPE[np.dtype(np.uint8)]

_TO_BGR = {"rgb": "COLOR_RGB2BGR", "nv12": "COLOR_YUV2BGR_NV12", "i420": "COLOR_YUV2BGR_I420",
           "yuyv": "COLOR_YUV2BGR_YUYV"}  # cv2 codes by name: cv2 is imported on the writer thread only
FrameFilter = Callable[[np.ndarray], object]  # edits the frame in place; what it returns is ignored
ClipHook = Callable[[Path], Path]


class _Pending(NamedTuple):
    """A received frame whose copy into the ring waits for its command."""
    msg: bytes  # the descriptor, stored in the ring before the pixels
    slot: int
    generation: int
    pixels: np.ndarray  # the slot's view
    received_ns: int
    frame_id: int


def edgert_version() -> str:
    try:
        return importlib.metadata.version("edgert")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class RecorderStage(Node):
    name = "recorder"

    def __init__(self, ctx: StageContext, frame_filter: FrameFilter | None = None,
                 on_clip_closed: ClipHook | None = None) -> None:
        self._operator = threading.Event()
        self._operator_reason = "operator"
        if threading.current_thread() is threading.main_thread():  # processes mode: `edgert record trigger`
            # First thing: SIGUSR1's default action ends the process. The supervisor starts stage
            # processes with it blocked, so a trigger sent while we started up is pending, not fatal:
            # it is delivered here, once handled, and becomes a clip at the first step.
            set_on_signal(signal.SIGUSR1, self._operator)  # the handler must not take its lock (runtime/signals.py)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        super().__init__(ctx)
        self.frame_filter = frame_filter
        self.on_clip_closed = on_clip_closed
        self.writer: ClipWriter | None = None
        self.overwritten = 0  # frames the camera reused the slot of while we copied them
        self.missed = 0  # frame ids never recorded: lost at a high-water mark, or their slot reused before we read it
        self.filter_failed = 0  # frames the filter raised on: dropped, never written unfiltered
        # The frame whose copy waits until its command is out (or a frame period passes), so that the
        # 6 MB copy runs in the pipeline's idle time, not beside the stages working on that frame.
        self._pending: _Pending | None = None
        self._last_command_frame = 0
        self._last_done: bytes | None = None  # the last `recorded` message, sent again while idle

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        rec, cam = self.cfg.record, self.cfg.camera
        self.frame_shape = layout(CAMERA_STREAM, self.cfg).shape  # (N, ...) for N cameras
        self._lower_priority()
        self.dir = self.cfg.record_dir()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # recordings are personal data
        self._policy_hooks()
        for info in mcapio.recover_partials(self.dir, seal_key=self.auth_key):  # the key vouches for its own files
            self.log.warning("found a recording cut off by a crash: %s, %d readable message(s) (%s); kept, "
                             "renamed *%s", info.path.name, info.messages, info.error, mcapio.TRUNCATED)
            if self.on_clip_closed is not None:  # the region's duty applies to what the crash left too
                try:
                    self.log.info("cut-off recording now %s", self.on_clip_closed(info.path).name)
                except Exception as e:  # noqa: BLE001 - said so; an encryption hook quarantines what it cannot encrypt
                    self.log.error("could not apply on_clip_closed to %s: %s", info.path.name, e)
        manifest = load_manifest(self.cfg.model_dir(), pin=self.ctx.manifest_sha256)  # the run's approved one
        self.wall_offset = mcapio.wall_offset_ns()
        self.meta = {
            "region": rec.region, "vehicle_id": rec.vehicle_id or socket.gethostname(), "run_id": self.ctx.run_id,
            "model": manifest.name, "model_version": manifest.version, "model_sha256": manifest.sha256,
            "decoder_index": str(manifest.decoder.index), "decoder_scale": repr(manifest.decoder.scale),
            "edgert_version": edgert_version(), "frames": rec.frames, "mode": rec.mode,
            "camera": f"{cam.width}x{cam.height}@{cam.fps:g}", "wall_offset_ns": str(self.wall_offset),
            # the slots' pixel format (runtime/topics.frame_shape): replay feeds the frames back in it
            "camera_format": cam.format, "yuv_matrix": cam.yuv_matrix, "yuv_range": cam.yuv_range,
            "time": "log_time = receipt, publish_time = capture; CLOCK_MONOTONIC + wall_offset_ns",
            "config": self.cfg.to_json(),
        }
        self.ring = Ring(ring_bytes(self.cfg), int(rec.ring_s * 1e9),
                         max_entries=max(4096, int(rec.ring_s * cam.fps * 8)))
        policy = ClipPolicy(rec.mode, int(rec.pre_s * 1e9), int(rec.post_s * 1e9), int(rec.segment_s * 1e9))
        self._names = 0
        self._copy_after_ns = int(1e9 / cam.fps)  # no command within a frame period: copy anyway
        self.writer = ClipWriter(self.ring, policy, self._new_file, self._convert, self.on_clip_closed,
                                 frame_topic=FRAMES)
        ctx, ep = self.ctx.zmq, self.ctx.endpoints
        self.poller = zmq.Poller()
        self.socks: dict[zmq.Socket, str] = {}
        topics = list(_WIRE) + ([] if rec.frames == "none" else ["frames"])
        camera = self.own(FramePool.attach(self.ctx.run_id, CAMERA_STREAM))
        if rec.frames != "none":
            self.pool = camera
            self.done = self.own(publisher(ctx, ep, "recorded"))  # paces a max-speed replay (runtime/topics.py)
        # Record from the first frame: wait (together) until the subscriptions have connected, except
        # to `vehicle`, which only the simulator publishes, and on a restart into a running pipeline,
        # where the frames of a wait for a dead publisher would be lost.
        confirm = [] if camera.has_published() else [t for t in topics if t != "vehicle"]
        if not confirm:
            self.log.info("the camera is already running (a restart): subscribing without waiting for publishers")
        socks = confirmed_subscribers(ctx, ep, confirm, CONNECT_WAIT_S)
        for topic in topics:
            sock = self.own(socks[topic] if topic in socks else subscriber(ctx, ep, topic))
            self.socks[sock] = topic
            self.poller.register(sock, zmq.POLLIN)
        self._in_takeover = False
        self._event_rec = {"kind": "", "reason": "", "frame_id": 0, "t_ns": 0}
        self.writer.start()
        self.log.info("recording %s (%s frames) to %s: ring %.0f MiB / %.1f s, region %s", rec.mode, rec.frames,
                      self.dir, self.ring.capacity / 2**20, rec.ring_s, rec.region)

    def _policy_hooks(self) -> None:
        """frame_filter / on_clip_closed from the residency policy of record.region, where not given."""
        rec, cam = self.cfg.record, self.cfg.camera
        path = self.cfg.record_path("policy")
        keys_dir = self.cfg.record_path("keys_dir")
        # the vehicle key, whatever the policy: every file's metadata is authenticated with it, or
        # export, prune and replay refuse the file (and prune could never delete it)
        self.auth_key: bytes | None = crypto.load_or_make_key(keys_dir, crypto.VEHICLE)  # type: ignore[arg-type]
        if path is None:
            self.log.warning("record.policy = off: no anonymisation or encryption whatever the region's policy "
                             "says (for replay's scratch recordings; export refuses such clips where duties apply)")
            return
        frame_filter, on_closed = recorder_hooks(Policy.load(path), rec.region, (cam.height, cam.width, 3),
                                                 self.cfg.record_path("keys_dir"),  # type: ignore[arg-type]
                                                 self.cfg.record_path("face_model"))
        if self.frame_filter is None and frame_filter is not None and rec.frames != "none":
            if cam.format != "bgr":  # the anonymiser finds faces and plates in BGR images
                raise ConfigError(f"record.region {rec.region!r}: its policy anonymises frames, which works on BGR "
                                  f"images, and camera.format is {cam.format!r}; set camera.format = \"bgr\", or "
                                  "record.frames = \"none\" in this region")
            self.frame_filter = frame_filter
            self.log.info("region %s: anonymising frames before they are written (%s)", rec.region,
                          frame_filter.describe())  # type: ignore[attr-defined]
        if self.on_clip_closed is None and on_closed is not None:
            self.on_clip_closed = on_closed
            self.log.info("region %s: clips encrypted at rest with %s", rec.region,
                          self.cfg.record_path("keys_dir") / f"{rec.region}.key")  # type: ignore[operator]

    def _lower_priority(self) -> None:
        """SCHED_IDLE (or nice): this process yields the CPU to every pipeline stage.

        Only in a process of its own: beside other stages on threads, a starved recorder thread
        holding the GIL would stall them all (priority inversion), so there it keeps its priority.
        """
        rec = self.cfg.record
        if threading.current_thread() is not threading.main_thread():
            self.log.info("recorder on a thread beside other stages: priority unchanged (they share the GIL)")
            return
        try:
            if rec.idle_class and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            elif rec.nice:
                os.nice(rec.nice)
        except OSError as e:
            self.log.warning("could not lower the recorder's priority (%s); it competes with the pipeline", e)

    def _new_file(self, label: str, event: Event | None) -> mcapio.McapFile:
        self._names += 1
        utc = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{self.meta['region']}_{self.meta['vehicle_id']}_{utc}_{self._names:04d}_{label}.mcap"
        meta = dict(self.meta)
        meta["recorded_ns"] = str(time.time_ns())  # UNIX-epoch ns: retention (fleet prune) is a calendar matter
        # no image, or every image through the anonymisation filter (export checks this for its region)
        meta["anonymised"] = str(self.frame_filter is not None or self.cfg.record.frames == "none").lower()
        if event is not None:
            meta.update(event_kind=event.kind, event_reason=event.reason, event_t_ns=str(event.t_ns),
                        pre_s=repr(self.cfg.record.pre_s), post_s=repr(self.cfg.record.post_s))
        return mcapio.McapFile(self.dir / name.replace("/", "-"), meta, compression=self.cfg.record.compression,
                               auth_key=self.auth_key)

    # -- receive loop ----------------------------------------------------------------------
    def trigger(self, reason: str = "operator") -> None:
        """Ask for a clip around now (thread-safe; SIGUSR1 does the same in processes mode)."""
        self._operator_reason = reason
        self._operator.set()

    def step(self) -> None:
        wait_ms = 50
        if self._pending is not None:
            left = self._pending.received_ns + self._copy_after_ns - time.monotonic_ns()
            if left <= 0:
                self._copy_pending()
            else:
                wait_ms = min(wait_ms, left // 1_000_000 + 1)
        ready = self.poller.poll(wait_ms)
        if not ready and self._last_done is not None and self.done.mailbox is None:
            self.done.send(self._last_done)  # idle: again, for a subscriber that joined late (a mailbox keeps it)
        for sock, _ in ready:
            topic = self.socks[sock]
            for _ in range(DRAIN_PER_STEP):
                try:
                    msg = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if topic == "frames":
                    self._on_frame(msg)
                else:
                    self._on_message(topic, msg)
        if self._operator.is_set():
            self._operator.clear()
            self._event("operator", self._operator_reason, self._last_frame_id)
        w = self.writer
        assert w is not None
        self.errors = w.errors + self.filter_failed
        self.dropped = self.missed + self.overwritten + w.lost_frames + self.filter_failed

    def accept_frame_id(self, frame_id: int) -> bool:
        """As every stage's, but id gaps go to `missed`: `dropped` is recomputed from all the causes."""
        before = self.dropped
        ok = super().accept_frame_id(frame_id)
        self.missed += self.dropped - before
        self.dropped = before
        return ok

    def _on_frame(self, msg: bytes) -> None:
        rec = self.decode(msg, MsgType.FRAME)
        if rec is None:
            return
        if int(rec["stream"]) != STREAM_IDS[CAMERA_STREAM] or int(rec["dtype"]) != _U8:
            self.reject(f"frame descriptor for stream {int(rec['stream'])} dtype code {int(rec['dtype'])}; "
                        "the recorder reads the camera stream (uint8)")
            return
        slot, gen = int(rec["slot"]), int(rec["generation"])
        shape = tuple(int(d) for d in rec["shape"][: int(rec["ndim"])])
        if shape != self.frame_shape:
            self.reject(f"frame descriptor shape {shape}; the camera stream's slots are {self.frame_shape} "
                        f"({self.cfg.camera.format})")
            return
        try:
            if not self.pool.is_current(slot, gen):
                self._done(msg)
                return  # reused already: its id is never accepted, so the next frame's id gap counts it (missed)
            pixels = self.pool.view(slot, shape, np.uint8)
        except SlotError as e:
            self.reject(e)
            return
        frame_id = int(rec["frame_id"])
        if not self.accept_frame_id(frame_id):
            return
        if self._pending is not None:  # a newer frame came before the older one's command: copy that now
            self._copy_pending()
        self._pending = _Pending(msg, slot, gen, pixels, time.monotonic_ns(), frame_id)
        self._copy_if_commanded()  # its command may have been read already

    def _copy_if_commanded(self) -> None:
        """Copy the pending frame once a command for it (or a later frame) is out: the pipeline is
        then idle until the next frame."""
        if self._pending is not None and self._last_command_frame >= self._pending.frame_id:
            self._copy_pending()

    def _copy_pending(self) -> None:
        """Copy the pending frame from its slot into the ring, unless the camera has reused the slot."""
        f, self._pending = self._pending, None
        assert f is not None
        try:
            if not self.pool.is_current(f.slot, f.generation):  # reused while it waited: counted, never torn
                self.overwritten += 1
                return
            dst = self.ring.reserve(_FRAME_HEADER + f.pixels.nbytes)
            dst[:_FRAME_HEADER] = np.frombuffer(f.msg, np.uint8)
            np.copyto(dst[_FRAME_HEADER:].reshape(f.pixels.shape), f.pixels)
            if not self.pool.is_current(f.slot, f.generation):  # the camera lapped us mid-copy: never kept torn
                self.ring.abort()
                self.overwritten += 1
                return
            self.ring.commit(FRAMES, time.monotonic_ns())
            self.frames += 1
        finally:
            self._done(f.msg)

    def _done(self, descriptor: bytes) -> None:
        """Say the recorder is done with this camera frame (topic `recorded`): its slot may be reused."""
        self._last_done = descriptor
        self.done.send(descriptor)

    def _on_message(self, topic: str, msg: bytes) -> None:
        topic_id, msg_type = _WIRE[topic]
        rec = self.decode(msg, msg_type)
        if rec is None:
            return
        dst = self.ring.reserve(len(msg))
        dst[:] = np.frombuffer(msg, np.uint8)
        self.ring.commit(topic_id, time.monotonic_ns())
        if topic_id == COMMANDS:
            self._last_command_frame = max(self._last_command_frame, int(rec["frame_id"]))
            self._copy_if_commanded()
            takeover = bool(int(rec["flags"]) & CommandFlags.TAKEOVER)
            reason = int(rec["reason"])
            if takeover and not self._in_takeover and reason != TakeoverReason.SHUTDOWN:
                # a fail-safe command names no frame (0): the event names the newest frame recorded
                self._event("takeover", TakeoverReason(reason).name.lower(),
                            int(rec["frame_id"]) or self._last_frame_id)
            self._in_takeover = takeover

    def _event(self, kind: str, reason: str, frame_id: int) -> None:
        """Put the event in the ring (so it is in the clip) and hand it to the writer."""
        t = time.monotonic_ns()
        data = json.dumps({"kind": kind, "reason": reason, "frame_id": frame_id, "t_ns": t}).encode()
        dst = self.ring.reserve(len(data))
        dst[:] = np.frombuffer(data, np.uint8)
        self.ring.commit(EVENTS, t)
        assert self.writer is not None
        if self.writer.submit(Event(t, kind, reason, frame_id)):
            self.log.info("event: %s (%s), frame %d: %s", kind, reason, frame_id,
                          "clip requested" if self.cfg.record.mode == "clips" else "marked")
        else:
            self.log.warning("event %s (%s) dropped: %d clip requests already queued", kind, reason,
                             self.writer.events.maxsize)

    # -- writer thread: ring entries -> MCAP messages ------------------------------------------
    def _convert(self, topic_id: int, t_ns: int, data: bytes) -> Iterator[tuple[str, int, int, bytes, int]]:
        log_ns = t_ns + self.wall_offset
        if topic_id == FRAMES:
            msg = self._frame_message(log_ns, data)
            if msg is not None:
                yield msg
        elif topic_id == EVENTS:
            yield mcapio.EVENTS_TOPIC, log_ns, log_ns, data, 0
        else:
            rec = wire.decode(data)  # validated on receipt; decoded again here, off the receive loop
            names = rec.dtype.names or ()
            capture = int(rec["stamps"][wire.Stamp.CAPTURE]) if "stamps" in names else 0
            body = json.dumps(wire.to_dict(rec), separators=(",", ":")).encode()
            yield _MCAP_TOPIC[topic_id], log_ns, capture + self.wall_offset if capture else log_ns, body, \
                int(rec["frame_id"]) if "frame_id" in names else 0

    def _frame_message(self, log_ns: int, data: bytes) -> tuple[str, int, int, bytes, int] | None:
        """The frame as an MCAP message, filtered first if there is a filter; None if the filter failed."""
        frame = mcapio.decode_raw_frame(data)
        pub_ns = frame.capture_ns + self.wall_offset
        pixels = frame.pixels
        if self.frame_filter is not None:
            pixels = pixels.copy()  # the filter edits in place; never the ring's bytes
            try:
                for img in (pixels if pixels.ndim == 4 else (pixels,)):
                    self.frame_filter(img)
            except Exception:  # never written unfiltered: dropped, counted, the file stays anonymised
                self.filter_failed += 1
                if self.filter_failed == 1 or self.filter_failed % 100 == 0:
                    self.log.exception("frame filter failed on frame %d (%d so far): frame dropped",
                                       frame.frame_id, self.filter_failed)
                return None
        if self.cfg.record.frames == "jpeg":
            import cv2

            img = self._bgr(pixels)
            ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.record.jpeg_quality])
            if not ok:
                raise ValueError(f"JPEG encoding failed for frame {frame.frame_id}")
            return mcapio.JPEG_TOPIC, log_ns, pub_ns, mcapio.jpeg_json(jpg.tobytes(), frame.frame_id, pub_ns), \
                frame.frame_id
        if self.cfg.record.frames == "image":  # foxglove.RawImage in the camera's format, bit-exact
            return mcapio.IMAGE_TOPIC, log_ns, pub_ns, mcapio.raw_image_json(
                data[:_FRAME_HEADER], pixels, self.cfg.camera.format, pub_ns), frame.frame_id
        body = data if pixels is frame.pixels else data[:_FRAME_HEADER] + pixels.tobytes()
        return mcapio.RAW_TOPIC, log_ns, pub_ns, body, frame.frame_id

    def _bgr(self, pixels: np.ndarray) -> np.ndarray:
        """One BGR image of a slot's pixels, for JPEG: N cameras side by side, a YUV format decoded
        as OpenCV does (BT.601 limited; JPEG frames are for viewing, not bit-exact)."""
        import cv2

        fmt = self.cfg.camera.format
        images = list(pixels) if self.cfg.camera.cameras > 1 else [pixels]
        if fmt != "bgr":
            images = [cv2.cvtColor(img, getattr(cv2, _TO_BGR[fmt])) for img in images]
        return np.concatenate(images, axis=1) if len(images) > 1 else images[0]

    # -- end ---------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Finish the open file (mode all: everything still in the ring), then report what was lost."""
        if self._pending is not None:  # received: in the ring before the writer's last pass
            self._copy_pending()
        w = self.writer
        if w is not None:
            if not w.stop(timeout=3.0):
                self.log.error("the writer did not finish within 3 s; the open file stays .partial "
                               "(reported as truncated at the next start)")
            self.errors = w.errors + self.filter_failed
            self.dropped = self.missed + self.overwritten + w.lost_frames + self.filter_failed
            self.log.info("recorder: %d frames received, %d file(s) written, %d message(s) lost to a slow writer "
                          "(%d frames), %d overwritten during the copy, %d missed, %d failed the frame filter, "
                          "%d event(s) dropped", self.frames, len(w.closed), w.lost, w.lost_frames, self.overwritten,
                          self.missed, self.filter_failed, w.events_dropped)
        super().teardown()
