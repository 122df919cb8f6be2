"""What a model wants its input to look like: the `[preprocess]` table of a model manifest.

One frozen value object shared by the manifest loader, the fused kernel and the OpenCV
reference, so the three can never disagree about what a key means. It is validated when
built (a bad manifest fails at load time with the key, the value and what is allowed, never
on the first frame) and converts to and from the TOML table.

Meaning of the fields (the kernel and `reference_preprocess` both implement exactly this):
    src_format  "bgr" | "rgb" (H, W, 3); "gray" (H, W) or (H, W, 1); "nv12" | "i420" (planar
           YUV 4:2:0 as one (H * 3 / 2, W) array, OpenCV's layout); "yuyv" (H, W, 2). Gray and
           YUV sources are decoded to RGB first (kernels/formats.py), then treated as "rgb"
    yuv_matrix "bt601" | "bt709", yuv_range "limited" (Y 16-235, C 16-240) | "full": how a
           YUV source decodes to RGB; ignored for bgr/rgb/gray sources
    crop   roi = (x, y, w, h) in source pixels, None = full frame
    resize to out_width x out_height; "area" = cv2.INTER_AREA, "bilinear" = cv2.INTER_LINEAR
           (the ROI's edges are the image's edges: border pixels are replicated)
    colour "rgb" | "bgr" | "yuv601" = cv2.COLOR_RGB2YUV / COLOR_BGR2YUV on 8-bit values:
           Y = .299R + .587G + .114B, U = .492(B - Y) + 128, V = .877(R - Y) + 128,
           saturated to [0, 255] as OpenCV does
    letterbox  false: stretch the ROI to out_width x out_height; true: keep its aspect, resize
           it to (round(rw * s), round(rh * s)) with s = min(out_w / rw, out_h / rh), centred
           (offset = floor of half the slack), the rest filled with pad_value (an 8-bit value
           in the output colour space, normalised like a pixel); see Preprocessor.letterbox
    norm   out = (converted * scale - mean[c]) / std[c], computed in float32
    layout "nchw" -> (1, 3, H, W), "nhwc" -> (1, H, W, 3); dtype "float32" | "float16" |
           "uint8" (saturated to [0, 255], rounded half to even, after normalisation)
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np

SRC_FORMATS = ("bgr", "rgb", "gray", "nv12", "i420", "yuyv")
YUV_FORMATS = ("nv12", "i420", "yuyv")
YUV_MATRICES = ("bt601", "bt709")
YUV_RANGES = ("limited", "full")
RESIZES = ("area", "bilinear")
COLORS = ("rgb", "bgr", "yuv601")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "uint8")

_WHERE = "preprocess"
_OMIT_AT_DEFAULT = ("yuv_matrix", "yuv_range", "letterbox", "pad_value")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{_WHERE}.{key}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{_WHERE}.{key}: {value!r} is not an integer")
    if value < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{_WHERE}.{key}: {value!r} must be {what}")
    return int(value)


def _float(key: str, value: Any, nonzero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{_WHERE}.{key}: {value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{_WHERE}.{key}: {value!r} must be finite")
    if nonzero and v == 0.0:
        raise ValueError(f"{_WHERE}.{key}: {value!r} must be non-zero (it divides)")
    return v


def _triple(key: str, value: Any, nonzero: bool) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"{_WHERE}.{key}: {value!r} must be 3 numbers, one per output channel")
    return tuple(_float(f"{key}[{i}]", v, nonzero) for i, v in enumerate(value))  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """The preprocessing a model expects; see the module docstring for each field's meaning."""

    src_format: str
    out_width: int
    out_height: int
    roi: tuple[int, int, int, int] | None = None
    resize: str
    color: str
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str
    dtype: str
    yuv_matrix: str = "bt601"
    yuv_range: str = "limited"
    letterbox: bool = False
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        _one_of("src_format", self.src_format, SRC_FORMATS)
        _one_of("yuv_matrix", self.yuv_matrix, YUV_MATRICES)
        _one_of("yuv_range", self.yuv_range, YUV_RANGES)
        if not isinstance(self.letterbox, (bool, np.bool_)):
            raise ValueError(f"{_WHERE}.letterbox: {self.letterbox!r} must be true or false")
        object.__setattr__(self, "letterbox", bool(self.letterbox))
        pad = _float("pad_value", self.pad_value)
        if not 0.0 <= pad <= 255.0:
            raise ValueError(f"{_WHERE}.pad_value: {self.pad_value!r} must be in [0, 255] (an 8-bit value in the "
                             "output colour space, before scale/mean/std)")
        object.__setattr__(self, "pad_value", pad)
        object.__setattr__(self, "out_width", _int("out_width", self.out_width, 1))
        object.__setattr__(self, "out_height", _int("out_height", self.out_height, 1))
        if self.roi is not None:
            r = self.roi
            if isinstance(r, (str, bytes)) or not hasattr(r, "__len__") or len(r) != 4:
                raise ValueError(f"{_WHERE}.roi: {r!r} must be [x, y, w, h] in source pixels "
                                 "(omit it for the full frame)")
            roi = (_int("roi.x", r[0], 0), _int("roi.y", r[1], 0), _int("roi.w", r[2], 1), _int("roi.h", r[3], 1))
            object.__setattr__(self, "roi", roi)
        _one_of("resize", self.resize, RESIZES)
        _one_of("color", self.color, COLORS)
        object.__setattr__(self, "scale", _float("scale", self.scale, nonzero=True))
        object.__setattr__(self, "mean", _triple("mean", self.mean, nonzero=False))
        object.__setattr__(self, "std", _triple("std", self.std, nonzero=True))
        _one_of("layout", self.layout, LAYOUTS)
        _one_of("dtype", self.dtype, DTYPES)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """The model input's shape, batch of one."""
        h, w = self.out_height, self.out_width
        return (1, 3, h, w) if self.layout == "nchw" else (1, h, w, 3)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Build from a manifest's `[preprocess]` table; unknown or missing keys are errors.

        Typos must fail loudly: a silently ignored `std` would feed the model wrong inputs.
        """
        if not isinstance(d, dict):
            raise ValueError(f"{_WHERE}: expected a table, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                near = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"{_WHERE}: unknown key {key!r}{hint}; allowed: {', '.join(names)}")
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{_WHERE}: missing key {missing[0]!r}; required: {', '.join(required)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The TOML table (TOML has no null, so a full-frame spec has no `roi` key). Keys added
        after the first manifests shipped are left out at their defaults, so a manifest written
        from an old spec reads exactly as before."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name in _OMIT_AT_DEFAULT and v == f.default):
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
