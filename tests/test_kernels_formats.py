"""kernels/: GRAY, NV12, I420 and YUYV sources, and batches of frames.

Tolerances, in 8-bit steps before normalisation:
  - decode alone (identity resize) against cv2.cvtColor (BT.601 limited, OpenCV's only YUV
    decode): CVT_STEPS = 0.75 (OpenCV rounds to uint8, 0.5, and uses 20-bit fixed-point
    coefficients; measured worst 0.62);
  - the whole spec against the NumPy decode (kernels/formats.py) + the float chain:
    FLOAT_STEPS = 0.05 (float32 rounding only), every matrix and range;
  - the whole spec against `reference_preprocess` (cvtColor to uint8, then the 8-bit chain):
    TOLERANCE_STEPS[color] + 1.0 (one extra rounding to uint8 before the resize).
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kernels import FLOAT_STEPS, TOLERANCE_STEPS, allocations, assert_close, float_chain, steps_to_out

from edgert.kernels import Preprocessor, PreprocessSpec, reference_preprocess
from edgert.kernels.formats import yuv_to_rgb_reference

CVT_STEPS = 0.75
CV2_CODE = {"nv12": cv2.COLOR_YUV2RGB_NV12, "i420": cv2.COLOR_YUV2RGB_I420, "yuyv": cv2.COLOR_YUV2RGB_YUYV}
FORMATS = ("gray", "nv12", "i420", "yuyv")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def buffer_shape(fmt: str, h: int, w: int, gray3: bool = False) -> tuple[int, ...]:
    return {"gray": (h, w, 1) if gray3 else (h, w), "nv12": (h * 3 // 2, w), "i420": (h * 3 // 2, w),
            "yuyv": (h, w, 2)}[fmt]


def yuv_frame(rng: np.random.Generator, shape: tuple[int, ...], pad: int) -> np.ndarray:
    """Random bytes in a buffer of `shape`; pad > 0 gives a row-pitched view with garbage padding."""
    row = int(np.prod(shape[1:]))
    base = np.full((shape[0], row + pad), 0xA5, np.uint8)
    view = base[:, :row].reshape(shape)
    view[...] = rng.integers(0, 256, shape, dtype=np.uint8)
    return view


def run(spec: PreprocessSpec, src: np.ndarray, **kw: int) -> np.ndarray:
    pre = Preprocessor(spec, src.shape, **kw)
    out = np.full(pre.out_shape, np.nan, pre.out_dtype)
    pre(src, out)
    return out


@st.composite
def yuv_cases(draw: st.DrawFn) -> tuple[PreprocessSpec, np.ndarray]:
    fmt = draw(st.sampled_from(FORMATS))
    even_w = fmt != "gray"
    even_h = fmt in ("nv12", "i420")
    h = draw(st.integers(1, 40)) * (2 if even_h else 1)
    w = draw(st.integers(1, 50)) * (2 if even_w else 1)
    if fmt == "gray" and draw(st.booleans()):
        h, w = h + draw(st.integers(0, 1)), w + draw(st.integers(0, 1))  # odd sizes where legal
    if draw(st.booleans()):
        roi = None
        rw, rh = w, h
    else:  # ROIs at the borders, odd offsets included (chroma phase)
        x = draw(st.one_of(st.just(0), st.integers(0, w - 1)))
        y = draw(st.one_of(st.just(0), st.integers(0, h - 1)))
        rw = draw(st.one_of(st.just(w - x), st.integers(1, w - x)))
        rh = draw(st.one_of(st.just(h - y), st.integers(1, h - y)))
        roi = (x, y, rw, rh)
    spec = PreprocessSpec(
        src_format=fmt, out_width=draw(st.integers(1, 40)), out_height=draw(st.integers(1, 40)), roi=roi,
        resize=draw(st.sampled_from(["area", "bilinear"])), color=draw(st.sampled_from(["rgb", "bgr", "yuv601"])),
        scale=draw(st.sampled_from([1 / 255, 1.0])), mean=draw(st.tuples(*[st.sampled_from([0.0, 0.485])] * 3)),
        std=draw(st.tuples(*[st.sampled_from([1.0, 0.229, -0.7])] * 3)),
        layout=draw(st.sampled_from(["nchw", "nhwc"])), dtype=draw(st.sampled_from(["float32", "float16"])),
        yuv_matrix=draw(st.sampled_from(["bt601", "bt709"])), yuv_range=draw(st.sampled_from(["limited", "full"])))
    shape = buffer_shape(fmt, h, w, gray3=draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return spec, yuv_frame(rng, shape, draw(st.sampled_from([0, 0, 2, 6, 64])))


@SETTINGS
@given(yuv_cases())
def test_yuv_matches_numpy_decode_and_float_chain(case: tuple[PreprocessSpec, np.ndarray]) -> None:
    spec, src = case
    spec = replace(spec, dtype="float32")
    rgb = yuv_to_rgb_reference(spec.src_format, src, spec.yuv_matrix, spec.yuv_range).astype(np.float32)
    assert_close(spec, run(spec, src), float_chain(replace(spec, src_format="rgb"), rgb), FLOAT_STEPS)


@SETTINGS
@given(yuv_cases())
def test_yuv_matches_opencv_chain(case: tuple[PreprocessSpec, np.ndarray]) -> None:
    spec, src = case
    assert_close(spec, run(spec, src), reference_preprocess(spec, src), TOLERANCE_STEPS[spec.color] + 1.0)


@pytest.mark.parametrize("step", [1, 2, 3, 5])
@pytest.mark.parametrize("fmt", ["nv12", "i420", "yuyv"])
@settings(max_examples=40, deadline=None)
@given(resize=st.sampled_from(["bilinear", "area"]), readonly=st.booleans(), ow=st.integers(1, 40),
       oh=st.integers(1, 12),
       x=st.integers(0, 7), y=st.integers(0, 3), y_up=st.booleans(), extra=st.integers(0, 3),
       color=st.sampled_from(["rgb", "bgr", "yuv601"]),
       out=st.sampled_from([("float32", "nchw"), ("float32", "nhwc"), ("float16", "nchw"), ("uint8", "nhwc")]),
       yuv=st.sampled_from([("bt601", "limited"), ("bt601", "full"), ("bt709", "limited"), ("bt709", "full")]),
       letterbox=st.booleans(),
       pad=st.sampled_from([0, 6]), seed=st.integers(0, 2**32 - 1))
def test_direct_decode_is_bit_identical_to_the_row_buffer_path(fmt: str, step: int, resize: str, readonly: bool,
                                                                ow: int, oh: int, x: int, y: int, y_up: bool,
                                                                extra: int, color: str,
                                                                out: tuple[str, str], yuv: tuple[str, str],
                                                                letterbox: bool, pad: int, seed: int) -> None:
    """An odd whole x downscale (1920 -> 640 bilinear: one kept column per output pixel at
    weight 1; with area, an unscaled width) decodes each tap straight into the output row
    (yuvkernel.MODE_DIRECT, MODE_DIRECT3), and 2:1 into an even and an odd plane combined by
    the two x taps (MODE_DIRECT2). It must give the row-buffer path's bits for every format, dtype,
    layout, colour, matrix and range, area's 2-3 y taps, a y upscale (rows reused across output
    rows), odd ROI offsets in x and y (the chroma phases), padded and read-only frames.
    (Letterboxed fits are rarely a whole step here: the letterbox test below covers that.)"""
    from edgert.kernels.yuvkernel import MODE_DIRECT, MODE_DIRECT2, MODE_DIRECT3, MODE_ROWBUF

    rw, rh = step * ow, (oh // 2 + 1 if y_up else 2 * oh + 2)
    w, h = x + rw + extra, y + rh + 2
    w, h = w + (w & 1), h + (h & 1)
    src = yuv_frame(np.random.default_rng(seed), buffer_shape(fmt, h, w), pad)
    src.flags.writeable = not readonly
    dtype, layout = out
    spec = PreprocessSpec(src_format=fmt, out_width=ow + (6 if letterbox else 0), out_height=oh,
                          roi=(x, y, rw, rh), resize=resize, letterbox=letterbox, color=color,
                          scale=1 / 255 if dtype != "uint8" else 1.0, mean=(0.485, 0.456, 0.406) if dtype != "uint8"
                          else (0.0, 0.0, 0.0), std=(0.229, 0.224, 0.225) if dtype != "uint8" else (1.0, 1.0, 1.0),
                          layout=layout, dtype=dtype, yuv_matrix=yuv[0], yuv_range=yuv[1])
    direct, general = Preprocessor(spec, src.shape), Preprocessor(spec, src.shape)
    # (area with a y upscale takes linear x taps: not always a whole step)
    if not letterbox and (resize == "bilinear" or (step <= 2 and not y_up)):
        want = {1: MODE_DIRECT, 2: MODE_DIRECT2, 3: MODE_DIRECT3 if ow > 1 else MODE_DIRECT}.get(step, MODE_DIRECT)
        assert direct._mode == want
    general._mode = MODE_ROWBUF
    got, want = np.empty(direct.out_shape, direct.out_dtype), np.empty(direct.out_shape, direct.out_dtype)
    direct(src, got)
    general(src, want)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    if dtype == "float32" and not letterbox:  # and both against the NumPy decode + float chain
        rgb = yuv_to_rgb_reference(fmt, src, spec.yuv_matrix, spec.yuv_range).astype(np.float32)
        assert_close(spec, got, float_chain(replace(spec, src_format="rgb"), rgb), FLOAT_STEPS)


def test_1080p_nv12_to_640_decodes_straight_into_the_output() -> None:
    from edgert.kernels.yuvkernel import MODE_DIRECT3

    spec = replace(_spec("nv12"), out_width=640, out_height=384)
    src = yuv_frame(np.random.default_rng(9), buffer_shape("nv12", 1080, 1920), 0)
    assert Preprocessor(spec, src.shape)._mode == MODE_DIRECT3
    rgb = yuv_to_rgb_reference("nv12", src, spec.yuv_matrix, spec.yuv_range).astype(np.float32)
    assert_close(spec, run(spec, src), float_chain(replace(spec, src_format="rgb"), rgb), FLOAT_STEPS)
    np.testing.assert_array_equal(run(spec, src, threads=2), run(spec, src))


@pytest.mark.parametrize("fmt", ["nv12", "i420", "yuyv"])
def test_a_scale_between_2_and_3_keeps_the_row_buffer(fmt: str) -> None:
    """1600 -> 640 bilinear: two taps per output pixel, starting every second kept column, but the
    kept columns have gaps, so no constant-stride gather fits (MODE_DIRECT2 would read the wrong
    columns): the row buffer, matching the float chain."""
    from edgert.kernels.yuvkernel import MODE_ROWBUF

    spec = replace(_spec(fmt), out_width=640, out_height=360)
    src = yuv_frame(np.random.default_rng(11), buffer_shape(fmt, 900, 1600), 0)
    pre = Preprocessor(spec, src.shape)
    assert pre._xw.shape[1] == 2 and np.array_equal(pre._xstart, 6 * np.arange(640))  # looks like 2:1
    assert pre._mode == MODE_ROWBUF
    rgb = yuv_to_rgb_reference(fmt, src, spec.yuv_matrix, spec.yuv_range).astype(np.float32)
    assert_close(spec, run(spec, src), float_chain(replace(spec, src_format="rgb"), rgb), FLOAT_STEPS)


@pytest.mark.parametrize("size, out, mode, x_in", [((1920, 1080), (700, 360), "MODE_DIRECT3", 30),
                                                   ((1280, 720), (680, 360), "MODE_DIRECT2", 20)])
@pytest.mark.parametrize("fmt", ["nv12", "i420", "yuyv"])
def test_letterboxed_camera_frames_take_the_direct_paths_with_their_offset(fmt: str, size: tuple[int, int],
                                                                         out: tuple[int, int], mode: str,
                                                                         x_in: int) -> None:
    """1920x1080 into 700x360 (640x360 at x = 30, a 3:1 pick) and 1280x720 into 680x360 (640x360
    at x = 20, 2:1) with letterbox: the same bits as the row-buffer path, padding included. The
    frame is row-padded; no reference to it is left after 200 calls (simd.unit_row's views)."""
    import sys

    from edgert.kernels import yuvkernel
    from edgert.kernels.yuvkernel import MODE_ROWBUF

    spec = replace(_spec(fmt), out_width=out[0], out_height=out[1], letterbox=True, pad_value=0.5)
    src = yuv_frame(np.random.default_rng(10), buffer_shape(fmt, size[1], size[0]), 64)
    direct, general = Preprocessor(spec, src.shape), Preprocessor(spec, src.shape)
    assert direct._mode == getattr(yuvkernel, mode) and direct.letterbox[2:] == (x_in, 0)
    general._mode = MODE_ROWBUF
    got, want = np.empty(direct.out_shape, np.float32), np.empty(direct.out_shape, np.float32)
    direct(src, got)
    general(src, want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run(spec, src, threads=2), got)  # row chunks, each with its own scratch
    owner = src.base  # what a leaked view would hold (NumPy points views at the owning array)
    refs = sys.getrefcount(src), sys.getrefcount(owner)
    for _ in range(200):
        direct(src, got)
    assert (sys.getrefcount(src), sys.getrefcount(owner)) == refs


@pytest.mark.parametrize("fmt", ["nv12", "i420", "yuyv"])
@pytest.mark.parametrize("pad", [0, 10])
def test_decode_alone_matches_cv2_cvtcolor(fmt: str, pad: int) -> None:
    """Identity resize, rgb out, scale 1: the output is the decoded frame itself."""
    h, w = 36, 50
    src = yuv_frame(np.random.default_rng(5), buffer_shape(fmt, h, w), pad)
    spec = PreprocessSpec(src_format=fmt, out_width=w, out_height=h, resize="bilinear", color="rgb", scale=1.0,
                          layout="nhwc", dtype="float32")
    want = cv2.cvtColor(src, CV2_CODE[fmt]).astype(np.float32)[None]
    assert_close(spec, run(spec, src), want, CVT_STEPS)


def test_gray_is_replicated_exactly() -> None:
    src = yuv_frame(np.random.default_rng(6), (13, 17), 3)
    spec = PreprocessSpec(src_format="gray", out_width=17, out_height=13, resize="area", color="bgr", scale=1.0,
                          layout="nchw", dtype="float32")
    np.testing.assert_array_equal(run(spec, src)[0], np.broadcast_to(src.astype(np.float32), (3, 13, 17)))


def test_bt709_full_range_known_values() -> None:
    """Spot values from the BT.709 equations: Y=128, Cr=228 -> R = 128 + 1.5748 * 100."""
    src = np.zeros((3, 2), np.uint8)
    src[:2] = 128
    src[2] = (128, 228)  # U, V
    spec = PreprocessSpec(src_format="nv12", out_width=2, out_height=2, resize="bilinear", color="rgb", scale=1.0,
                          layout="nhwc", dtype="float32", yuv_matrix="bt709", yuv_range="full")
    out = run(spec, src)[0, 0, 0]
    np.testing.assert_allclose(out, [255.0, 128 - 0.4681 * 100, 128.0], atol=0.01)  # R saturates at 255


# --- errors ---------------------------------------------------------------------------------------


def _spec(fmt: str) -> PreprocessSpec:
    return PreprocessSpec(src_format=fmt, out_width=8, out_height=4, resize="bilinear", color="rgb", layout="nchw",
                          dtype="float32")


@pytest.mark.parametrize("fmt, shape, message", [
    ("nv12", (1621, 1920), "src_shape: 'nv12' (4:2:0) needs an even width and height"),
    ("nv12", (1620, 1919), "needs an even width and height"),
    ("i420", (9, 7), "needs an even width and height"),
    ("i420", (16, 8), "needs an even width and height"),  # 16 rows: no integer height
    ("nv12", (1080, 1920, 3), "src_shape: 'nv12' frames are one array of (height * 3 // 2, width)"),
    ("yuyv", (1080, 1919, 2), "src_shape: 'yuyv' needs an even width"),
    ("yuyv", (1080, 1920), "src_shape: 'yuyv' frames are (height, width, 2)"),
    ("gray", (1080, 1920, 3), "src_shape: 'gray' frames are (height, width) or (height, width, 1)"),
])
def test_bad_source_shapes_are_rejected(fmt: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError) as e:
        Preprocessor(_spec(fmt), shape)
    assert message in str(e.value)


def test_roi_checked_against_the_picture_not_the_buffer() -> None:
    spec = replace(_spec("nv12"), roi=(0, 0, 8, 7))
    with pytest.raises(ValueError, match=r"outside the 8x6 frame"):
        Preprocessor(spec, (9, 8))


@pytest.mark.parametrize("fmt, src, message", [
    ("nv12", np.zeros((18, 32), np.uint8)[:, ::2], "src: strides (32, 2) unsupported for 'nv12'"),
    ("nv12", np.zeros((18, 16), np.uint8)[::-1], "src: strides (-16, 1) unsupported"),
    ("yuyv", np.zeros((12, 16, 2), np.uint8).transpose(0, 1, 2)[:, :, ::-1], "unsupported for 'yuyv'"),
    ("nv12", np.zeros((18, 16), np.float32), "src: expected a uint8 array of shape (18, 16) (H * 3 // 2, W)"),
    ("nv12", np.zeros((12, 16), np.uint8), "got (12, 16) uint8"),
])
def test_bad_source_buffers_are_rejected(fmt: str, src: np.ndarray, message: str) -> None:
    shape = (12, 16, 2) if fmt == "yuyv" else (18, 16)
    pre = Preprocessor(_spec(fmt), shape)
    with pytest.raises(ValueError) as e:
        pre(src, np.empty(pre.out_shape, np.float32))
    assert message in str(e.value)


# --- batches --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, threads", [("bgr", 1), ("nv12", 2), ("gray", 1)])
def test_batch_equals_frame_by_frame(fmt: str, threads: int) -> None:
    rng = np.random.default_rng(7)
    shape = buffer_shape(fmt, 24, 30) if fmt != "bgr" else (24, 30, 3)
    frames = [yuv_frame(rng, shape, 8) for _ in range(3)]
    spec = replace(_spec(fmt), roi=(2, 4, 26, 18), layout="nhwc")
    pre = Preprocessor(spec, shape, threads=threads, batch=3)
    assert pre.out_shape == (3, 4, 8, 3)
    want = np.concatenate([run(spec, f) for f in frames])
    for src in (frames, tuple(frames), np.stack(frames)):
        out = np.full(pre.out_shape, np.nan, np.float32)
        pre(src, out)
        np.testing.assert_array_equal(out, want)


def test_bad_batches_are_rejected() -> None:
    pre = Preprocessor(_spec("bgr"), (24, 30, 3), batch=3)
    out = np.empty(pre.out_shape, np.float32)
    frame = np.zeros((24, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=r"src: expected 3 frames .* got 2 frames; build the Preprocessor with batch="):
        pre([frame, frame], out)
    with pytest.raises(ValueError, match=r"got an array of shape \(24, 30, 3\)"):
        pre(frame, out)
    with pytest.raises(ValueError, match=r"out: expected a float32 array of shape \(3, 3, 4, 8\), got \(3, 4, 8\)"):
        pre([frame] * 3, out[0])
    with pytest.raises(ValueError, match="batch: expected an integer >= 1"):
        Preprocessor(_spec("bgr"), (24, 30, 3), batch=0)


# --- no allocation per frame --------------------------------------------------------------------


@pytest.mark.parametrize("fmt, batch, w", [("nv12", 1, 320), ("i420", 1, 320), ("yuyv", 1, 320), ("gray", 1, 320),
                                           ("bgr", 4, 320), ("nv12", 4, 320), ("nv12", 1, 480), ("i420", 1, 480),
                                           ("yuyv", 1, 480)])
def test_new_paths_allocate_nothing(fmt: str, batch: int, w: int) -> None:
    """w = 320 to 160 decodes every pixel (2:1), 480 to 160 one kept column per output (direct)."""
    shape = buffer_shape(fmt, 240, w) if fmt != "bgr" else (240, w, 3)
    pre = Preprocessor(replace(_spec(fmt), out_width=160, out_height=96), shape, batch=batch)
    pre.warmup()
    frames = [yuv_frame(np.random.default_rng(8), shape, 32) for _ in range(batch)]
    src = frames[0] if batch == 1 else frames
    kept, peak = allocations(pre, src, np.empty(pre.out_shape, pre.out_dtype))
    assert kept < 10 * 1024 and peak < 10 * 1024, (kept, peak)
    assert len(pre._kernel.signatures) == 1  # nothing compiled for a frame


def test_steps_helper_is_shared() -> None:  # keeps the import honest if test_kernels changes
    assert steps_to_out(_spec("bgr"), 1.0) == pytest.approx(1 / 255)


def test_unit_row_is_the_frame_row_on_padded_and_readonly_frames() -> None:
    """simd.unit_row types a row of an any-layout frame as contiguous, for the vectorised
    gathers: it must be that row's bytes (not the padding), for padded and read-only views."""
    import numba

    from edgert.kernels.simd import unit_row

    @numba.njit
    def rows(a):
        out = np.empty(a.shape, np.uint8)
        for i in range(a.shape[0]):
            r = unit_row(a, i)
            for j in range(r.shape[0]):
                out[i, j] = r[j]
        return out

    src = yuv_frame(np.random.default_rng(3), (6, 10), 7)  # rows 17 bytes apart
    np.testing.assert_array_equal(rows(src), src)
    src.flags.writeable = False
    np.testing.assert_array_equal(rows(src), src)
