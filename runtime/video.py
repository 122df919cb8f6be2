"""FFmpeg through PyAV, as the video source needs it: open a file or stream URL (hardware decoding
where a device answers, software otherwise), and write a decoded frame into a frame-pool slot in
the pipeline's camera.format with at most one copy.

A decoded frame's planes keep FFmpeg's row padding (`line_size` >= the row's bytes), while a pool
slot is packed (kernels/formats.py): the writers copy the visible part of each row straight into
the slot. Planar YUV 4:2:0 (H.264's usual yuv420p) goes to an I420 slot as three plane copies and
to an NV12 slot as one Y copy and one interleaving pass; BGR/RGB slots take swscale's converted
picture, copied once. A frame of another size or pixel format is converted by swscale first.

PyAV is an optional dependency (the `camera` extra): importing this module does not need it,
`require_av()` says how to install it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.runtime.errors import EdgertError

log = logging.getLogger("edgert.video")

HW_DEVICES = ("cuda", "vaapi", "qsv", "videotoolbox")  # tried in this order, where FFmpeg was built with them
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# what swscale/PyAV calls the slot formats; yuv420p is also what I420 means
AV_FORMAT = {"bgr": "bgr24", "rgb": "rgb24", "i420": "yuv420p", "nv12": "nv12"}
YUV420 = ("yuv420p", "yuvj420p")  # the same planes; yuvj is full range (camera.yuv_range says how it decodes)
OPEN_TIMEOUT_S = 5.0  # a stream that does not answer within this is lost (reconnected with back-off)


class VideoError(EdgertError, ValueError):
    """A video file or stream that cannot be used: missing, unreadable, no video, unsupported codec."""


def require_av() -> Any:
    """The `av` module, or a VideoError saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError("camera.source = \"video\" decodes with FFmpeg through PyAV, which is not installed: "
                         "pip install 'edgert[camera]'") from None
    return av


def is_stream(uri: str) -> bool:
    """A network stream (reconnected when it drops) rather than a file (which ends)."""
    return uri.lower().startswith(STREAM_SCHEMES)


@dataclass
class Opened:
    """An open input: the container, its video stream, and how it is decoded."""

    container: Any
    stream: Any
    decoder: str  # "software h264", "hardware h264 (cuda)"
    why: str  # why that decoder: the devices tried and what they said

    @property
    def rate(self) -> float:
        """The stream's frame rate (frames/s), 0 where the container does not say."""
        r = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        return float(r) if r else 0.0

    @property
    def size(self) -> tuple[int, int]:
        cc = self.stream.codec_context
        return int(cc.width), int(cc.height)

    def close(self) -> None:
        self.container.close()


def open_video(uri: str, hwaccel: bool = True) -> Opened:
    """Open `uri` (a path or stream URL) for decoding its first video stream.

    The input is opened once in software to learn its codec; hardware decoding is then tried on
    the first device type FFmpeg offers (HW_DEVICES) that can decode that codec here (probed
    without the input, so a stream is not reconnected for every device), with software fallback.
    VideoError, naming the input and the fix, if the input is missing, not a video FFmpeg can
    read, or its codec has no decoder here."""
    av = require_av()
    if not is_stream(uri) and not Path(uri).is_file():
        raise VideoError(f"{uri}: no such file; camera.uri names a video file (relative paths resolve against the "
                         "config's folder) or a stream URL (rtsp://, http://)")
    c = _open(av, uri, None)
    name = c.streams.video[0].codec_context.name
    if not hwaccel:
        return Opened(c, c.streams.video[0], f"software {name}", "hardware decoding not asked for")
    device, tried = _hw_device(av, name)
    if device is None:
        why = f"no hardware device: tried {', '.join(tried)}" if tried else "this FFmpeg has no hardware decoding"
        return Opened(c, c.streams.video[0], f"software {name}", why)
    from av.codec.hwaccel import HWAccel

    c.close()
    c = _open(av, uri, HWAccel(device_type=device, allow_software_fallback=True))
    s = c.streams.video[0]
    if getattr(s.codec_context, "is_hwaccel", False):
        return Opened(c, s, f"hardware {name} ({device})", "; ".join([*tried, f"{device}: answered"]))
    return Opened(c, s, f"software {name}", f"{device} answered but FFmpeg's decoder fell back to software")


_HW_PROBED: dict[str, tuple[str | None, list[str]]] = {}  # codec -> (device, what the others said): once a process


def _hw_device(av: Any, codec: str) -> tuple[str | None, list[str]]:
    """The first hardware device type that can decode `codec` here, and why each one before it could not."""
    if codec not in _HW_PROBED:
        from av.codec.hwaccel import HWAccel, hwdevices_available

        offered = set(hwdevices_available())
        tried: list[str] = []
        found: str | None = None
        for device in (d for d in HW_DEVICES if d in offered):
            try:
                HWAccel(device_type=device, allow_software_fallback=True).create(av.codec.Codec(codec, "r"))
            except NotImplementedError:
                tried.append(f"{device}: no hardware decoder for {codec}")
                continue
            except (av.FFmpegError, OSError) as e:
                tried.append(f"{device}: {getattr(e, 'strerror', None) or e}")
                continue
            found = device
            break
        _HW_PROBED[codec] = (found, tried)
    found_device, said = _HW_PROBED[codec]
    return found_device, list(said)


def _open(av: Any, uri: str, hw: Any) -> Any:
    """The container, with its video stream's decoder opened (VideoError if the input is not usable)."""
    try:
        c = av.open(uri, timeout=(OPEN_TIMEOUT_S, OPEN_TIMEOUT_S), hwaccel=hw)
    except av.FFmpegError as e:
        raise VideoError(f"{uri}: FFmpeg cannot read it ({e.strerror or e}); camera.uri must be a video file "
                         "(MP4, MKV, MPEG-TS, raw H.264/H.265, MJPEG) or a stream URL that answers") from None
    if not c.streams.video:
        kinds = ", ".join(s.type for s in c.streams) or "nothing"
        c.close()
        raise VideoError(f"{uri}: no video stream (only {kinds}); camera.uri must name a video")
    s = c.streams.video[0]
    s.thread_type = "AUTO"  # frame and slice threads: FFmpeg's own decoder threads, not the pipeline's
    try:
        s.codec_context.open(strict=False)
    except av.FFmpegError as e:
        c.close()
        raise VideoError(f"{uri}: codec {s.codec_context.name!r} cannot be decoded here ({e}); re-encode it, e.g. "
                         "`ffmpeg -i IN -c:v libx264 OUT.mp4`") from None
    return c


# -- decoded frame -> pool slot ----------------------------------------------------------------------
def plane_rows(plane: Any, row_bytes: int, rows: int) -> np.ndarray:
    """A decoded plane as a (rows, row_bytes) uint8 view, its row padding (line_size) cut off."""
    buf = np.frombuffer(plane, np.uint8)
    return buf[:rows * plane.line_size].reshape(rows, plane.line_size)[:, :row_bytes]


def write_i420(frame: Any, dst: np.ndarray) -> None:
    """A yuv420p frame into an I420 slot (H*3//2, W): Y, then U, then V, each packed."""
    h, w = frame.height, frame.width
    flat = dst.reshape(-1)
    np.copyto(dst[:h], plane_rows(frame.planes[0], w, h))
    q = (h // 2) * (w // 2)
    np.copyto(flat[h * w:h * w + q].reshape(h // 2, w // 2), plane_rows(frame.planes[1], w // 2, h // 2))
    np.copyto(flat[h * w + q:h * w + 2 * q].reshape(h // 2, w // 2), plane_rows(frame.planes[2], w // 2, h // 2))


def write_nv12(frame: Any, dst: np.ndarray) -> None:
    """A yuv420p or nv12 frame into an NV12 slot (H*3//2, W): Y, then U and V interleaved."""
    h, w = frame.height, frame.width
    np.copyto(dst[:h], plane_rows(frame.planes[0], w, h))
    uv = dst[h:].reshape(h // 2, w // 2, 2)
    if frame.format.name == "nv12":
        np.copyto(uv.reshape(h // 2, w), plane_rows(frame.planes[1], w, h // 2))
    else:
        np.copyto(uv[..., 0], plane_rows(frame.planes[1], w // 2, h // 2))
        np.copyto(uv[..., 1], plane_rows(frame.planes[2], w // 2, h // 2))


def write_packed(frame: Any, dst: np.ndarray) -> None:
    """A bgr24/rgb24 frame into a (H, W, 3) slot."""
    h, w = frame.height, frame.width
    np.copyto(dst.reshape(h, w * 3), plane_rows(frame.planes[0], w * 3, h))


# FFmpeg's AVColorSpace / AVColorRange codes, as camera.yuv_matrix / yuv_range name them (others: unspecified)
MATRIX_OF = {1: "bt709", 5: "bt601", 6: "bt601"}
RANGE_OF = {1: "limited", 2: "full"}


def yuv_metadata(frame: Any) -> tuple[str | None, str | None]:
    """(matrix, range) a YUV frame's metadata gives, None where it says nothing (yuvj* is full range)."""
    rng = "full" if frame.format.name.startswith("yuvj") else RANGE_OF.get(int(frame.color_range))
    return MATRIX_OF.get(int(frame.colorspace)), rng


class SlotWriter:
    """Writes decoded frames into slots of one camera.format and size, converting (swscale) only
    where the frame's pixel format or size is not what the slot takes; says so once. For a YUV
    slot, the stream's colour metadata is checked once against camera.yuv_matrix/yuv_range (`yuv`),
    which tell the fused kernel how to decode it; BGR/RGB slots follow the metadata (swscale)."""

    NATIVE = {"i420": YUV420, "nv12": ("nv12", *YUV420), "bgr": ("bgr24",), "rgb": ("rgb24",)}

    def __init__(self, fmt: str, width: int, height: int, source: str,
                 yuv: tuple[str, str] | None = None) -> None:
        if fmt not in AV_FORMAT:
            raise VideoError(f"camera.format {fmt!r}: the video source writes {', '.join(AV_FORMAT)}")
        if fmt in ("i420", "nv12") and (width % 2 or height % 2):
            raise VideoError(f"camera.width/height {width}x{height}: {fmt} needs an even width and height")
        self.fmt, self.width, self.height, self.source = fmt, width, height, source
        self.write = {"i420": write_i420, "nv12": write_nv12}.get(fmt, write_packed)
        self.noted: tuple[str, int, int] | None = None
        self.yuv = yuv if fmt in ("i420", "nv12") else None  # checked on the first frame

    def __call__(self, frame: Any, dst: np.ndarray) -> None:
        self.write(self.prepare(frame), dst)

    def prepare(self, frame: Any) -> Any:
        """The frame as the slot takes it: itself, or swscale's conversion (a new frame PyAV allocates).
        The decoding thread calls it, so the stage's thread only copies (`write`)."""
        if self.yuv is not None:
            self._check_yuv(frame, *self.yuv)
        sized = frame.width == self.width and frame.height == self.height
        if not sized or frame.format.name not in self.NATIVE[self.fmt]:
            if not sized:
                self._note(frame)
            frame = frame.reformat(width=self.width, height=self.height, format=AV_FORMAT[self.fmt])
        return frame

    def _check_yuv(self, frame: Any, matrix: str, rng: str) -> None:
        self.yuv = None
        said = yuv_metadata(frame)
        if said[0] not in (None, matrix) or said[1] not in (None, rng):
            log.warning("%s: the video says YUV %s, %s range; camera.yuv_matrix/yuv_range say %s, %s: colours "
                        "would decode wrong; set camera.yuv_matrix = \"%s\" and yuv_range = \"%s\"", self.source,
                        said[0] or matrix, said[1] or rng, matrix, rng, said[0] or matrix, said[1] or rng)

    def _note(self, frame: Any) -> None:
        what = (frame.format.name, frame.width, frame.height)
        if what != self.noted:  # once, and again only if the stream changes
            self.noted = what
            log.warning("%s: the video is %dx%d, the camera %dx%d (camera.width/height, the model's size): every "
                        "frame is scaled by swscale; a video made at the camera's size skips that pass", self.source,
                        frame.width, frame.height, self.width, self.height)


# -- decoding on a thread of its own -----------------------------------------------------------------
@dataclass
class Decoded:
    """What the decoding thread hands over: a frame, or news about the input."""

    kind: str  # "opened" | "frame" | "corrupt" | "end" | "lost"
    frame: Any = None  # kind "frame": the av.VideoFrame, as the slot takes it (`prepare`d)
    index: int = 0  # frames decoded in this pass over the input (the corrupt one's position)
    time_s: float = 0.0  # the frame's presentation time in the input (s)
    text: str = ""  # "opened": decoder and why; "corrupt"/"lost": what FFmpeg said
    rate: float = 0.0  # "opened"/"end": the input's frame rate (frames/s), 0 where it does not say


class DecodeThread:
    """Opens (a stream URL: reconnects are a new DecodeThread) and decodes one input on a daemon
    thread, handing `Decoded` items over through a short queue.

    Why a thread: opening or reading a network stream blocks for up to OPEN_TIMEOUT_S, and a stage's
    step must return within 0.1 s (heartbeats); decoding ahead by `depth` frames also keeps a
    file's decode time off the pipeline's frame period where the machine has a core to spare.
    A file that ends is rewound (`loop`) or reported as "end"; a stream that ends or fails is "lost".
    A live stream does not wait for the pipeline: when the queue is full its oldest frame is
    dropped (counted in `skipped`), as a camera drops a frame nobody took, so what the pipeline
    gets next is the newest; a file's frames all wait their turn.

    Corrupt data (FFmpeg's InvalidDataError, or a frame flagged corrupt) is news ("corrupt"), and
    every frame after it up to the next keyframe is dropped (counted in `damaged`): those are
    predicted from a broken reference, and FFmpeg's error concealment would hand them over as
    plausible but wrong pictures. `prepare` (SlotWriter.prepare) converts each frame here, off the
    stage's thread.
    """

    def __init__(self, uri: str, opened: Opened | None = None, loop: bool = False, hwaccel: bool = True,
                 depth: int = 2, prepare: Callable[[Any], Any] | None = None) -> None:
        import queue
        import threading

        self.uri, self.opened, self.loop, self.hwaccel = uri, opened, loop, hwaccel
        self.prepare = prepare
        self.live = is_stream(uri)
        self.skipped = 0  # a live stream's frames dropped for newer ones (read by the stage's thread)
        self.damaged = 0  # frames dropped after corrupt data, until a keyframe (read by the stage's thread)
        self.items: queue.Queue[Decoded] = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="edgert-video-decode", daemon=True)
        self.thread.start()

    def get(self, timeout_s: float) -> Decoded | None:
        import queue

        try:
            return self.items.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(1.0)  # a read blocked on a dead stream ends at its timeout; the thread is a daemon
        if self.opened is not None and not self.thread.is_alive():
            self.opened.close()

    def _put(self, item: Decoded) -> bool:
        import queue

        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.0 if self.live and item.kind == "frame" else 0.1)
                return True
            except queue.Full:
                if self.live and item.kind == "frame" and not self._drop_oldest_frame():
                    self.stop.wait(0.005)  # only news queued: the stage takes it soon; no busy spin
        return False

    def _drop_oldest_frame(self) -> bool:
        """Live stream, queue full: take the oldest item out; a frame is dropped (True), news is put back."""
        import queue

        try:
            old = self.items.get_nowait()
        except queue.Empty:
            return True  # taken meanwhile: room now
        if old.kind == "frame":
            self.skipped += 1
            return True
        try:  # keep "opened"/"corrupt" news; it goes back behind the frames still queued (rare: depth 2)
            self.items.put_nowait(old)
        except queue.Full:
            pass
        return False

    def _run(self) -> None:
        av = require_av()
        try:
            if self.opened is None:
                self.opened = open_video(self.uri, self.hwaccel)
            self._put(Decoded("opened", text=f"{self.opened.decoder} ({self.opened.why})", rate=self.opened.rate))
            while self._decode_pass(av) and self.loop and not self.stop.is_set():
                self._rewind(av)
        except (av.FFmpegError, VideoError, OSError) as e:
            self._put(Decoded("lost", text=str(e)))

    def _rewind(self, av: Any) -> None:
        """Back to the file's start: a seek (which flushes the decoder), or where the container cannot
        seek (a raw H.264 stream), the file opened again."""
        assert self.opened is not None
        try:
            self.opened.container.seek(0)
        except av.FFmpegError:
            self.opened.close()
            self.opened = open_video(self.uri, self.hwaccel)

    def _decode_pass(self, av: Any) -> bool:
        """Decode the input once to its end; False if stopped or (a stream) lost."""
        assert self.opened is not None
        stream, index, t = self.opened.stream, 0, 0.0
        keyframe_due = False  # after corrupt data: frames are dropped until a keyframe
        for packet in self.opened.container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError as e:  # corrupt data: say where, drop up to the next keyframe
                pts = packet.pts if packet.pts is not None else packet.dts
                at = float(pts * stream.time_base) if pts is not None and stream.time_base else t
                keyframe_due = True
                if not self._put(Decoded("corrupt", index=index, time_s=at, text=str(e))):
                    return False
                continue
            for f in frames:
                t = float(f.time) if f.time is not None else t
                if f.is_corrupt:  # decoded, but FFmpeg says from damaged data (concealed)
                    keyframe_due = True
                    if not self._put(Decoded("corrupt", index=index, time_s=t, text="a frame decoded with errors")):
                        return False
                if keyframe_due and (f.is_corrupt or not f.key_frame):
                    self.damaged += 1
                else:
                    keyframe_due = False
                    if not self._put(Decoded("frame", self.prepare(f) if self.prepare else f, index, t)):
                        return False
                index += 1
        if is_stream(self.uri):
            self._put(Decoded("lost", index=index, time_s=t, text="the stream ended"))
            return False
        return self._put(Decoded("end", index=index, time_s=t, rate=self.opened.rate))
