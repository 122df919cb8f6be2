"""capture (camera.source = "replay"): a recording's frames, fed through the pipeline again.

The regression check for a new model variant (`edgert replay`): the frames a car recorded go
through today's preprocessing, model and control, and the new outputs are compared with the
recorded ones per frame id. Raw frames (/camera/raw, or /camera/image) are copied into the camera pool exactly
as recorded, in the camera's own pixel format (camera.format must be the recording's: `edgert
replay` sets it from the file's metadata), so the model sees bit-identical input; JPEG frames
(/camera/jpeg) are decoded first (and, for a YUV camera.format, encoded to it as the simulator
does, runtime/pixconvert.py) and are therefore close, not identical.

Frames keep their recorded ids (that is how outputs are matched) and get a fresh CAPTURE stamp
(the pipeline's deadlines apply to the replay as to a live camera). Pacing (replay.speed):
  > 0  the recorded capture times, divided by the speed (1 = as recorded)
  0    as fast as the pipeline drains: the next frame once the command for the last one is out
       (or its result, when control acts on none: a fail-safe), or after a second without either
       (counted as dropped); where the replay records frames, also once the recorder is done with
       the last one (topic `recorded`), so the replay never laps its own recording and every frame
       can be checked (after a second without it the replay goes on, and counts the frame unacknowledged)
A recording that breaks off (truncated) is replayed up to where it is readable, and says so.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import numpy as np

from edgert.runtime.config import ConfigError
from edgert.runtime.fleet import mcapio
from edgert.runtime.pixconvert import BgrTo
from edgert.runtime.stages.source import CameraSource
from edgert.runtime.transport import latest_reader
from edgert.runtime.wire import MsgType

ANSWER_TIMEOUT_NS = 1_000_000_000  # speed 0: a frame with no command or result within this is dropped
RESULT_GRACE_NS = 20_000_000  # speed 0: after its result, how long a command for the frame may take


def frame_topic(path: str, info: mcapio.RecordingInfo | None = None) -> str:
    """/camera/raw, /camera/image or /camera/jpeg, whichever the recording has (in that order);
    RecordingError if none."""
    info = info or mcapio.inspect(path)
    for topic in (mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC, mcapio.JPEG_TOPIC):
        if info.topics.get(topic):
            return topic
    raise mcapio.RecordingError(f"{path}: no frames to replay (topics: {', '.join(info.topics) or 'none'}); it was "
                                "recorded with record.frames = \"none\". Record with frames = \"raw\" for a bit-exact "
                                "replay")


def iter_frames(path: str, topic: str, wall_offset_ns: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """(frame id, capture monotonic ns, pixels) of every recorded frame, in file order."""
    for _, msg in mcapio.iter_messages(path, {topic}):
        if topic in (mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC):
            fr = mcapio.decode_raw_frame(msg.data) if topic == mcapio.RAW_TOPIC else mcapio.decode_raw_image(msg.data)
            yield fr.frame_id, fr.capture_ns, fr.pixels
        else:
            import cv2

            obj = json.loads(msg.data)
            img = cv2.imdecode(np.frombuffer(base64.b64decode(obj["data"]), np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise mcapio.RecordingError(f"{path}: JPEG of frame {obj.get('edgert_frame_id')} does not decode")
            yield int(obj["edgert_frame_id"]), msg.publish_time - wall_offset_ns, img


class ReplayStage(CameraSource):
    detect_stalls = False  # a max-speed replay waits for the recorder; gaps are the recording's

    def setup(self) -> None:
        cam = self.cfg.camera
        self.path = str(self.cfg.replay_file())
        self.speed = self.cfg.replay.speed
        self.topic = frame_topic(self.path)
        meta = mcapio.read_metadata(self.path)
        offset = int(meta.get("wall_offset_ns", "0"))
        recorded = meta.get("camera_format", "bgr")  # files from before formats were recorded hold BGR
        if self.topic != mcapio.JPEG_TOPIC and recorded != cam.format:  # NV12 and I420 even share a shape
            raise ConfigError(f"{self.path}: frames recorded in camera.format {recorded!r}, the pipeline's camera is "
                              f"{cam.format!r}; set camera.format = \"{recorded}\" (`edgert replay` does this itself)")
        self.frames_iter = iter_frames(self.path, self.topic, offset)
        self.pending = self._next_frame()
        if self.pending is None:
            raise mcapio.RecordingError(f"{self.path}: no readable frame")
        self.open_camera()
        self.shape = self.pending[2].shape
        # JPEG frames decode to BGR: encoded to a YUV camera.format as the simulator does
        self.to_format = (BgrTo(cam.format, cam.height, cam.width)
                          if self.topic == mcapio.JPEG_TOPIC and cam.format != "bgr" and cam.cameras == 1 else None)
        want = (cam.height, cam.width, 3) if self.to_format is not None else self.layout.shape
        if self.shape != want:
            raise ConfigError(f"{self.path}: frames are {self.shape} arrays, the pipeline's camera stream wants "
                              f"{want} ({cam.width}x{cam.height} {cam.format}, {cam.cameras} camera(s)); "
                              "set camera.width/height/format/cameras to the recording's (`edgert replay` does "
                              "this itself, from the file's metadata)")
        ctx, ep = self.ctx.zmq, self.ctx.endpoints
        self.commands = self.own(latest_reader(ctx, ep, "commands"))
        self.results = self.own(latest_reader(ctx, ep, "results"))
        rec = self.cfg.record
        self.recorded = (self.own(latest_reader(ctx, ep, "recorded"))
                         if self.speed == 0 and rec.enabled and rec.frames != "none" else None)
        self.finished = False
        self.first_capture = self.pending[1]
        self.awaiting = 0  # speed 0: the frame id whose command we wait for
        self.sent_ns = 0
        self.result_ns = 0
        self.unanswered = 0
        self.commanded = False  # speed 0: the awaited frame's command (or result) is out
        self.unrecorded = 0  # speed 0: frames the recorder did not report done with within a second
        self.last_id = 0

    def _next_frame(self) -> tuple[int, int, np.ndarray] | None:
        try:
            return next(self.frames_iter)
        except StopIteration:
            return None
        except mcapio.TruncatedRecording as e:
            self.log.warning("%s: replaying only the readable part", e)
            return None

    def on_start(self) -> None:
        self.log.info("replaying %s (%s) at %s", self.path, self.topic,
                          "the pipeline's pace" if self.speed == 0 else f"{self.speed:g}x the recorded pace")

    def _names_awaited(self, msg: bytes | None, msg_type: MsgType) -> bool:
        """speed 0: is `msg` valid and about the awaited frame or a later one?"""
        rec = self.decode(msg, msg_type) if msg is not None else None
        return rec is not None and int(rec["frame_id"]) >= self.awaiting

    def _answered(self) -> bool:
        """speed 0: is the command for the awaited frame out (or will none come)?"""
        now = time.monotonic_ns()
        if self._names_awaited(self.commands.recv(5), MsgType.COMMAND):
            return True
        if self._names_awaited(self.results.drain(), MsgType.RESULT) and not self.result_ns:
            self.result_ns = now
        if self.result_ns and now - self.result_ns > RESULT_GRACE_NS:
            return True  # a result control acted on with no command (fail-safe, stale): go on
        if now - self.sent_ns > ANSWER_TIMEOUT_NS:
            self.unanswered += 1
            self.dropped += 1
            return True
        return False

    def _recorder_done(self) -> bool:
        """speed 0, recording frames: has the recorder copied the awaited frame (or given up on it)?"""
        assert self.recorded is not None
        if self._names_awaited(self.recorded.recv(5), MsgType.FRAME):
            return True
        if time.monotonic_ns() - self.sent_ns > ANSWER_TIMEOUT_NS:
            self.unrecorded += 1
            return True
        return False

    def tick(self) -> None:
        if self.finished:
            self.ctx.stop.wait(0.1)
            return
        if self.awaiting:
            self.commanded = self.commanded or self._answered()
            if not self.commanded or (self.recorded is not None and not self._recorder_done()):
                return
            self.awaiting, self.commanded = 0, False
        frame_id, capture_ns, pixels = self.pending  # type: ignore[misc]
        # next_tick: when the supervisor said go (a replay keeps no period of its own)
        if self.speed > 0 and not self.wait_until(self.next_tick + int((capture_ns - self.first_capture) / self.speed)):
            return
        if frame_id <= self.last_id:
            self.reject(f"recorded frame id {frame_id} not after {self.last_id}: skipped")
        else:
            self._publish(frame_id, pixels)
        self.pending = self._next_frame()
        if self.pending is None:
            self.finished = True
            self.log.info("replay finished: %d frames published%s%s", self.frames,
                          f", {self.unanswered} without an answer" if self.unanswered else "",
                          f", {self.unrecorded} the recorder did not report done within a second"
                          if self.unrecorded else "")

    def _publish(self, frame_id: int, pixels: np.ndarray) -> None:
        slot, view = self.output.acquire()
        if self.to_format is not None:
            self.to_format(pixels, view)
        else:
            np.copyto(view, pixels)
        self.output.publish(slot, frame_id)
        self.frames += 1
        self.last_id = frame_id
        if self.speed == 0:
            self.sent_ns = time.monotonic_ns()
            self.result_ns = 0
            self.awaiting = frame_id
