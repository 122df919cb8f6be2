"""camera.source = "v4l2", `edgert cameras`: runtime/v4l2.py and the v4l2 source.

Without a device (this machine has none), the buffer handling runs on byte buffers laid out
exactly as V4L2 drivers lay them out (videodev2.h / the V4L2 pixel-format pages): rows padded to
a larger bytesperline with garbage in the padding, NV12's UV plane after H pitched rows of Y or
at a driver-reported offset, NV12M/YUV420M planes in separate buffers with their own pitches,
YU12's chroma planes at half the luma pitch, MJPEG bytes in a buffer larger than the frame. The
slot must hold the exact pixels, packed, and the fused kernel must decode the slot as
cv2.cvtColor decodes the picture. The real-device test runs where /dev/video* exists.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgert.runtime import v4l2
from edgert.runtime.config import ConfigError, from_dict, load
from edgert.runtime.v4l2 import CameraDevice, FrameSize, Geometry, PixelFormat

GARBAGE = 0xA5
H, W = 12, 20


def pitched(rows: np.ndarray, pitch: int) -> bytes:
    """rows (n, row_bytes) as a driver writes them: each row padded with garbage to `pitch` bytes."""
    n, row = rows.shape
    out = np.full((n, pitch), GARBAGE, np.uint8)
    out[:, :row] = rows
    return out.tobytes()


def to_slot(geom: Geometry, buffers: list[bytes], fmt: str) -> np.ndarray:
    slot = np.zeros(v4l2.slot_shape(fmt, geom.width, geom.height), np.uint8)
    src = v4l2.source_views(geom, [bytearray(b) for b in buffers], fmt)
    v4l2.copy_frame(src, v4l2.slot_parts(slot, fmt, geom.width, geom.height))
    return slot


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(19)


# -- buffer layouts -> packed slots ----------------------------------------------------------
def test_yuyv_with_padded_rows(rng):
    pic = rng.integers(0, 256, (H, W, 2), np.uint8)  # Y0 U Y1 V ...
    bpl = 2 * W + 24  # e.g. a driver aligning rows to 64 bytes
    slot = to_slot(Geometry.single("YUYV", W, H, bpl), [pitched(pic.reshape(H, -1), bpl)], "yuyv")
    np.testing.assert_array_equal(slot, pic)
    assert slot.flags.c_contiguous


@pytest.mark.parametrize("bpl", [W, W + 12])
def test_nv12_single_plane_uv_after_pitched_luma(rng, bpl):
    y = rng.integers(0, 256, (H, W), np.uint8)
    uv = rng.integers(0, 256, (H // 2, W), np.uint8)
    buf = pitched(y, bpl) + pitched(uv, bpl)  # V4L2 NV12: the UV plane starts at bytesperline * height
    slot = to_slot(Geometry.single("NV12", W, H, bpl), [buf], "nv12")
    np.testing.assert_array_equal(slot, np.concatenate([y, uv]))


def test_nv12_uv_plane_at_a_driver_reported_offset(rng):
    """Drivers that align the chroma plane (e.g. to 4 KiB, or luma height rounded up to 16 rows)
    leave a gap after the Y rows; the UV plane is where the driver says."""
    bpl, gap = W + 4, 100
    y = rng.integers(0, 256, (H, W), np.uint8)
    uv = rng.integers(0, 256, (H // 2, W), np.uint8)
    luma = pitched(y, bpl)
    buf = luma + bytes([GARBAGE]) * gap + pitched(uv, bpl)
    slot = to_slot(Geometry.single("NV12", W, H, bpl, uv_offset=len(luma) + gap), [buf], "nv12")
    np.testing.assert_array_equal(slot, np.concatenate([y, uv]))


def test_single_buffer_formats_through_the_multiplanar_api_keep_their_layout():
    """ISP drivers give NV12 through VIDEO_CAPTURE_MPLANE with num_planes = 1: one buffer, the
    UV plane after the pitched Y rows, as through the single-planar API."""
    assert Geometry.of("NV12", W, H, [W + 12]) == Geometry.single("NV12", W, H, W + 12)
    assert Geometry.of("NM12", W, H, [W + 12, W + 4]) == Geometry.multi("NM12", W, H, [W + 12, W + 4])
    assert Geometry.of("YU12", W, H, [W]).planes[2] == v4l2.Plane(0, W * H + (W // 2) * (H // 2), W // 2)


def test_nv12m_two_planes_with_their_own_pitches(rng):
    y = rng.integers(0, 256, (H, W), np.uint8)
    uv = rng.integers(0, 256, (H // 2, W), np.uint8)
    geom = Geometry.multi("NM12", W, H, [W + 8, W + 40])
    slot = to_slot(geom, [pitched(y, W + 8), pitched(uv, W + 40)], "nv12")
    np.testing.assert_array_equal(slot, np.concatenate([y, uv]))


def i420_packed(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """kernels/formats.py's i420 slot: Y, U, V planes back to back, as (H * 3 // 2, W)."""
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, y.shape[1])


@pytest.mark.parametrize("bpl", [W, W + 16])
def test_yu12_chroma_planes_at_half_the_pitch(rng, bpl):
    y = rng.integers(0, 256, (H, W), np.uint8)
    u = rng.integers(0, 256, (H // 2, W // 2), np.uint8)
    v = rng.integers(0, 256, (H // 2, W // 2), np.uint8)
    buf = pitched(y, bpl) + pitched(u, bpl // 2) + pitched(v, bpl // 2)  # V4L2 YUV420: Cb, Cr at bytesperline / 2
    slot = to_slot(Geometry.single("YU12", W, H, bpl), [buf], "i420")
    np.testing.assert_array_equal(slot, i420_packed(y, u, v))


def test_yuv420m_three_planes(rng):
    y = rng.integers(0, 256, (H, W), np.uint8)
    u = rng.integers(0, 256, (H // 2, W // 2), np.uint8)
    v = rng.integers(0, 256, (H // 2, W // 2), np.uint8)
    geom = Geometry.multi("YM12", W, H, [W + 4, W // 2 + 6, W // 2 + 2])
    slot = to_slot(geom, [pitched(y, W + 4), pitched(u, W // 2 + 6), pitched(v, W // 2 + 2)], "i420")
    np.testing.assert_array_equal(slot, i420_packed(y, u, v))


@pytest.mark.parametrize("fourcc,slot_format,swapped", [("BGR3", "bgr", False), ("RGB3", "rgb", False),
                                                          ("RGB3", "bgr", True), ("BGR3", "rgb", True)])
def test_packed_rgb_with_pitch_and_channel_order(rng, fourcc, slot_format, swapped):
    pic = rng.integers(0, 256, (H, W, 3), np.uint8)  # in the device's byte order
    bpl = 3 * W + 4
    slot = to_slot(Geometry.single(fourcc, W, H, bpl), [pitched(pic.reshape(H, -1), bpl)], slot_format)
    np.testing.assert_array_equal(slot, pic[..., ::-1] if swapped else pic)


def test_a_buffer_shorter_than_its_layout_is_refused():
    geom = Geometry.single("NV12", W, H, W + 8)
    with pytest.raises(ValueError, match=r"NV12 20x12: buffer 0 holds 100 bytes, the layout .* needs"):
        v4l2.source_views(geom, [bytearray(100)], "nv12")


def test_views_into_the_driver_buffer_are_made_once_and_copy_in_place(rng):
    """The stage builds views per driver buffer and slot at setup; a frame is np.copyto only, so
    new bytes in the same driver buffer reach the slot through the same views."""
    bpl = 2 * W + 8
    buf = bytearray(pitched(rng.integers(0, 256, (H, 2 * W), np.uint8), bpl))
    slot = np.zeros((H, W, 2), np.uint8)
    src, dst = v4l2.source_views(Geometry.single("YUYV", W, H, bpl), [buf], "yuyv"), v4l2.slot_parts(slot, "yuyv", W, H)
    pic = rng.integers(0, 256, (H, W, 2), np.uint8)
    buf[:] = pitched(pic.reshape(H, -1), bpl)  # the driver fills the buffer again
    v4l2.copy_frame(src, dst)
    np.testing.assert_array_equal(slot, pic)
    assert np.shares_memory(src[0], np.frombuffer(buf, np.uint8))


def test_mjpeg_decodes_into_the_slot():
    img = np.zeros((H * 4, W * 4, 3), np.uint8)
    cv2.rectangle(img, (5, 5), (40, 30), (20, 200, 90), -1)
    ok, jpg = cv2.imencode(".jpg", img)
    assert ok
    driver_buf = jpg.tobytes() + bytes(500)  # a buffer larger than the frame; bytesused says where it ends
    want = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    slot = np.zeros_like(img)
    assert v4l2.decode_mjpeg(memoryview(driver_buf)[: jpg.size], slot, rgb=False)
    np.testing.assert_array_equal(slot, want)
    assert v4l2.decode_mjpeg(memoryview(driver_buf)[: jpg.size], slot, rgb=True)
    np.testing.assert_array_equal(slot, want[..., ::-1])
    before = slot.copy()
    assert not v4l2.decode_mjpeg(b"\xff\xd8 not a jpeg", slot, rgb=False)  # corrupt: slot untouched
    assert not v4l2.decode_mjpeg(jpg.tobytes(), np.zeros((H, W, 3), np.uint8), rgb=False)  # other size
    np.testing.assert_array_equal(slot, before)


@pytest.mark.parametrize("fmt,fourcc,code", [("nv12", "NV12", cv2.COLOR_YUV2RGB_NV12),
                                             ("i420", "YU12", cv2.COLOR_YUV2RGB_I420),
                                             ("yuyv", "YUYV", cv2.COLOR_YUV2RGB_YUYV)])
def test_the_fused_kernel_decodes_the_slot_as_cvtcolor_decodes_the_picture(rng, fmt, fourcc, code):
    """A pitched driver buffer -> slot -> kernels' YUV decode (identity resize, rgb, scale 1) is
    cv2.cvtColor of the packed picture (within tests/test_kernels_formats.py's CVT_STEPS)."""
    from test_kernels import assert_close
    from test_kernels_formats import CVT_STEPS, run

    from edgert.kernels import PreprocessSpec

    shape = v4l2.slot_shape(fmt, W, H)
    pic = rng.integers(16, 236, shape, np.uint8)
    if fmt == "nv12":
        bpl = W + 12
        buf = pitched(pic[:H], bpl) + pitched(pic[H:], bpl)
    elif fmt == "i420":
        bpl = W + 12
        flat = pic.ravel()
        q = (H // 2) * (W // 2)
        u, v = flat[H * W: H * W + q].reshape(H // 2, -1), flat[H * W + q:].reshape(H // 2, -1)
        buf = pitched(pic[:H], bpl) + pitched(u, bpl // 2) + pitched(v, bpl // 2)
    else:
        bpl = 2 * W + 12
        buf = pitched(pic.reshape(H, -1), bpl)
    slot = to_slot(Geometry.single(fourcc, W, H, bpl), [buf], fmt)
    spec = PreprocessSpec(src_format=fmt, out_width=W, out_height=H, resize="bilinear", color="rgb", scale=1.0,
                          layout="nhwc", dtype="float32")
    want = cv2.cvtColor(pic, code).astype(np.float32)[None]
    assert_close(spec, run(spec, slot), want, CVT_STEPS)


# -- the capture stamp -------------------------------------------------------------------------
def test_capture_stamp_is_the_drivers_monotonic_timestamp():
    now = 5_000_000_000_000
    ts, ok = v4l2.capture_ns(v4l2.BUF_FLAG_TIMESTAMP_MONOTONIC | 0x1, 4_999, 987_654, now)
    assert (ts, ok) == (4_999_987_654_000, True)


@pytest.mark.parametrize("flags,secs,why", [
    (0x4000, 4_999, "TIMESTAMP_COPY: the application's time, not the capture's"),
    (0x0000, 4_999, "TIMESTAMP_UNKNOWN"),
    (v4l2.BUF_FLAG_TIMESTAMP_MONOTONIC, 5_001, "in the future"),
    (v4l2.BUF_FLAG_TIMESTAMP_MONOTONIC, 4_990, "ten seconds old at dequeue"),
    (v4l2.BUF_FLAG_TIMESTAMP_MONOTONIC, 0, "never set"),
])
def test_capture_stamp_falls_back_to_dequeue_time(flags, secs, why):
    now = 5_000_000_000_000
    assert v4l2.capture_ns(flags, secs, 0, now) == (now, False), why


@pytest.mark.parametrize("colorspace,enc,quant,want", [
    (1, 0, 0, ("bt601", "limited")),  # SMPTE170M with defaults: what UVC YUYV cameras report
    (8, 0, 0, ("bt601", "limited")),  # sRGB colorspace, YUV format: 601 limited by V4L2's defaults
    (3, 0, 0, ("bt709", "limited")),  # REC709
    (7, 0, 0, ("bt601", "full")),  # JPEG colorspace: full range
    (3, 1, 1, ("bt601", "full")),  # explicit fields win over the colorspace's defaults
    (10, 0, 0, (None, "limited")),  # BT.2020: no kernel decode
])
def test_driver_colorimetry_maps_to_the_yuv_keys(colorspace, enc, quant, want):
    assert v4l2.yuv_encoding(colorspace, enc, quant) == want


# -- the offer and its refusals ------------------------------------------------------------------
UVC = CameraDevice("/dev/video0", "uvcvideo", "HD Pro Webcam C920", "usb-0000:00:14.0-1", (
    PixelFormat("YUYV", "YUYV 4:2:2", (FrameSize(640, 480, (30.0, 15.0)), FrameSize(1920, 1080, (5.0,)))),
    PixelFormat("MJPG", "Motion-JPEG", (FrameSize(640, 480, (30.0,)), FrameSize(1920, 1080, (30.0, 24.0))),
                compressed=True),
))
CSI = CameraDevice("/dev/video1", "bridge", "ISP", "platform:isp", (
    PixelFormat("NM12", "Y/UV 4:2:0 (N-C)", (FrameSize(64, 64, (), (1.0, 60.0), 4096, 2160, 2, 2),),
                multiplanar=True),), multiplanar=True)


def test_describe_lists_formats_sizes_and_rates_like_v4l2_ctl():
    assert v4l2.describe(UVC).splitlines() == [
        "/dev/video0: HD Pro Webcam C920 (driver uvcvideo, bus usb-0000:00:14.0-1)",
        "  YUYV (YUYV 4:2:2)",
        "    640x480 @ 30, 15 fps",
        "    1920x1080 @ 5 fps",
        "  MJPG (Motion-JPEG, compressed)",
        "    640x480 @ 30 fps",
        "    1920x1080 @ 30, 24 fps"]
    assert "64x64 to 4096x2160 in steps of 2x2 @ 1-60 fps" in v4l2.describe(CSI)
    assert v4l2.brief(UVC) == "/dev/video0: HD Pro Webcam C920 (uvcvideo): YUYV up to 1920x1080, MJPG up to 1920x1080"


def test_choose_takes_the_first_offered_fourcc_at_the_size():
    assert v4l2.choose(UVC, ("YUYV",), 1920, 1080, "x").fourcc == "YUYV"
    assert v4l2.choose(UVC, v4l2.MJPEG_FOURCCS, 640, 480, "x").fourcc == "MJPG"
    assert v4l2.choose(CSI, v4l2.FOURCCS["nv12"], 1280, 720, "x").fourcc == "NM12"  # within the stepwise range


def test_a_format_the_device_lacks_is_refused_with_its_offer_and_the_fix():
    with pytest.raises(v4l2.CameraError) as e:
        v4l2.choose(UVC, v4l2.FOURCCS["nv12"], 640, 480, 'camera.format = "nv12"')
    msg = str(e.value)
    assert msg.startswith('/dev/video0 (HD Pro Webcam C920) does not offer camera.format = "nv12" (fourcc NV12 or NM12)')
    assert "  YUYV (YUYV 4:2:2)\n    640x480 @ 30, 15 fps" in msg and "MJPG (Motion-JPEG" in msg
    assert 'set camera.format = "yuyv", or camera.device_format = "mjpeg"' in msg


def test_a_size_the_device_lacks_is_refused_with_its_offer():
    with pytest.raises(v4l2.CameraError, match=r"offers YUYV but not at 1280x720 \(camera.width/height\); it offers:\n"
                                               r"  YUYV \(YUYV 4:2:2\)\n    640x480 @ 30, 15 fps"):
        v4l2.choose(UVC, ("YUYV",), 1280, 720, "yuyv")
    with pytest.raises(v4l2.CameraError, match="not at 1281x720"):  # off the stepwise grid
        v4l2.choose(CSI, ("NM12",), 1281, 720, "nv12")


@pytest.mark.parametrize("err,text", [
    (errno.ENOENT, "camera.device /dev/video7: no such device (video nodes here:"),
    (errno.EBUSY, "camera.device /dev/video7: busy (another program is streaming from it: `fuser /dev/video7`"),
    (errno.EACCES, "camera.device /dev/video7: permission denied; add the user to the `video` group"),
])
def test_open_errors_name_the_device_and_the_fix(err, text):
    e = v4l2.open_error("/dev/video7", OSError(err, "x"))
    assert isinstance(e, v4l2.CameraError) and str(e).startswith(text), str(e)


def test_other_open_errors_name_the_step():
    e = v4l2.open_error("/dev/video7", OSError(errno.EINVAL, "Invalid argument"), "setting the format YUYV 640x480")
    assert str(e) == "camera.device /dev/video7: setting the format YUYV 640x480: Invalid argument"


def test_a_missing_device_is_a_clear_error_from_the_real_open():
    with pytest.raises(v4l2.CameraError, match="/dev/video-none: no such device"):
        try:
            v4l2.probe("/dev/video-none")
        except OSError as e:
            raise v4l2.open_error("/dev/video-none", e) from None


def test_offer_as_json_is_plain_data():
    d = dataclasses.asdict(UVC)
    assert json.loads(json.dumps(d))["formats"][1]["sizes"][1] == {
        "width": 1920, "height": 1080, "fps": [30.0, 24.0], "fps_range": None, "max_width": 0, "max_height": 0,
        "step_width": 0, "step_height": 0}


# -- scanning and `edgert cameras` ---------------------------------------------------------------
def test_scan_of_a_folder_without_video_nodes_says_why(tmp_path):
    s = v4l2.scan(tmp_path)
    assert s.devices == [] and s.nodes == 0
    assert s.why_none().startswith(f"no V4L2 device: {tmp_path} has no video* node")


def test_scan_reports_nodes_it_cannot_use(tmp_path, monkeypatch):
    (tmp_path / "video0").write_bytes(b"")  # a real open, a real QUERYCAP ioctl: ENOTTY on a plain file
    (tmp_path / "video1").write_bytes(b"")
    (tmp_path / "video-meta").write_bytes(b"")  # not video<N>: not a node
    real = v4l2.probe

    def probe(path):  # this test runs as root, which every device permission lets in: deny video1 by hand
        if Path(path).name == "video1":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path)

    monkeypatch.setattr(v4l2, "probe", probe)
    s = v4l2.scan(tmp_path)
    assert s.devices == [] and s.nodes == 2
    assert s.problems[0] == f"{tmp_path}/video0: Inappropriate ioctl for device"
    assert s.problems[1].startswith(f"{tmp_path}/video1: permission denied; add the user to the `video` group")
    assert s.why_none() == f"no capture device among 2 video* node(s): {'; '.join(s.problems)}"


def _edgert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgert.runtime.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_edgert_cameras_without_devices_says_so_and_exits_0(tmp_path):
    if v4l2.video_nodes():
        pytest.skip("this machine has /dev/video* nodes; the no-device message is tested with --dev below")
    p = _edgert("cameras")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("no V4L2 device: /dev has no video* node"), p.stdout
    j = _edgert("cameras", "--json")
    assert j.returncode == 0 and json.loads(j.stdout)["devices"] == []


def test_edgert_cameras_on_an_empty_dev_folder(tmp_path):
    p = _edgert("cameras", "--dev", str(tmp_path))
    assert p.returncode == 0 and p.stdout.startswith(f"no V4L2 device: {tmp_path} has no video* node"), p


def test_edgert_doctor_shows_the_cameras():
    p = _edgert("doctor")
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("cameras")]
    assert line, p.stdout
    if not v4l2.video_nodes():
        assert line[0].startswith("cameras: no V4L2 device: /dev has no video* node")


# -- config ------------------------------------------------------------------------------------
def test_config_keys():
    example = load(Path(__file__).parent.parent / "configs" / "usb-camera.toml")
    assert (example.camera.source, example.camera.device, example.camera.device_format) == ("v4l2", "/dev/video0",
                                                                                            "mjpeg")
    cfg = from_dict({"camera": {"source": "v4l2", "device": "/dev/v4l/by-id/usb-cam-video-index0",
                                "device_format": "mjpeg"}})
    assert cfg.camera.device.endswith("index0") and cfg.camera.device_format == "mjpeg"
    for raw, msg in [({"source": "v4l2"}, "camera.device: required with camera.source = \"v4l2\""),
                     ({"device": "/dev/video0"}, "camera.device: set, but camera.source is 'sim'"),
                     ({"device_format": "mjpeg"}, "camera.device_format: set, but camera.source is 'sim'"),
                     ({"source": "v4l2", "device": "video0"}, "camera.device: 'video0' is not a device path"),
                     ({"source": "v4l2", "device": "/dev/video0", "device_format": "h264"},
                      "camera.device_format: 'h264' is not one of '', 'mjpeg'"),
                     ({"source": "v4l2", "device": "/dev/video0", "device_format": "mjpeg", "format": "nv12"},
                      "camera.device_format: \"mjpeg\" is decoded to BGR, and camera.format is 'nv12'")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            from_dict({"camera": raw})


def test_the_v4l2_source_is_registered():
    from edgert.runtime.stages import stage_class
    from edgert.runtime.stages.source import CameraSource

    assert issubclass(stage_class("capture", "v4l2"), CameraSource)


# -- a real device -------------------------------------------------------------------------------
def test_a_real_camera_through_the_pipeline_threads_mode():
    """Open the first capture device, run the pipeline on it in threads mode, see 10+ frames."""
    nodes = v4l2.video_nodes()
    if not nodes:
        pytest.skip("V4L2: no /dev/video* on this machine (no camera, no v4l2loopback module)")
    found = v4l2.scan()
    if not found.devices:
        pytest.skip(f"V4L2: {found.why_none()}")
    from edgert.runtime.config import choices

    dev = found.devices[0]
    pick = None
    native = [(v4l2.FOURCCS[f], {"format": f}) for f in ("yuyv", "nv12", "i420") if f in choices("camera.format")]
    for fourccs, extra in (*native, (v4l2.MJPEG_FOURCCS, {"device_format": "mjpeg"}), (v4l2.FOURCCS["bgr"], {})):
        for f in (dev.format(c) for c in fourccs):
            sizes = [s for s in (f.sizes if f else ()) if not s.stepwise and s.fps]
            if sizes:
                s = min(sizes, key=lambda s: s.width * s.height)
                pick = {"width": s.width, "height": s.height, "fps": max(s.fps), **extra}
                break
        if pick:
            break
    if pick is None:
        pytest.skip(f"V4L2: {dev.path} offers no format camera.format takes here "
                    f"({', '.join(choices('camera.format'))}, or MJPEG); it offers "
                    f"{', '.join(f.fourcc for f in dev.formats)}")
    from conftest import SHARED_MACHINE_CONTROL

    from edgert.runtime.config import DEFAULT_CONFIG, load
    from edgert.runtime.supervisor import Supervisor

    cfg = load(DEFAULT_CONFIG).replace(camera={"source": "v4l2", "device": dev.path, **pick},
                                       control=SHARED_MACHINE_CONTROL)
    s = Supervisor(cfg, duration_s=4.0, mode="threads").run()
    cap = s["stages"]["capture"]
    assert s["frames"] >= 10 and cap["errors"] == 0, s


# -- the source stage on a scripted device -------------------------------------------------------
FAKE_SLOT = {"BGR3": "bgr", "RGB3": "rgb", "YUYV": "yuyv", "NV12": "nv12", "NM12": "nv12", "YU12": "i420",
             "YM12": "i420"}


class FakeDevice:
    """What cannot run here (no /dev/video*): a camera behind `v4l2.probe` and `v4l2.Capture` giving
    `fourcc` frames laid out as a driver does (rows padded by PAD bytes of 0xa5; multi-planar
    fourccs in one buffer per plane), monotonic driver timestamps 3 ms before dequeue, a frame every
    20 ms, and switches to unplug it (DQBUF fails, the node is gone) or stall it (no frame, device
    still open). Everything the stage does with it is the stage's real code: views, copy, stamps,
    reconnects."""

    PAD = 8

    def __init__(self, w: int, h: int, fourcc: str = "BGR3") -> None:
        self.w, self.h, self.fourcc = w, h, fourcc
        self.present, self.unplugged, self.stalled = True, False, False
        self.opened = 0
        self.stamp_of: dict[int, int] = {}  # sequence -> driver timestamp (ns)
        self.seq = 0
        self.burst = 0  # frames ready at once (the pipeline fell behind), then stalled
        self.gap = 0  # sequence numbers the driver skips before the next frame (no free buffer)

    def probe(self, path):
        if not self.present:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        mplane = self.fourcc in v4l2.MULTIPLANAR
        return CameraDevice(str(path), "fake", "Scripted Cam", "test", (
            PixelFormat(self.fourcc, "scripted", (FrameSize(self.w, self.h, (30.0,)),), multiplanar=mplane),),
            multiplanar=mplane)

    def geometry(self, width: int, height: int) -> Geometry:
        row = width * {"YUYV": 2, "BGR3": 3, "RGB3": 3}.get(self.fourcc, 1)
        if self.fourcc == "NM12":
            return Geometry.multi("NM12", width, height, [row + self.PAD, row + 2 * self.PAD])
        if self.fourcc == "YM12":
            return Geometry.multi("YM12", width, height, [row + self.PAD, row // 2 + self.PAD, row // 2 + self.PAD])
        return Geometry.single(self.fourcc, width, height, row + self.PAD)

    def capture(self, dev, fmt, width, height, fps, n_buffers=4):
        fake = self
        fake.opened += 1
        geom = self.geometry(width, height)

        class Cap:
            geometry = geom
            fps_given = fps
            yuv = ("bt601", "limited")
            used = flags = sequence = secs = usecs = 0

            def __init__(self):
                sizes = [n + fake.PAD * 2 * height for n in geom.needed()]  # a driver's sizeimage: whole rows and more
                self.buffers = [[bytearray(b"\xa5" * n) for n in sizes] for _ in range(n_buffers)]
                self.planes = [v4l2.source_views(geom, bufs, FAKE_SLOT[fake.fourcc]) for bufs in self.buffers]
                self.next_ns = time.monotonic_ns()
                self.i = 0

            def read(self, timeout_ms):
                if fake.unplugged:
                    raise v4l2.CameraGone(f"{dev.path}: No such device")
                now = time.monotonic_ns()
                if fake.burst:
                    fake.burst -= 1
                    fake.stalled = fake.stalled or not fake.burst
                elif fake.stalled or self.next_ns > now + timeout_ms * 1_000_000:
                    time.sleep(timeout_ms / 1000)
                    return -1
                time.sleep(max(0, self.next_ns - now) / 1e9)
                self.next_ns = max(self.next_ns + 20_000_000, time.monotonic_ns())
                fake.seq += 1 + fake.gap
                fake.gap = 0
                idx, self.i = self.i, (self.i + 1) % n_buffers
                for plane in self.planes[idx]:
                    plane[...] = 16 + fake.seq % 200  # pixels say which frame; the padding stays 0xa5
                ts = time.monotonic_ns() - 3_000_000
                fake.stamp_of[fake.seq] = ts // 1000 * 1000  # a timeval holds microseconds
                self.used, self.flags, self.sequence = len(self.buffers[idx][0]), v4l2.BUF_FLAG_TIMESTAMP_MONOTONIC, fake.seq
                self.secs, self.usecs = divmod(ts // 1000, 1_000_000)
                return idx

            def release(self, idx):
                pass

            def close(self):
                pass

        return Cap()


def test_the_v4l2_stage_copies_stamps_and_reconnects(monkeypatch):
    from conftest import StageHarness

    from edgert.runtime import wire
    from edgert.runtime.framepool import FramePool
    from edgert.runtime.stages.v4l2source import V4L2Stage
    from edgert.runtime.topics import CAMERA_STREAM, layout, stream
    from edgert.runtime.transport import subscriber
    from edgert.runtime.wire import MsgType, Stamp

    w, h = 16, 8
    fake = FakeDevice(w, h)
    monkeypatch.setattr(v4l2, "probe", fake.probe)
    monkeypatch.setattr(v4l2, "Capture", fake.capture)
    cfg = from_dict({"camera": {"source": "v4l2", "device": "/dev/video-fake", "width": w, "height": h, "fps": 30.0}})
    lay = layout(CAMERA_STREAM, cfg)
    harness = StageHarness(cfg)
    pool = FramePool.create(harness.run_id, CAMERA_STREAM, lay.slots, lay.slot_bytes)
    frames = None
    try:
        harness.start(V4L2Stage)
        assert harness.code is None, "setup failed"
        stage = harness.stage
        frames = subscriber(harness.zmq, harness.endpoints, stream(CAMERA_STREAM).topic)

        def next_frames(n: int, timeout_s: float = 60.0) -> list[tuple[int, int, int]]:
            """(frame id, CAPTURE stamp, pixel value) of the next n frames the stage publishes."""
            got: list[tuple[int, int, int]] = []
            end = time.monotonic() + timeout_s
            while len(got) < n and time.monotonic() < end:
                harness.send_start()
                if not frames.poll(50):
                    continue
                msg = frames.recv()
                while frames.poll(0):  # the newest descriptor: older slots may be refilled already
                    msg = frames.recv()
                rec = wire.decode(msg, MsgType.FRAME)
                pixels = pool.view(int(rec["slot"]), lay.shape, lay.dtype).copy()
                if pool.is_current(int(rec["slot"]), int(rec["generation"])):  # not refilled while copied
                    vals = np.unique(pixels)
                    assert len(vals) == 1, vals  # the whole slot is one frame's pixels: no pitch garbage (0xa5)
                    got.append((int(rec["frame_id"]), int(rec["stamps"][Stamp.CAPTURE]), int(vals[0])))
            assert len(got) == n, f"{len(got)} of {n} frames within {timeout_s} s"
            return got

        def wait_for(cond, what: str, timeout_s: float = 60.0) -> None:
            end = time.monotonic() + timeout_s
            while not cond() and time.monotonic() < end:
                frames.poll(20) and frames.recv()
            assert cond(), what

        got = next_frames(5)
        ids = [g[0] for g in got]
        assert ids == sorted(set(ids))
        by_value = {16 + seq % 200: ts for seq, ts in fake.stamp_of.items()}
        for _, stamp, value in got:
            assert stamp == by_value[value]  # the driver's timestamp is the frame's capture stamp

        fake.unplugged, fake.present = True, False  # unplugged: DQBUF fails, the node is gone
        wait_for(lambda: stage.lost and stage.capture is None, "an unplugged camera is reported lost and closed")
        time.sleep(0.3)  # a few failed reopens (backoff from 0.1 s)
        assert fake.opened == 1 and stage.backoff.attempts >= 2
        fake.unplugged, fake.present = False, True  # plugged back in
        next_frames(3)
        assert fake.opened == 2 and not stage.lost and stage.backoff.attempts == 0

        fake.stalled = True  # open, but no frames: lost after the deadline, reopened after RECONNECT_AFTER_S
        wait_for(lambda: stage.lost, "a stalled camera is reported lost")
        wait_for(lambda: fake.opened == 3, "a camera stalled for a second is reopened")
        fake.stalled = False
        next_frames(3)
        assert not stage.lost

        fake.stalled = True  # frames stop; then three come at once after a driver-side gap of 2
        time.sleep(0.3)
        dropped, seq = stage.dropped, fake.seq
        fake.gap, fake.burst = 2, 3
        wait_for(lambda: stage.last_seq == seq + 5, "the newest of the burst is published")
        assert stage.dropped - dropped == 4  # 2 never delivered (sequence gap) + 2 older ones skipped
        fake.stalled = False
        next_frames(2)  # and frames flow on
    finally:
        if frames is not None:
            frames.close(0)
        harness.close()
        pool.close()
    assert harness.code == 0 and stage.errors == 0


@pytest.mark.parametrize("fourcc", ["BGR3", "YUYV", "NM12", "YU12"])
def test_the_pipeline_on_a_scripted_camera_threads_mode(monkeypatch, tiny_model, tmp_path, fourcc):
    """The whole pipeline in threads mode (one process, so the scripted device stands in for the
    real one in the capture stage): frames in the camera's own format reach preprocess, which
    decodes them, and the model's commands come out."""
    from conftest import SHARED_MACHINE_CONTROL

    from edgert.runtime.config import DEFAULT_CONFIG, choices
    from edgert.runtime.supervisor import Supervisor

    fmt = FAKE_SLOT[fourcc]
    if fmt not in choices("camera.format"):
        pytest.skip(f"camera.format {fmt!r} is not taken by this pipeline yet (only {choices('camera.format')})")
    from edgert.runtime import signing

    manifest = tiny_model / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('markets = ["EU"]', 'markets = ["sim"]\npublisher = "v4l2-test"'))
    pem, _ = signing.keygen(tmp_path / "keys", "v4l2-test")
    signing.sign(tiny_model, pem)
    fake = FakeDevice(64, 48, fourcc)  # the tiny model's frame size
    monkeypatch.setattr(v4l2, "probe", fake.probe)
    monkeypatch.setattr(v4l2, "Capture", fake.capture)
    cfg = load(DEFAULT_CONFIG).replace(
        camera={"source": "v4l2", "device": "/dev/video-fake", "width": 64, "height": 48, "fps": 30.0, "format": fmt,
                "dark_level": 0.0, "frozen_frames": 0},  # the scripted frames are flat: no health takeovers
        control=SHARED_MACHINE_CONTROL, infer={"model": str(tiny_model), "trusted_keys": str(tmp_path / "keys")})
    s = Supervisor(cfg, duration_s=3.0, mode="threads").run()
    assert s["frames"] >= 10, s
    for name, st in s["stages"].items():
        assert st["errors"] == 0 and st["rejected"] == 0, (name, st)
    assert fake.opened == 1 and fake.seq >= s["frames"]
    assert s["commands"]["model_commands"] >= 10, s["commands"]  # the frames went all the way round


def test_an_unplugged_camera_is_a_camera_lost_takeover_and_the_pipeline_recovers(monkeypatch, tiny_model, tmp_path):
    """Threads mode on the scripted camera: unplugged mid-run, control hands over with CAMERA_LOST
    (not a generic deadline), the source reopens it when it is back, control resumes; no stage is
    restarted."""
    from conftest import SHARED_MACHINE_CONTROL, run_scripted, wait_until

    from edgert.runtime import signing
    from edgert.runtime.config import DEFAULT_CONFIG
    from edgert.runtime.supervisor import Supervisor

    manifest = tiny_model / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('markets = ["EU"]', 'markets = ["sim"]\npublisher = "v4l2-test"'))
    pem, _ = signing.keygen(tmp_path / "keys", "v4l2-test")
    signing.sign(tiny_model, pem)
    fake = FakeDevice(64, 48, "YUYV")
    monkeypatch.setattr(v4l2, "probe", fake.probe)
    monkeypatch.setattr(v4l2, "Capture", fake.capture)
    cfg = load(DEFAULT_CONFIG).replace(
        camera={"source": "v4l2", "device": "/dev/video-fake", "width": 64, "height": 48, "fps": 30.0,
                "format": "yuyv", "dark_level": 0.0, "frozen_frames": 0},
        control=SHARED_MACHINE_CONTROL, infer={"model": str(tiny_model), "trusted_keys": str(tmp_path / "keys")})
    sup = Supervisor(cfg, duration_s=600.0, mode="threads")
    steps: list[str] = []

    def script() -> None:
        wait_until(sup, lambda: sup.running.is_set(), "the pipeline runs")
        tel = sup.telemetry
        wait_until(sup, lambda: tel.checks.model_commands >= 10, "commands from the camera's frames")
        fake.unplugged, fake.present = True, False
        wait_until(sup, lambda: tel.camera.losses == 1 and tel.checks.failsafe_commands >= 3, "the loss reaches control")
        time.sleep(0.5)  # a few failed reopens
        fake.unplugged, fake.present = False, True
        wait_until(sup, lambda: any(t["resumed_ns"] is not None for t in list(tel.takeovers)), "control resumes")
        steps.append("done")

    s = run_scripted(sup, script)
    assert steps == ["done"]
    takeovers = [x for x in s["takeovers"] if x["reason"] != "SHUTDOWN"]
    assert len(takeovers) == 1 and takeovers[0]["reasons"] == ["CAMERA_LOST"], s["takeovers"]
    assert s["camera"]["losses"] == 1 and fake.opened == 2
    assert all(st["restarts"] == 0 and st["errors"] == 0 for st in s["stages"].values()), s["stages"]
