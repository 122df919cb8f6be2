"""V4L2 cameras (USB/UVC, CSI bridges) through linuxpy: what a device offers, and its frames.

Three layers, so that all but the last are testable without a device:
  - the offer (`CameraDevice` -> `PixelFormat` -> `FrameSize`, plain dataclasses) and its text, the
    one `edgert cameras` prints and every refusal lists (`describe`, `offer_lines`);
  - the buffer layout a driver reports (`Geometry`: fourcc, size, each plane's offset and row
    pitch, as S_FMT gives them) and the copy of a driver buffer into a packed pool slot in the
    slot's format (`slot_copy`, precomputed views, nothing allocated per frame) or the MJPEG decode;
  - the device itself (`probe`, `Capture`): QUERYCAP / ENUM_FMT / ENUM_FRAMESIZES /
    ENUM_FRAMEINTERVALS, S_FMT / S_PARM, memory-mapped streaming buffers, DQBUF with the driver's
    timestamp (`capture_ns`).

The raw ioctls are linuxpy's (its structs and `ioctl`); its high-level `VideoCapture` is not used
because it knows only single-planar buffers (NV12M comes in two) and hides the buffer's planes.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgert.runtime.errors import EdgertError, MissingExtra

# camera.format (the pool slot's format) -> the device fourccs that fill it with a plain copy, best first
FOURCCS: dict[str, tuple[str, ...]] = {
    "yuyv": ("YUYV",),
    "nv12": ("NV12", "NM12"),  # NM12 = NV12M: Y and UV in two buffers
    "i420": ("YU12", "YM12"),  # YM12 = YUV420M: three buffers
    "bgr": ("BGR3", "RGB3"),  # RGB3 into a bgr slot (or BGR3 into rgb) swaps channels in the same copy
    "rgb": ("RGB3", "BGR3"),
}
MJPEG_FOURCCS = ("MJPG", "JPEG")  # camera.device_format = "mjpeg": decoded with OpenCV into a bgr/rgb slot
MULTIPLANAR = {"NM12": 2, "YM12": 3}  # fourcc -> buffers per frame (VIDEO_CAPTURE_MPLANE)
PLANES = {"YUYV": 1, "BGR3": 1, "RGB3": 1, "NV12": 2, "YU12": 3, "MJPG": 1, "JPEG": 1, **MULTIPLANAR}

# V4L2 constants (videodev2.h), named here so the pure code below needs no linuxpy
CAP_VIDEO_CAPTURE, CAP_VIDEO_CAPTURE_MPLANE, CAP_STREAMING = 0x1, 0x1000, 0x04000000
BUF_TYPE_CAPTURE, BUF_TYPE_CAPTURE_MPLANE = 1, 9
MEMORY_MMAP = 1
FIELD_NONE = 1
BUF_FLAG_ERROR, BUF_FLAG_TIMESTAMP_MASK, BUF_FLAG_TIMESTAMP_MONOTONIC = 0x40, 0xE000, 0x2000
CAPTURE_TIMEPERFRAME = 0x1000
STAMP_SANE_NS = 1_000_000_000  # a driver stamp older than this at dequeue (or in the future) is not believed

PERMISSION_HINT = ("add the user to the `video` group (sudo usermod -aG video $USER, then log in again) "
                   "or run where the device is readable")


class CameraError(EdgertError, OSError):
    """A camera device that is missing, busy, unreadable or cannot give what the config asks;
    the message names the device and lists what it offers."""


class CameraGone(OSError):
    """The device went away or stopped streaming mid-run (ENODEV, EIO): reconnect with a Backoff."""


def fourcc_str(code: int) -> str:
    return "".join(chr((code >> s) & 0xFF) for s in (0, 8, 16, 24))


def fourcc_int(text: str) -> int:
    a, b, c, d = (ord(ch) for ch in text)
    return a | b << 8 | c << 16 | d << 24


# -- the offer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSize:
    """One frame size a format offers and its rates. Discrete sizes list `fps`; a stepwise or
    continuous range (`step` > 0, sizes from width x height up to max_width x max_height) and rates
    given as an interval list `fps_range` (min, max) instead."""

    width: int
    height: int
    fps: tuple[float, ...] = ()
    fps_range: tuple[float, float] | None = None
    max_width: int = 0
    max_height: int = 0
    step_width: int = 0
    step_height: int = 0

    @property
    def stepwise(self) -> bool:
        return self.max_width > 0

    def fits(self, width: int, height: int) -> bool:
        if not self.stepwise:
            return (width, height) == (self.width, self.height)
        sw, sh = max(self.step_width, 1), max(self.step_height, 1)
        return (self.width <= width <= self.max_width and self.height <= height <= self.max_height
                and (width - self.width) % sw == 0 and (height - self.height) % sh == 0)

    def text(self) -> str:
        if self.stepwise:
            size = (f"{self.width}x{self.height} to {self.max_width}x{self.max_height} "
                    f"in steps of {self.step_width}x{self.step_height}")
        else:
            size = f"{self.width}x{self.height}"
        if self.fps:
            return f"{size} @ {', '.join(f'{f:g}' for f in self.fps)} fps"
        if self.fps_range:
            return f"{size} @ {self.fps_range[0]:g}-{self.fps_range[1]:g} fps"
        return size


@dataclass(frozen=True)
class PixelFormat:
    fourcc: str  # "YUYV", "MJPG", "NV12", ...
    description: str  # the driver's, e.g. "YUYV 4:2:2"
    sizes: tuple[FrameSize, ...] = ()
    compressed: bool = False
    multiplanar: bool = False

    def size(self, width: int, height: int) -> FrameSize | None:
        return next((s for s in self.sizes if s.fits(width, height)), None)


@dataclass(frozen=True)
class CameraDevice:
    path: str
    driver: str = ""
    card: str = ""
    bus: str = ""
    formats: tuple[PixelFormat, ...] = ()
    multiplanar: bool = False  # VIDEO_CAPTURE_MPLANE (else VIDEO_CAPTURE)

    def format(self, fourcc: str) -> PixelFormat | None:
        return next((f for f in self.formats if f.fourcc == fourcc), None)


def offer_lines(dev: CameraDevice, indent: str = "  ") -> list[str]:
    """Formats, sizes and rates, as `v4l2-ctl --list-formats-ext` would list them (one line per size)."""
    out = []
    for f in dev.formats:
        out.append(f"{indent}{f.fourcc} ({f.description}{', compressed' if f.compressed else ''})")
        out.extend(f"{indent}  {s.text()}" for s in f.sizes)
    return out or [f"{indent}(no capture formats)"]


def describe(dev: CameraDevice) -> str:
    """The device's header line and its offer."""
    head = f"{dev.path}: {dev.card or '?'} (driver {dev.driver or '?'}, bus {dev.bus or '?'})"
    return "\n".join([head, *offer_lines(dev)])


def brief(dev: CameraDevice) -> str:
    """One line: the device and its formats with their largest size (`edgert doctor`)."""
    fmts = []
    for f in dev.formats:
        big = max(f.sizes, key=lambda s: (s.max_width or s.width) * (s.max_height or s.height), default=None)
        top = "" if big is None else f" up to {big.max_width or big.width}x{big.max_height or big.height}"
        fmts.append(f"{f.fourcc}{top}")
    return f"{dev.path}: {dev.card or '?'} ({dev.driver or '?'}): {', '.join(fmts) or 'no capture formats'}"


def choose(dev: CameraDevice, fourccs: Sequence[str], width: int, height: int, asked: str) -> PixelFormat:
    """The first of `fourccs` the device offers at width x height; CameraError listing the offer if
    none. `asked` names the config that asked (for the message)."""
    offered = [f for f in (dev.format(c) for c in fourccs) if f is not None]
    if not offered:
        raise CameraError(f"{dev.path} ({dev.card or dev.driver}) does not offer {asked} "
                          f"(fourcc {' or '.join(fourccs)}); it offers:\n" + "\n".join(offer_lines(dev))
                          + "\n" + _fix(dev))
    for f in offered:
        if f.size(width, height) is not None or not f.sizes:
            return f
    raise CameraError(f"{dev.path} ({dev.card or dev.driver}) offers {'/'.join(f.fourcc for f in offered)} but not at "
                      f"{width}x{height} (camera.width/height); it offers:\n" + "\n".join(offer_lines(dev)))


def _fix(dev: CameraDevice) -> str:
    """What to set so that this device can feed the pipeline."""
    have = {f.fourcc for f in dev.formats}
    fits = [name for name, codes in FOURCCS.items() if have & set(codes)]
    hints = []
    if fits:
        hints.append("camera.format = " + " or ".join(f'"{n}"' for n in fits))
    if have & set(MJPEG_FOURCCS):
        hints.append('camera.device_format = "mjpeg" (with camera.format = "bgr" or "rgb")')
    return "set " + ", or ".join(hints) if hints else "no format this device offers can feed the pipeline"


# -- buffer layouts and the copy into a pool slot ----------------------------------------------
@dataclass(frozen=True)
class Plane:
    buffer: int  # which of the frame's buffers holds it (multi-planar formats: one per plane)
    offset: int  # bytes from that buffer's start
    pitch: int  # bytes from one row to the next (bytesperline; >= the row's bytes)


@dataclass(frozen=True)
class Geometry:
    """A frame as the driver lays it out: what S_FMT returned."""

    fourcc: str
    width: int
    height: int
    planes: tuple[Plane, ...]
    sizeimage: int = 0

    @classmethod
    def single(cls, fourcc: str, width: int, height: int, bytesperline: int, sizeimage: int = 0,
               uv_offset: int = 0) -> Geometry:
        """A single-planar format (VIDEO_CAPTURE) with the planes where the V4L2 spec puts them:
        NV12's UV plane right after H rows of Y (or at `uv_offset`, where a driver says so) with
        the same pitch; YU12's U then V planes after Y, each with half the pitch."""
        bpl = bytesperline or width * {"YUYV": 2, "BGR3": 3, "RGB3": 3}.get(fourcc, 1)
        if fourcc == "NV12":
            return cls(fourcc, width, height, (Plane(0, 0, bpl), Plane(0, uv_offset or bpl * height, bpl)), sizeimage)
        if fourcc == "YU12":
            u = uv_offset or bpl * height
            half = bpl // 2
            v = u + half * (height // 2)
            return cls(fourcc, width, height, (Plane(0, 0, bpl), Plane(0, u, half), Plane(0, v, half)), sizeimage)
        return cls(fourcc, width, height, (Plane(0, 0, bpl),), sizeimage)

    @classmethod
    def multi(cls, fourcc: str, width: int, height: int, pitches: Sequence[int]) -> Geometry:
        """A multi-planar format (VIDEO_CAPTURE_MPLANE): plane i in buffer i, with its own pitch."""
        return cls(fourcc, width, height, tuple(Plane(i, 0, p) for i, p in enumerate(pitches)))

    @classmethod
    def of(cls, fourcc: str, width: int, height: int, pitches: Sequence[int], sizeimage: int = 0) -> Geometry:
        """What S_FMT reported, either API: the M formats (NM12, YM12) one buffer per plane; every
        other format in one buffer, also through the multi-planar API (num_planes = 1, as ISP
        drivers give NV12), its planes where V4L2 puts them."""
        if fourcc in MULTIPLANAR:
            return cls.multi(fourcc, width, height, pitches)
        return cls.single(fourcc, width, height, pitches[0] if pitches else 0, sizeimage)

    def needed(self) -> list[int]:
        """Bytes each of the frame's buffers must hold at least."""
        rows = self._rows()
        need = [0] * (max(p.buffer for p in self.planes) + 1)
        for p, (n, row) in zip(self.planes, rows):
            need[p.buffer] = max(need[p.buffer], p.offset + p.pitch * (n - 1) + row)
        return need

    def _rows(self) -> list[tuple[int, int]]:
        """(rows, bytes per row) of each plane."""
        w, h = self.width, self.height
        kind = self.fourcc
        if kind in ("NV12", "NM12"):
            return [(h, w), (h // 2, w)]
        if kind in ("YU12", "YM12"):
            return [(h, w), (h // 2, w // 2), (h // 2, w // 2)]
        return [(h, w * {"YUYV": 2, "BGR3": 3, "RGB3": 3}[kind])]


def _plane_view(buf: Any, plane: Plane, shape: tuple[int, ...]) -> np.ndarray:
    """A strided uint8 view of one plane in a driver buffer (no copy): rows `pitch` apart."""
    strides = (plane.pitch, *np.empty(shape[1:], np.uint8).strides) if len(shape) > 1 else (plane.pitch,)
    return np.ndarray(shape, np.uint8, buffer=buf, offset=plane.offset, strides=strides)


def source_views(geom: Geometry, buffers: Sequence[Any], slot_format: str) -> list[np.ndarray]:
    """Views of the driver's planes shaped as the parts of a `slot_format` slot they fill
    (`slot_parts`), channels swapped where RGB3 fills a bgr slot or BGR3 an rgb one."""
    have = geom.needed()
    for i, need in enumerate(have):
        size = memoryview(buffers[i]).nbytes
        if size < need:
            raise ValueError(f"{geom.fourcc} {geom.width}x{geom.height}: buffer {i} holds {size} bytes, the layout "
                             f"(pitches {[p.pitch for p in geom.planes]}) needs {need}")
    w, h = geom.width, geom.height
    p = geom.planes
    if geom.fourcc == "YUYV":
        return [_plane_view(buffers[p[0].buffer], p[0], (h, w, 2))]
    if geom.fourcc in ("BGR3", "RGB3"):
        v = _plane_view(buffers[p[0].buffer], p[0], (h, w, 3))
        native = "bgr" if geom.fourcc == "BGR3" else "rgb"
        return [v if slot_format == native else v[..., ::-1]]
    if geom.fourcc in ("NV12", "NM12"):
        return [_plane_view(buffers[p[0].buffer], p[0], (h, w)), _plane_view(buffers[p[1].buffer], p[1], (h // 2, w))]
    if geom.fourcc in ("YU12", "YM12"):
        return [_plane_view(buffers[p[0].buffer], p[0], (h, w))] + [
            _plane_view(buffers[q.buffer], q, (h // 2, w // 2)) for q in p[1:]]
    raise ValueError(f"no plain copy for fourcc {geom.fourcc!r} (MJPEG is decoded, not copied)")


def slot_parts(slot: np.ndarray, slot_format: str, width: int, height: int) -> list[np.ndarray]:
    """Views of a packed pool slot's planes (kernels/formats.py layouts), in `source_views` order."""
    w, h = width, height
    if slot_format in ("yuyv", "bgr", "rgb"):
        return [slot]
    flat = slot.reshape(-1)  # a packed slot: a view, never a copy
    if slot_format == "nv12":
        return [flat[: h * w].reshape(h, w), flat[h * w:].reshape(h // 2, w)]
    if slot_format == "i420":
        q = (h // 2) * (w // 2)
        return [flat[: h * w].reshape(h, w), flat[h * w: h * w + q].reshape(h // 2, w // 2),
                flat[h * w + q: h * w + 2 * q].reshape(h // 2, w // 2)]
    raise ValueError(f"unknown slot format {slot_format!r}")


def slot_shape(slot_format: str, width: int, height: int) -> tuple[int, ...]:
    """The packed slot of one frame (kernels/formats.py): the camera stream's layout (topics.frame_shape)."""
    from edgert.runtime.topics import frame_shape

    return frame_shape(slot_format, height, width)


def copy_frame(src: Sequence[np.ndarray], dst: Sequence[np.ndarray]) -> None:
    """The one copy: each driver plane into its slot part (row pitch dropped, channels swapped)."""
    for s, d in zip(src, dst):
        np.copyto(d, s)


def decode_mjpeg(data: Any, dst: np.ndarray, rgb: bool) -> bool:
    """Decode one MJPEG frame into a (H, W, 3) slot; False (slot untouched) if it is corrupt or
    not that size. OpenCV's imdecode cannot write into a given array: one decode, one copy."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape != dst.shape:
        return False
    np.copyto(dst, img[..., ::-1] if rgb else img)
    return True


# V4L2 colorimetry (videodev2.h): colorspace, ycbcr_enc and quantization codes this module reads
_CS_REC709, _CS_JPEG, _CS_DCI_P3, _CS_BT2020, _CS_SMPTE240M = 3, 7, 12, 10, 2
_ENC_601, _ENC_709, _ENC_XV601, _ENC_XV709, _ENC_SYCC = 1, 2, 3, 4, 5
_Q_FULL, _Q_LIMITED = 1, 2


def yuv_encoding(colorspace: int, ycbcr_enc: int, quantization: int) -> tuple[str | None, str]:
    """(camera.yuv_matrix, camera.yuv_range) a driver's S_FMT colorimetry means, with V4L2's own
    defaults where it leaves a field 0 (V4L2_MAP_YCBCR_ENC_DEFAULT, V4L2_MAP_QUANTIZATION_DEFAULT);
    matrix None for one the kernels do not decode (BT.2020, SMPTE 240M)."""
    if not ycbcr_enc:
        ycbcr_enc = {_CS_REC709: _ENC_709, _CS_DCI_P3: _ENC_709, _CS_BT2020: 6, _CS_SMPTE240M: 8}.get(colorspace,
                                                                                                    _ENC_601)
    matrix = {_ENC_601: "bt601", _ENC_XV601: "bt601", _ENC_SYCC: "bt601", _ENC_709: "bt709",
              _ENC_XV709: "bt709"}.get(ycbcr_enc)
    if not quantization:
        quantization = _Q_FULL if colorspace == _CS_JPEG else _Q_LIMITED
    return matrix, "full" if quantization == _Q_FULL else "limited"


def capture_ns(flags: int, secs: int, usecs: int, now_ns: int) -> tuple[int, bool]:
    """The frame's capture stamp on CLOCK_MONOTONIC (the pipeline's clock) and whether it is the
    driver's: its buffer timestamp where the driver says it is monotonic and it is sane (not in
    the future, under a second old at dequeue), else the dequeue time."""
    if flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC and (secs or usecs):
        ts = secs * 1_000_000_000 + usecs * 1_000
        if 0 <= now_ns - ts < STAMP_SANE_NS:
            return ts, True
    return now_ns, False


# -- the device --------------------------------------------------------------------------------
def video_nodes(root: str | Path = "/dev") -> list[Path]:
    """/dev/video* in numeric order."""
    nodes = [p for p in Path(root).glob("video*") if p.name[5:].isdigit()]
    return sorted(nodes, key=lambda p: int(p.name[5:]))


def _linuxpy() -> Any:
    try:
        from linuxpy.video import device as lp  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("camera.source = \"v4l2\" and `edgert cameras` need linuxpy, from the `camera` extra: "
                           "pip install 'edgert[camera]'") from None
    return lp


def _ioctl(fd: int, request: Any, arg: Any) -> Any:
    from linuxpy.ioctl import ioctl  # type: ignore[import-untyped]

    return ioctl(fd, request, arg)


def _enum(fd: int, request: Any, struct: Any) -> Any:
    """Index 0, 1, ... until the driver says EINVAL (the V4L2 enumeration protocol)."""
    for i in range(256):
        struct.index = i
        try:
            _ioctl(fd, request, struct)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOTTY, errno.ENODATA):
                return
            raise
        yield struct


def _rates(fd: int, code: int, width: int, height: int) -> tuple[tuple[float, ...], tuple[float, float] | None]:
    lp = _linuxpy()
    raw = lp.raw
    iv = raw.v4l2_frmivalenum()
    iv.pixel_format, iv.width, iv.height = code, width, height
    rates: list[float] = []
    for v in _enum(fd, lp.IOC.ENUM_FRAMEINTERVALS, iv):
        if v.type == raw.Frmivaltypes.DISCRETE:
            if v.discrete.numerator:
                rates.append(float(Fraction(v.discrete.denominator, v.discrete.numerator)))
        else:  # continuous / stepwise: min interval = max rate
            lo, hi = v.stepwise.max, v.stepwise.min
            return (), (lo.denominator / lo.numerator if lo.numerator else 0.0,
                        hi.denominator / hi.numerator if hi.numerator else 0.0)
    return tuple(sorted(set(rates), reverse=True)), None


def _sizes(fd: int, code: int) -> tuple[FrameSize, ...]:
    lp = _linuxpy()
    raw = lp.raw
    fs = raw.v4l2_frmsizeenum()
    fs.pixel_format = code
    out = []
    for v in _enum(fd, lp.IOC.ENUM_FRAMESIZES, fs):
        if v.type == raw.Frmsizetypes.DISCRETE:
            w, h = v.m1.discrete.width, v.m1.discrete.height
            fps, rng = _rates(fd, code, w, h)
            out.append(FrameSize(w, h, fps, rng))
        else:
            s = v.m1.stepwise
            fps, rng = _rates(fd, code, s.max_width, s.max_height)
            out.append(FrameSize(s.min_width, s.min_height, fps, rng, s.max_width, s.max_height,
                                 s.step_width or 1, s.step_height or 1))
            break
    return tuple(out)


def probe(path: str | Path) -> CameraDevice | None:
    """The device's identity and offer; None where it is not a video capture device (a metadata
    node, an output, a codec). OSError (missing, permission) propagates."""
    lp = _linuxpy()
    raw = lp.raw
    fd = os.open(str(path), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        caps = raw.v4l2_capability()
        _ioctl(fd, lp.IOC.QUERYCAP, caps)
        dcaps = caps.device_caps if caps.capabilities & 0x80000000 else caps.capabilities  # V4L2_CAP_DEVICE_CAPS
        mplane = bool(dcaps & CAP_VIDEO_CAPTURE_MPLANE) and not dcaps & CAP_VIDEO_CAPTURE
        if not dcaps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE):
            return None
        desc = raw.v4l2_fmtdesc()
        desc.type = BUF_TYPE_CAPTURE_MPLANE if mplane else BUF_TYPE_CAPTURE
        found = [(d.pixelformat, d.description.decode(errors="replace"), bool(d.flags & 0x1))
                 for d in _enum(fd, lp.IOC.ENUM_FMT, desc)]
        formats = tuple(PixelFormat(fourcc_str(code), text, _sizes(fd, code), compressed, mplane)
                        for code, text, compressed in found)
        return CameraDevice(str(path), caps.driver.decode(errors="replace"), caps.card.decode(errors="replace"),
                            caps.bus_info.decode(errors="replace"), formats, mplane)
    finally:
        os.close(fd)


@dataclass
class Scan:
    """What `edgert cameras` and doctor show: the capture devices, and why any node was skipped."""

    devices: list[CameraDevice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "/dev/video2: permission denied; ..."
    nodes: int = 0  # /dev/video* nodes seen
    root: str = "/dev"

    def why_none(self) -> str:
        if not self.nodes:
            return (f"no V4L2 device: {self.root} has no video* node (no camera plugged in, its driver not loaded "
                    "(uvcvideo for USB cameras), or a container without the device passed in, e.g. "
                    "docker run --device /dev/video0)")
        return f"no capture device among {self.nodes} video* node(s)" + (
            ": " + "; ".join(self.problems) if self.problems else " (metadata or output nodes only)")


def scan(root: str | Path = "/dev") -> Scan:
    """Probe every /dev/video* node; unreadable ones are reported, not raised."""
    out = Scan(root=str(root))
    for node in video_nodes(root):
        out.nodes += 1
        try:
            dev = probe(node)
        except PermissionError:
            out.problems.append(f"{node}: permission denied; {PERMISSION_HINT}")
            continue
        except OSError as e:
            out.problems.append(f"{node}: {e.strerror or e}")
            continue
        if dev is not None:
            out.devices.append(dev)
    return out


def open_error(path: str, e: OSError, doing: str = "") -> CameraError:
    """The refusal for a device that cannot be opened or configured, by its errno (`doing`: the step)."""
    if e.errno == errno.ENOENT:
        nodes = ", ".join(str(p) for p in video_nodes()) or "none"
        return CameraError(f"camera.device {path}: no such device (video nodes here: {nodes}); plug the camera in, "
                           "check `edgert cameras`, or name a stable path under /dev/v4l/by-id/")
    if e.errno in (errno.EACCES, errno.EPERM):
        return CameraError(f"camera.device {path}: permission denied; {PERMISSION_HINT}")
    if e.errno == errno.EBUSY:
        return CameraError(f"camera.device {path}: busy (another program is streaming from it: "
                           f"`fuser {path}` names it); stop it or pick another device")
    return CameraError(f"camera.device {path}: {doing + ': ' if doing else ''}{e.strerror or e}")


class Capture:
    """One streaming V4L2 capture: format and rate set, memory-mapped buffers queued, streaming.

    `read` dequeues the newest frame's buffer index (or None), `release` queues it back. Buffers
    are the driver's (MMAP): they are copied once into a pool slot. A user-pointer capture straight
    into pool slots was not done: the pool hands slots out as readers free them while the driver
    needs its buffers queued ahead, few drivers accept USERPTR, and MJPEG needs a decode anyway.
    """

    def __init__(self, dev: CameraDevice, fmt: PixelFormat, width: int, height: int, fps: float,
                 n_buffers: int = 4) -> None:
        lp = _linuxpy()
        self.lp, self.raw = lp, lp.raw
        self.path = dev.path
        self.mplane = dev.multiplanar
        self.type = BUF_TYPE_CAPTURE_MPLANE if self.mplane else BUF_TYPE_CAPTURE
        self.n_planes = MULTIPLANAR.get(fmt.fourcc, 1) if self.mplane else 1
        self.fd = -1
        self.maps: list[list[mmap.mmap]] = []
        self.streaming = False
        self.yuv: tuple[str | None, str] = ("bt601", "limited")  # the driver's colorimetry (S_FMT)
        doing = "opening it"
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self.poll = select.poll()
            self.poll.register(self.fd, select.POLLIN)
            self._dq, self._dq_planes = self._buffer_struct()
            self._q, self._q_planes = self._buffer_struct()
            doing = f"setting the format {fmt.fourcc} {width}x{height} (VIDIOC_S_FMT)"
            self.geometry = self._set_format(fmt.fourcc, width, height)
            if self.mplane:
                self.n_planes = max(p.buffer for p in self.geometry.planes) + 1
            self.fps_asked, self.fps_given = fps, self._set_rate(fps)
            doing = f"mapping {n_buffers} buffers (VIDIOC_REQBUFS/QUERYBUF, mmap)"
            self._map(n_buffers)
            doing = "starting the stream (VIDIOC_STREAMON)"
            _ioctl(self.fd, lp.IOC.STREAMON, _cint(self.type))
            self.streaming = True
        except OSError as e:
            self.close()
            if isinstance(e, CameraError):
                raise
            raise open_error(self.path, e, doing) from None
        # dequeued-frame fields, filled by `read` (set once here: a frame allocates no structs)
        self.used = self.flags = self.sequence = self.secs = self.usecs = 0

    def _set_format(self, fourcc: str, width: int, height: int) -> Geometry:
        raw = self.raw
        f = raw.v4l2_format()
        f.type = self.type
        if self.mplane:
            pm = f.fmt.pix_mp
            pm.width, pm.height, pm.pixelformat, pm.field = width, height, fourcc_int(fourcc), FIELD_NONE
            _ioctl(self.fd, self.lp.IOC.S_FMT, f)
            got = (fourcc_str(pm.pixelformat), pm.width, pm.height)
            geom = Geometry.of(got[0], pm.width, pm.height,
                               [pm.plane_fmt[i].bytesperline for i in range(pm.num_planes)], pm.plane_fmt[0].sizeimage)
            self.yuv = yuv_encoding(pm.colorspace, pm.ycbcr_enc, pm.quantization)
        else:
            p = f.fmt.pix
            p.width, p.height, p.pixelformat, p.field = width, height, fourcc_int(fourcc), FIELD_NONE
            _ioctl(self.fd, self.lp.IOC.S_FMT, f)
            got = (fourcc_str(p.pixelformat), p.width, p.height)
            geom = Geometry.of(got[0], p.width, p.height, [p.bytesperline], p.sizeimage)
            self.yuv = yuv_encoding(p.colorspace, p.ycbcr_enc, p.quantization)
        if got != (fourcc, width, height):
            raise CameraError(f"camera.device {self.path}: asked {fourcc} {width}x{height}, the driver gave "
                              f"{got[0]} {got[1]}x{got[2]}; pick a format and size `edgert cameras` lists")
        return geom

    def _set_rate(self, fps: float) -> float:
        """S_PARM where the driver supports it; the rate it gives (0 = it does not say)."""
        parm = self.raw.v4l2_streamparm()
        parm.type = self.type
        try:
            _ioctl(self.fd, self.lp.IOC.G_PARM, parm)
        except OSError:
            return 0.0
        cap = parm.parm.capture
        if cap.capability & CAPTURE_TIMEPERFRAME:
            frac = Fraction(fps).limit_denominator(1001)
            cap.timeperframe.numerator, cap.timeperframe.denominator = frac.denominator, frac.numerator
            try:
                _ioctl(self.fd, self.lp.IOC.S_PARM, parm)  # the driver writes back the rate it chose
            except OSError as e:
                if e.errno == errno.EBUSY:
                    raise
                _ioctl(self.fd, self.lp.IOC.G_PARM, parm)  # refused: it runs at the rate it had
        t = cap.timeperframe
        return t.denominator / t.numerator if t.numerator else 0.0

    def _map(self, n: int) -> None:
        raw = self.raw
        req = raw.v4l2_requestbuffers()
        req.type, req.memory, req.count = self.type, MEMORY_MMAP, n
        _ioctl(self.fd, self.lp.IOC.REQBUFS, req)
        if req.count < 2:
            raise CameraError(f"camera.device {self.path}: the driver granted {req.count} buffer(s); 2 are needed")
        for i in range(req.count):
            b = raw.v4l2_buffer()
            b.type, b.memory, b.index = self.type, MEMORY_MMAP, i
            planes = (raw.v4l2_plane * 8)()
            if self.mplane:
                b.m.planes, b.length = planes, 8
            _ioctl(self.fd, self.lp.IOC.QUERYBUF, b)
            if self.mplane:
                self.maps.append([mmap.mmap(self.fd, planes[j].length, offset=planes[j].m.mem_offset)
                                  for j in range(b.length)])
            else:
                self.maps.append([mmap.mmap(self.fd, b.length, offset=b.m.offset)])
            self._queue(i)

    def _buffer_struct(self) -> tuple[Any, Any]:
        """A v4l2_buffer (with its plane array where multi-planar), reused for every QBUF/DQBUF."""
        b = self.raw.v4l2_buffer()
        planes = (self.raw.v4l2_plane * 8)()  # VIDEO_MAX_PLANES
        b.type, b.memory = self.type, MEMORY_MMAP
        if self.mplane:
            b.m.planes, b.length = planes, self.n_planes
        return b, planes

    def _queue(self, index: int) -> None:
        b = self._q
        b.index, b.flags, b.bytesused = index, 0, 0
        if self.mplane:
            b.m.planes, b.length = self._q_planes, self.n_planes
        _ioctl(self.fd, self.lp.IOC.QBUF, b)

    @property
    def buffers(self) -> list[list[mmap.mmap]]:
        """Per driver buffer, its planes' memory (one mmap each)."""
        return self.maps

    def read(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for a frame: its buffer index (-1: none yet), with `used` (bytes in
        plane 0), `flags`, `sequence`, `secs`/`usecs` (the driver's timestamp) set. CameraGone if
        the device went away (unplugged: POLLERR/ENODEV)."""
        try:
            events = self.poll.poll(timeout_ms)
            if not events:
                return -1
            if events[0][1] & (select.POLLERR | select.POLLHUP) and not events[0][1] & select.POLLIN:
                raise CameraGone(f"{self.path}: the device reports an error (unplugged?)")
            b = self._dq
            b.index = 0
            if self.mplane:
                b.m.planes, b.length = self._dq_planes, self.n_planes
            _ioctl(self.fd, self.lp.IOC.DQBUF, b)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return -1
            raise CameraGone(f"{self.path}: {e.strerror or e}") from None
        self.used = self._dq_planes[0].bytesused if self.mplane else b.bytesused
        self.flags, self.sequence = b.flags, b.sequence
        self.secs, self.usecs = b.timestamp.secs, b.timestamp.usecs
        return int(b.index)

    def release(self, index: int) -> None:
        try:
            self._queue(index)
        except OSError as e:
            raise CameraGone(f"{self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        """Stop streaming, unmap, close; safe to call twice and after the device vanished."""
        if self.fd < 0:
            return
        if self.streaming:
            try:
                _ioctl(self.fd, self.lp.IOC.STREAMOFF, _cint(self.type))
            except OSError:
                pass
            self.streaming = False
        for planes in self.maps:
            for m in planes:
                try:
                    m.close()
                except BufferError:  # a view still holds it: unmapped when that is collected
                    pass
        self.maps = []
        os.close(self.fd)
        self.fd = -1


def _cint(v: int) -> Any:
    import ctypes

    return ctypes.c_int(v)

