"""kernels/: the fused preprocessing kernel against OpenCV, its spec, its errors, its allocations.

Tolerances (see kernels/preprocess.py for the derivation), in 8-bit steps before normalisation:
  - against the float chain (cv2.resize on float32 + the documented colour formula):
    FLOAT_STEPS = 0.05, i.e. float32 rounding only: any wrong tap, phase or coefficient
    shows up as a whole step or more on noise images;
  - against `reference_preprocess` (the 8-bit cv2 chain, which rounds after resize and after
    cvtColor): TOLERANCE_STEPS = 1.0 for rgb/bgr, 2.0 for yuv601;
  - float16 output adds one float16 ulp of the value; float16 vs float32 output of the
    kernel itself must be bit-identical to NumPy's astype.
"""

from __future__ import annotations

import sys
import tracemalloc

import cv2
import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgert.kernels import Preprocessor, PreprocessSpec, reference_preprocess
from edgert.kernels.preprocess import _half_bits
from edgert.kernels.resample import compact_columns, tap_tables, trim_taps, window_starts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOLERANCE_STEPS = {"rgb": 1.0, "bgr": 1.0, "yuv601": 2.0}
FLOAT_STEPS = 0.05

PILOTNET = PreprocessSpec(src_format="bgr", out_width=200, out_height=66, roi=(0, 460, 1920, 620), resize="area",
                          color="yuv601", scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                          layout="nchw", dtype="float32")
SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers --------------------------------------------------------------------------------


def frame(rng: np.random.Generator, h: int, w: int, pad: int, kind: str) -> np.ndarray:
    """A uint8 HxWx3 frame; pad > 0 gives a row-padded view (row stride w*3 + pad), as a slot view is."""
    base = np.full((h, w * 3 + pad), 0xA5, np.uint8)  # padding bytes are garbage the kernel must not use
    img = base[:, : w * 3].reshape(h, w, 3)
    if kind == "noise":
        img[...] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:  # saturated colours: drives YUV's V past 255 and below 0, where OpenCV saturates
        img[...] = rng.choice(np.array([0, 255], np.uint8), (h, w, 3))
    return img


def run(spec: PreprocessSpec, src: np.ndarray, **kw: int) -> np.ndarray:
    pre = Preprocessor(spec, src.shape, **kw)
    out = np.full(pre.out_shape, np.nan, pre.out_dtype)
    pre(src, out)
    return out


def steps_to_out(spec: PreprocessSpec, steps: float) -> float:
    return steps * spec.scale / min(abs(s) for s in spec.std)


def assert_close(spec: PreprocessSpec, got: np.ndarray, want: np.ndarray, steps: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    g, w = got.astype(np.float64), want.astype(np.float64)
    tol = steps_to_out(spec, steps) + 1e-5 * np.abs(w)
    if spec.dtype == "float16":
        tol = tol + np.spacing(np.abs(want)).astype(np.float64)
    err = np.abs(g - w)
    assert np.all(np.isfinite(g)), "kernel left unwritten (NaN) or non-finite outputs"
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (f"max error {err.max() / steps_to_out(spec, 1):.3f} steps at {worst} "
                                f"(got {g[worst]}, want {w[worst]}), allowed {steps} steps; {spec}")


def float_chain(spec: PreprocessSpec, src: np.ndarray) -> np.ndarray:
    """The spec computed without any 8-bit rounding: the kernel should match it to float32 precision."""
    h, w = src.shape[:2]
    x, y, rw, rh = spec.roi or (0, 0, w, h)
    img = src[y:y + rh, x:x + rw].astype(np.float32)
    interp = cv2.INTER_AREA if spec.resize == "area" else cv2.INTER_LINEAR
    img = cv2.resize(img, (spec.out_width, spec.out_height), interpolation=interp).astype(np.float64)
    img = img.reshape(spec.out_height, spec.out_width, 3)
    c0, c1, c2 = img[..., 0], img[..., 1], img[..., 2]
    r, g, b = (c2, c1, c0) if spec.src_format == "bgr" else (c0, c1, c2)
    if spec.color == "rgb":
        conv = [r, g, b]
    elif spec.color == "bgr":
        conv = [b, g, r]
    else:  # documented cv2.COLOR_RGB2YUV, saturated like the 8-bit conversion
        yy = 0.299 * r + 0.587 * g + 0.114 * b
        conv = [yy, np.clip(0.492 * (b - yy) + 128, 0, 255), np.clip(0.877 * (r - yy) + 128, 0, 255)]
    out = (np.stack(conv, -1) * spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)
    if spec.layout == "nchw":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out[None]).astype(np.float32)


@st.composite
def cases(draw: st.DrawFn, max_src: int = 90, max_out: int = 70) -> tuple[PreprocessSpec, np.ndarray]:
    h = draw(st.integers(1, max_src))
    w = draw(st.integers(1, max_src + 40))
    if draw(st.booleans()):
        roi = None
        rw, rh = w, h
    else:  # biased towards ROIs that touch the frame's edges
        x = draw(st.one_of(st.just(0), st.integers(0, w - 1)))
        y = draw(st.one_of(st.just(0), st.integers(0, h - 1)))
        rw = draw(st.one_of(st.just(w - x), st.integers(1, w - x)))
        rh = draw(st.one_of(st.just(h - y), st.integers(1, h - y)))
        roi = (x, y, rw, rh)
    # up- and downscale, including large decimation factors and 1-pixel outputs
    ow = draw(st.one_of(st.integers(1, max_out), st.integers(1, max(1, rw // 7))))
    oh = draw(st.one_of(st.integers(1, max_out), st.integers(1, max(1, rh // 7))))
    std = draw(st.tuples(*[st.sampled_from([0.25, 0.5, 1.0, -0.7, 2.0, 0.229])] * 3))
    spec = PreprocessSpec(
        src_format=draw(st.sampled_from(["bgr", "rgb"])), out_width=ow, out_height=oh, roi=roi,
        resize=draw(st.sampled_from(["area", "bilinear"])), color=draw(st.sampled_from(["rgb", "bgr", "yuv601"])),
        scale=draw(st.sampled_from([1 / 255, 1.0, 2 / 255])),
        mean=draw(st.tuples(*[st.sampled_from([0.0, 0.5, 0.485, -0.3])] * 3)), std=std,
        layout=draw(st.sampled_from(["nchw", "nhwc"])), dtype=draw(st.sampled_from(["float32", "float16"])))
    pad = draw(st.sampled_from([0, 0, 1, 5, 64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return spec, frame(rng, h, w, pad, draw(st.sampled_from(["noise", "noise", "saturated"])))


# --- the kernel against OpenCV ----------------------------------------------------------------


@SETTINGS
@given(cases())
def test_matches_reference_within_8bit_rounding(case: tuple[PreprocessSpec, np.ndarray]) -> None:
    spec, src = case
    assert_close(spec, run(spec, src), reference_preprocess(spec, src), TOLERANCE_STEPS[spec.color])


@SETTINGS
@given(cases())
def test_matches_float_chain_to_float_precision(case: tuple[PreprocessSpec, np.ndarray]) -> None:
    spec, src = case
    spec = PreprocessSpec(**{**spec.to_dict(), "dtype": "float32", "roi": spec.roi})
    assert_close(spec, run(spec, src), float_chain(spec, src), FLOAT_STEPS)


def test_pilotnet_default_matches_reference() -> None:
    rng = np.random.default_rng(7)
    for pad in (0, 128):
        src = frame(rng, 1080, 1920, pad, "noise")
        assert_close(PILOTNET, run(PILOTNET, src), reference_preprocess(PILOTNET, src), TOLERANCE_STEPS["yuv601"])
        assert_close(PILOTNET, run(PILOTNET, src), float_chain(PILOTNET, src), FLOAT_STEPS)


@settings(max_examples=60, deadline=None)
@given(cases(max_src=40, max_out=30), st.floats(-9, 6), st.booleans())
def test_float16_is_numpy_rounding_of_float32(case: tuple[PreprocessSpec, np.ndarray], log_scale: float,
                                               zero_mean: bool) -> None:
    """Bit-identical to astype(float16), over magnitudes from float16 subnormals to overflow."""
    spec, src = case
    d = {**spec.to_dict(), "roi": spec.roi, "scale": 10.0 ** log_scale}
    if zero_mean:
        d["mean"] = (0.0, 0.0, 0.0)
    s32 = PreprocessSpec(**{**d, "dtype": "float32"})
    s16 = PreprocessSpec(**{**d, "dtype": "float16"})
    with np.errstate(over="ignore"):
        want = run(s32, src).astype(np.float16)
    np.testing.assert_array_equal(run(s16, src).view(np.uint16), want.view(np.uint16))


def test_half_bits_matches_numpy() -> None:
    @numba.njit
    def convert(a: np.ndarray, o: np.ndarray) -> None:
        for i in range(a.size):
            o[i] = _half_bits(a[i])

    rng = np.random.default_rng(0)
    special = np.array([0, 0x80000000, 1, 0x33000000, 0x33000001, 0x337FFFFF, 0x387FFFFF, 0x38800000, 0x38FFFFFF,
                        0x3F800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x47800000, 0x7F7FFFFF, 0x7F800000],
                       np.uint32)
    dense = np.arange(0x32800000, 0x47900000, 61, dtype=np.uint32)  # every float16 regime, ties included
    bits = np.concatenate([special, dense, rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)])
    bits = np.concatenate([bits, bits | np.uint32(0x80000000)])
    f = bits.view(np.float32)
    got = np.empty(f.size, np.uint16)
    convert(f, got)
    with np.errstate(over="ignore", invalid="ignore"):
        want = f.astype(np.float16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(got[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()


def test_layouts_are_transposes_and_batchless_out_is_accepted() -> None:
    rng = np.random.default_rng(1)
    src = frame(rng, 37, 51, 3, "noise")
    d = {**PILOTNET.to_dict(), "out_width": 23, "out_height": 9}
    del d["roi"]
    chw = run(PreprocessSpec(**d), src)
    pre = Preprocessor(PreprocessSpec(**{**d, "layout": "nhwc"}), src.shape)
    hwc = np.empty(pre.out_shape[1:], np.float32)  # (H, W, 3): no batch axis
    pre(src, hwc)
    np.testing.assert_array_equal(chw[0].transpose(1, 2, 0), hwc)


def test_parallel_kernel_is_identical_to_serial() -> None:
    rng = np.random.default_rng(2)
    src = frame(rng, 300, 410, 17, "noise")
    spec = PreprocessSpec(**{**PILOTNET.to_dict(), "roi": (5, 40, 400, 250), "out_width": 97, "out_height": 31})
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for n in (2, 3, 31, 64):  # more chunks than threads and than rows are fine
            np.testing.assert_array_equal(run(spec, src, threads=n), run(spec, src))
    finally:
        numba.set_num_threads(before)


def test_source_views_and_readonly_frames_use_one_compiled_kernel() -> None:
    rng = np.random.default_rng(3)
    pre = Preprocessor(PILOTNET, (1080, 1920, 3))
    pre.warmup()
    out = np.empty(pre.out_shape, np.float32)
    ro = frame(rng, 1080, 1920, 0, "noise")
    ro.flags.writeable = False
    for src in (frame(rng, 1080, 1920, 0, "noise"), frame(rng, 1080, 1920, 96, "noise"), ro):
        pre(src, out)
        assert_close(PILOTNET, out, reference_preprocess(PILOTNET, src), TOLERANCE_STEPS["yuv601"])
    assert len(pre._kernel.signatures) == 1  # nothing was compiled for a frame


# --- resampling tables against cv2.resize ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 120), st.integers(1, 120), st.integers(1, 120), st.integers(1, 120),
       st.sampled_from(["area", "bilinear"]), st.integers(0, 2**32 - 1))
def test_tap_tables_reproduce_cv2_resize_on_float(sw: int, sh: int, dw: int, dh: int, mode: str, seed: int) -> None:
    img = np.random.default_rng(seed).random((sh, sw), np.float32) * 255
    (xi, xw), (yi, yw) = tap_tables(mode, sw, sh, dw, dh)
    assert xi.dtype == np.int32 and xw.dtype == np.float32 and xi.shape == xw.shape and xi.shape[0] == dw
    assert 0 <= xi.min() and xi.max() < sw and 0 <= yi.min() and yi.max() < sh
    np.testing.assert_allclose(xw.sum(1), 1.0, atol=2e-3)  # OpenCV drops area slivers < 1e-3
    window_starts(xi, xw), window_starts(yi, yw)  # consecutive windows, or it raises
    got = ((img[yi] * yw[:, :, None]).sum(1)[:, xi] * xw[None]).sum(2)
    want = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA if mode == "area" else cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, want.reshape(dh, dw), atol=0.05)


# --- the spec -----------------------------------------------------------------------------------


def test_spec_round_trips_through_toml_table() -> None:
    table = tomllib.loads("""
        src_format = "bgr"
        out_width = 200
        out_height = 66
        roi = [0, 460, 1920, 620]
        resize = "area"
        color = "yuv601"
        scale = 0.00392156862745098
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        layout = "nchw"
        dtype = "float32"
    """)
    spec = PreprocessSpec.from_dict(table)
    assert spec == PILOTNET and spec.out_shape == (1, 3, 66, 200)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    minimal = {"src_format": "rgb", "out_width": 8, "out_height": 4, "resize": "bilinear", "color": "rgb",
               "layout": "nhwc", "dtype": "float16"}
    s = PreprocessSpec.from_dict(minimal)
    assert s.roi is None and s.scale == 1 / 255 and s.mean == (0, 0, 0) and s.std == (1, 1, 1)
    assert "roi" not in s.to_dict() and PreprocessSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("change, message", [
    ({"resize": "cubic"}, "preprocess.resize: 'cubic' is not one of 'area', 'bilinear'"),
    ({"color": "hsv"}, "preprocess.color: 'hsv' is not one of 'rgb', 'bgr', 'yuv601'"),
    ({"layout": "chw"}, "preprocess.layout: 'chw' is not one of 'nchw', 'nhwc'"),
    ({"dtype": "int8"}, "preprocess.dtype: 'int8' is not one of 'float32', 'float16', 'uint8'"),
    ({"src_format": "hevc"}, ("preprocess.src_format: 'hevc' is not one of 'bgr', 'rgb', 'gray', 'nv12', 'i420', "
                              "'yuyv'")),
    ({"yuv_matrix": "bt2020"}, "preprocess.yuv_matrix: 'bt2020' is not one of 'bt601', 'bt709'"),
    ({"yuv_range": "tv"}, "preprocess.yuv_range: 'tv' is not one of 'limited', 'full'"),
    ({"std": [0.25, 0, 0.25]}, "preprocess.std[1]: 0 must be non-zero"),
    ({"std": [0.25, 0.25]}, "preprocess.std: [0.25, 0.25] must be 3 numbers"),
    ({"out_width": 0}, "preprocess.out_width: 0 must be positive"),
    ({"out_height": -66}, "preprocess.out_height: -66 must be positive"),
    ({"out_width": 200.0}, "preprocess.out_width: 200.0 is not an integer"),
    ({"out_width": True}, "preprocess.out_width: True is not an integer"),
    ({"scale": 0.0}, "preprocess.scale: 0.0 must be non-zero"),
    ({"scale": float("nan")}, "preprocess.scale: nan must be finite"),
    ({"mean": ["a", 0, 0]}, "preprocess.mean[0]: 'a' is not a number"),
    ({"roi": [0, 0, 10]}, "preprocess.roi: [0, 0, 10] must be [x, y, w, h]"),
    ({"roi": [0, -1, 10, 10]}, "preprocess.roi.y: -1 must be >= 0"),
    ({"roi": [0, 0, 0, 10]}, "preprocess.roi.w: 0 must be positive"),
    ({"stdev": [1, 1, 1]}, "preprocess: unknown key 'stdev' (did you mean 'std'?); allowed: src_format,"),
    ({"letterboxing": True}, "preprocess: unknown key 'letterboxing' (did you mean 'letterbox'?); allowed:"),
    ({"letterbox": "yes"}, "preprocess.letterbox: 'yes' must be true or false"),
    ({"pad_value": 300}, "preprocess.pad_value: 300 must be in [0, 255]"),
])
def test_bad_spec_names_key_value_and_allowed(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as e:
        PreprocessSpec.from_dict({**PILOTNET.to_dict(), **change})
    assert message in str(e.value)


def test_missing_key_and_non_table() -> None:
    d = PILOTNET.to_dict()
    del d["layout"]
    with pytest.raises(ValueError, match="preprocess: missing key 'layout'; required: src_format"):
        PreprocessSpec.from_dict(d)
    with pytest.raises(ValueError, match="preprocess: expected a table"):
        PreprocessSpec.from_dict([("layout", "nchw")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preprocess.std"):  # validated on direct construction too
        PreprocessSpec(**{**d, "layout": "nchw", "std": (1, 0, 1)})


# --- buffer checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    p = Preprocessor(PILOTNET, (1080, 1920, 3))
    p.warmup()
    return p


@pytest.mark.parametrize("src, message", [
    (np.zeros((1080, 1920, 4), np.uint8), "src: expected a uint8 array of shape (1080, 1920, 3)"),
    (np.zeros((720, 1280, 3), np.uint8), "got (720, 1280, 3) uint8; build the Preprocessor for this camera"),
    (np.zeros((1080, 1920, 3), np.float32), "got (1080, 1920, 3) float32"),
    (np.zeros((1080, 3840, 3), np.uint8)[:, ::2], "src: strides (11520, 6, 1) unsupported"),
    (np.zeros((1080, 1920, 3), np.uint8)[::-1], "src: strides (-5760, 3, 1) unsupported"),
    (np.zeros((3, 1080, 1920), np.uint8).transpose(1, 2, 0), "src: strides (1920, 1, 2073600) unsupported"),
    ([[0]], "src: expected a uint8 array of shape (1080, 1920, 3) (H, W, 3), got list"),
])
def test_bad_source_is_rejected(pre: Preprocessor, src: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError) as e:
        pre(src, np.empty(pre.out_shape, np.float32))
    assert message in str(e.value)


@pytest.mark.parametrize("out, message", [
    (np.empty((1, 66, 200, 3), np.float32), "out: expected a float32 array of shape (1, 3, 66, 200) or (3, 66, 200), "
                                            "got (1, 66, 200, 3) float32; allocate it as np.empty(pre.out_shape"),
    (np.empty((1, 3, 66, 200), np.float16), "got (1, 3, 66, 200) float16"),
    (np.empty((1, 3, 66, 400), np.float32)[..., ::2], "out: must be C-contiguous, writeable and aligned"),
    (np.empty((3, 66, 200), np.float32, order="F"), "out: must be C-contiguous"),
    (np.frombuffer(bytes(4 * 3 * 66 * 200), np.float32).reshape(1, 3, 66, 200), "writeable"),
    (np.frombuffer(bytearray(4 * 3 * 66 * 200 + 1), np.float32, 3 * 66 * 200, 1).reshape(3, 66, 200), "aligned"),
])
def test_bad_output_is_rejected(pre: Preprocessor, out: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError) as e:
        pre(np.zeros((1080, 1920, 3), np.uint8), out)
    assert message in str(e.value)


def test_roi_outside_frame_and_bad_source_shape_are_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"preprocess.roi: \(x=0, y=460, w=1920, h=620\) reaches column 1920 and "
                                         r"row 1080, outside the 1280x720 frame"):
        Preprocessor(PILOTNET, (720, 1280, 3))
    with pytest.raises(ValueError, match=r"src_shape: 'bgr' frames have 3 channels, got 4 in \(1080, 1920, 4\)"):
        Preprocessor(PILOTNET, (1080, 1920, 4))
    with pytest.raises(ValueError, match=r"src_shape: expected \(height, width, 3\) positive integers"):
        Preprocessor(PILOTNET, (1080, 1920))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads: expected an integer >= 1, got 0"):
        Preprocessor(PILOTNET, (1080, 1920, 3), threads=0)


# --- no allocation per frame --------------------------------------------------------------------


def allocations(pre: Preprocessor, src: object, out: np.ndarray, calls: int = 50) -> tuple[int, int]:
    """(bytes kept, bytes peak) over `calls` calls after warm-up, as tracemalloc sees them."""
    for _ in range(3):
        pre(src, out)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            pre(src, out)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


@pytest.mark.parametrize("dtype, layout, pad", [("float32", "nchw", 0), ("float16", "nhwc", 64)])
def test_hundred_calls_allocate_nothing(dtype: str, layout: str, pad: int) -> None:
    spec = PreprocessSpec(**{**PILOTNET.to_dict(), "dtype": dtype, "layout": layout})
    pre = Preprocessor(spec, (1080, 1920, 3))
    pre.warmup()
    src = frame(np.random.default_rng(4), 1080, 1920, pad, "noise")
    kept, peak = allocations(pre, src, np.empty(pre.out_shape, pre.out_dtype), calls=100)
    assert kept < 10 * 1024, f"{kept} bytes kept over 100 calls"
    assert peak < 10 * 1024, f"{peak} bytes allocated transiently by one call"


def test_trimmed_and_compacted_tables_keep_only_weighted_taps() -> None:
    """1920 -> 640 bilinear is an integral 3:1 pick under the half-pixel convention: cv2's table
    pads each row with a zero-weight tap, which trim_taps drops; compact_columns keeps 1 column in 3."""
    (xi, xw), _ = tap_tables("bilinear", 1920, 1080, 640, 384)
    assert xw.shape == (640, 2) and np.all(xw[:, 1] == 0)
    first, span, start, tw = trim_taps(xi, xw)
    assert tw.shape == (640, 1) and np.all(tw == 1) and first == 1 and span == 1918
    np.testing.assert_array_equal(start, 3 * np.arange(640))
    cols, cstart, cw = compact_columns(xi, xw)
    np.testing.assert_array_equal(cols, 3 * np.arange(640) + 1)
    np.testing.assert_array_equal(cstart, np.arange(640))
    # a general table keeps its weights and order, and every weighted tap is still addressed
    for mode, n_src, n_dst in (("area", 1920, 200), ("bilinear", 37, 90), ("area", 50, 7)):
        (xi, xw), _ = tap_tables(mode, n_src, 10, n_dst, 10)
        first, span, start, tw = trim_taps(xi, xw)
        cols, cstart, cw = compact_columns(xi, xw)
        np.testing.assert_array_equal(tw, cw)
        for i in range(n_dst):
            k = np.flatnonzero(xw[i])
            np.testing.assert_array_equal(first + start[i] + np.arange(k.size), xi[i, k])
            np.testing.assert_array_equal(cols[cstart[i] + np.arange(k.size)], xi[i, k])
            np.testing.assert_array_equal(tw[i, : k.size], xw[i, k])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 3]), st.integers(1, 70), st.integers(1, 40), st.integers(0, 9), st.integers(0, 3),
       st.sampled_from(["rgb", "bgr", "yuv601"]), st.sampled_from([("float32", "nchw"), ("float32", "nhwc"),
                                                                   ("float16", "nchw"), ("uint8", "nhwc")]),
       st.booleans(), st.sampled_from([0, 7]), st.integers(0, 2**32 - 1))
def test_constant_step_pick_is_bit_identical_to_the_general_path(step: int, ow: int, oh: int, x: int, extra: int,
                                                                color: str, out: tuple[str, str], letterbox: bool,
                                                                pad: int, seed: int) -> None:
    """1920 -> 640 (step 3) and an unscaled width (step 1) take kernels/simd.py's SIMD block path;
    it must give the general path's bits, for every colour, dtype, layout, the letterbox offset,
    ROIs ending at the frame's right edge (extra = 0: the last blocks run out of row) and padded rows."""
    rw, rh = step * ow, 2 * oh + 3
    src = frame(np.random.default_rng(seed), rh + 2, x + rw + extra, pad, "noise")
    dtype, layout = out
    spec = PreprocessSpec(src_format="bgr", out_width=ow + (6 if letterbox else 0), out_height=oh,
                          roi=(x, 1, rw, rh), resize="bilinear", letterbox=letterbox, color=color,
                          scale=1 / 255 if dtype != "uint8" else 1.0,
                          mean=(0.485, 0.456, 0.406) if dtype != "uint8" else (0.0, 0.0, 0.0),
                          std=(0.229, 0.224, 0.225) if dtype != "uint8" else (1.0, 1.0, 1.0), layout=layout,
                          dtype=dtype)
    fast = Preprocessor(spec, src.shape)
    general = Preprocessor(spec, src.shape)
    assert fast._pick == (step if ow > 1 else 1) or letterbox  # a letterboxed fit may not be an exact step
    general._pick = 0
    got, want = np.empty(fast.out_shape, fast.out_dtype), np.empty(fast.out_shape, fast.out_dtype)
    fast(src, got)
    general(src, want)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_1080p_to_640_takes_the_pick_path_and_matches_the_float_chain() -> None:
    spec = PreprocessSpec(src_format="bgr", out_width=640, out_height=384, resize="bilinear", color="rgb",
                          scale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3, layout="nchw", dtype="float32")
    src = frame(np.random.default_rng(5), 1080, 1920, 0, "noise")
    pre = Preprocessor(spec, src.shape)
    assert pre._pick == 3
    general = Preprocessor(spec, src.shape)
    general._pick = 0
    got, want = run(spec, src), np.empty(general.out_shape, np.float32)
    general(src, want)
    np.testing.assert_array_equal(got, want)
    assert_close(spec, got, float_chain(spec, src), FLOAT_STEPS)
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        np.testing.assert_array_equal(run(spec, src, threads=2), got)
    finally:
        numba.set_num_threads(before)
    for s in (spec, PreprocessSpec(**{**spec.to_dict(), "dtype": "uint8", "layout": "nhwc", "scale": 1.0,
                                      "mean": [0.0] * 3, "std": [1.0] * 3})):  # into the planes / through pix
        p = Preprocessor(s, src.shape)
        kept, peak = allocations(p, src, np.empty(p.out_shape, p.out_dtype), calls=50)
        assert kept < 10 * 1024 and peak < 10 * 1024, (kept, peak)
