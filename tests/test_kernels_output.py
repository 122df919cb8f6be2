"""kernels/: uint8 output and letterbox, against the OpenCV/NumPy reference and the kernel itself.

  - uint8 output is exactly np.clip(np.rint(float32 output), 0, 255): bit-identical to the
    kernel's own float32 result rounded by NumPy;
  - against `reference_preprocess` (8-bit cv2 chain, letterboxed by pasting into a canvas),
    the float32 tolerance of tests/test_kernels.py (TOLERANCE_STEPS) applies, plus one
    output unit for uint8 (two roundings may land on either side of a .5);
  - a letterboxed output is exactly the non-letterboxed kernel at the fitted size, pasted at
    the reported offset into a canvas of the normalised pad value.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kernels import TOLERANCE_STEPS, allocations, assert_close, cases, frame, steps_to_out

from edgert.kernels import Preprocessor, PreprocessSpec, reference_preprocess

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(spec: PreprocessSpec, src: np.ndarray, **kw: int) -> tuple[np.ndarray, Preprocessor]:
    pre = Preprocessor(spec, src.shape, **kw)
    out = np.full(pre.out_shape, 77, pre.out_dtype)  # 77: anything the kernel forgot to write shows
    pre(src, out)
    return out, pre


@SETTINGS
@given(cases(max_src=60, max_out=40), st.booleans(), st.sampled_from([0.0, 114.0, 255.0]))
def test_uint8_is_numpy_rounding_of_float32(case: tuple[PreprocessSpec, np.ndarray], lb: bool, pad: float) -> None:
    spec, src = case
    spec = replace(spec, scale=1.0, mean=(0.0, 10.0, -20.0), std=(1.0, 0.5, 2.0), letterbox=lb, pad_value=pad)
    f32, _ = run(replace(spec, dtype="float32"), src)
    u8, _ = run(replace(spec, dtype="uint8"), src)
    np.testing.assert_array_equal(u8, np.clip(np.rint(f32), 0, 255).astype(np.uint8))


@SETTINGS
@given(cases(max_src=60, max_out=40), st.sampled_from([0.0, 114.0, 255.0]), st.booleans())
def test_letterbox_matches_reference(case: tuple[PreprocessSpec, np.ndarray], pad: float, u8: bool) -> None:
    spec, src = case
    spec = replace(spec, letterbox=True, pad_value=pad)
    if u8:
        spec = replace(spec, dtype="uint8", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    got, _ = run(spec, src)
    want = reference_preprocess(spec, src)
    if u8:
        tol = steps_to_out(spec, TOLERANCE_STEPS[spec.color]) + 1
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= tol
    else:
        assert_close(spec, got, want, TOLERANCE_STEPS[spec.color])


@SETTINGS
@given(cases(max_src=60, max_out=40), st.sampled_from([0.0, 114.0]))
def test_letterbox_is_the_fitted_resize_pasted_at_the_offset(case: tuple[PreprocessSpec, np.ndarray],
                                                             pad: float) -> None:
    spec, src = case
    spec = replace(spec, letterbox=True, pad_value=pad, dtype="float32")
    got, pre = run(spec, src)
    sx, sy, ox, oy = pre.letterbox
    h, w = src.shape[:2]
    _, _, rw, rh = spec.roi or (0, 0, w, h)
    cw, ch = round(sx * rw), round(sy * rh)
    assert 0 <= ox and ox + cw <= spec.out_width and 0 <= oy and oy + ch <= spec.out_height
    assert cw == spec.out_width or ch == spec.out_height  # it fills one axis
    inner, _ = run(replace(spec, letterbox=False, out_width=cw, out_height=ch), src)
    canvas = np.empty_like(got)
    padv = (np.float32(pad) * np.float32(spec.scale) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std,
                                                                                                     np.float32)
    if spec.layout == "nchw":
        canvas[0] = got[0]  # compare the borders separately below
        canvas[0, :, oy:oy + ch, ox:ox + cw] = inner[0]
        border = np.ones(got.shape[2:], bool)
        border[oy:oy + ch, ox:ox + cw] = False
        np.testing.assert_allclose(got[0][:, border], np.broadcast_to(padv[:, None], (3, border.sum())), rtol=1e-6)
    else:
        canvas[0] = got[0]
        canvas[0, oy:oy + ch, ox:ox + cw] = inner[0]
        border = np.ones(got.shape[1:3], bool)
        border[oy:oy + ch, ox:ox + cw] = False
        np.testing.assert_allclose(got[0][border], np.broadcast_to(padv, (border.sum(), 3)), rtol=1e-6)
    np.testing.assert_array_equal(got, canvas)


def test_letterbox_geometry_maps_back_to_source() -> None:
    spec = PreprocessSpec(src_format="bgr", out_width=640, out_height=640, roi=(100, 50, 1600, 900),
                          resize="bilinear", color="rgb", layout="nchw", dtype="float32", letterbox=True,
                          pad_value=114)
    pre = Preprocessor(spec, (1080, 1920, 3))
    sx, sy, ox, oy = pre.letterbox
    assert (sx, sy, ox, oy) == (0.4, 0.4, 0, 140)  # 1600x900 -> 640x360, centred vertically
    assert pre.to_source(0, 140) == (100, 50)
    assert pre.to_source(640, 500) == (1700, 950)
    plain = Preprocessor(replace(spec, letterbox=False), (1080, 1920, 3))
    assert plain.letterbox == (0.4, 640 / 900, 0, 0)


def test_uint8_and_letterbox_allocate_nothing() -> None:
    spec = PreprocessSpec(src_format="bgr", out_width=320, out_height=320, resize="bilinear", color="rgb", scale=1.0,
                          layout="nhwc", dtype="uint8", letterbox=True, pad_value=114)
    pre = Preprocessor(spec, (480, 640, 3))
    pre.warmup()
    src = frame(np.random.default_rng(9), 480, 640, 16, "noise")
    kept, peak = allocations(pre, src, np.empty(pre.out_shape, pre.out_dtype))
    assert kept < 10 * 1024 and peak < 10 * 1024, (kept, peak)
    assert len(pre._kernel.signatures) == 1


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_letterbox_on_nv12_matches_reference(dtype: str) -> None:
    rng = np.random.default_rng(10)
    src = rng.integers(0, 256, (72, 64), dtype=np.uint8)  # NV12 64x48
    spec = PreprocessSpec(src_format="nv12", out_width=40, out_height=40, resize="area", color="rgb", scale=1.0,
                          layout="nchw", dtype=dtype, letterbox=True, pad_value=114)
    got, _ = run(spec, src)
    want = reference_preprocess(spec, src)
    assert np.abs(got.astype(np.float64) - want.astype(np.float64)).max() <= 2.0 + 1


def test_new_keys_round_trip_and_are_omitted_at_their_defaults() -> None:
    spec = PreprocessSpec(src_format="nv12", out_width=8, out_height=8, resize="area", color="rgb", layout="nchw",
                          dtype="uint8", yuv_matrix="bt709", yuv_range="full", letterbox=True, pad_value=114)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    plain = replace(spec, yuv_matrix="bt601", yuv_range="limited", letterbox=False, pad_value=0.0)
    assert not {"yuv_matrix", "yuv_range", "letterbox", "pad_value"} & set(plain.to_dict())
