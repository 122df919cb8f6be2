"""The plain OpenCV/NumPy chain a user would write for a PreprocessSpec.

It is the oracle for the fused kernel's tests and the baseline the benchmarks measure it
against, so it is deliberately the obvious code, one library call per step, allocating as it
goes. It rounds to uint8 after cv2.resize and after cv2.cvtColor (that is what those calls
do on 8-bit images); the kernel does not, hence the tolerance in kernels/preprocess.py.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from edgert.kernels.formats import yuv_to_rgb_reference
from edgert.kernels.resample import letterbox_size
from edgert.kernels.spec import PreprocessSpec

_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}
_CVT = {  # (src_format, color) -> cv2 code, None = already in that order
    ("bgr", "bgr"): None, ("bgr", "rgb"): cv2.COLOR_BGR2RGB, ("bgr", "yuv601"): cv2.COLOR_BGR2YUV,
    ("rgb", "rgb"): None, ("rgb", "bgr"): cv2.COLOR_RGB2BGR, ("rgb", "yuv601"): cv2.COLOR_RGB2YUV,
}


_DECODE = {"nv12": cv2.COLOR_YUV2RGB_NV12, "i420": cv2.COLOR_YUV2RGB_I420, "yuyv": cv2.COLOR_YUV2RGB_YUYV}


def decode_to_rgb(spec: PreprocessSpec, src: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB from a gray or YUV buffer: cv2.cvtColor where OpenCV has the
    conversion (BT.601 limited range), else the NumPy matrix of kernels/formats.py, rounded."""
    if spec.src_format == "gray":
        return cv2.cvtColor(np.ascontiguousarray(src.reshape(src.shape[0], src.shape[1])), cv2.COLOR_GRAY2RGB)
    if spec.yuv_matrix == "bt601" and spec.yuv_range == "limited":
        return cv2.cvtColor(src, _DECODE[spec.src_format])
    rgb = yuv_to_rgb_reference(spec.src_format, src, spec.yuv_matrix, spec.yuv_range)
    return np.rint(rgb).astype(np.uint8)


def reference_preprocess(spec: PreprocessSpec, src: np.ndarray) -> np.ndarray:
    """Crop, cv2.resize, cv2.cvtColor, float32 normalise, transpose: a new spec.out_shape array.

    Gray and YUV sources are first decoded to an RGB image (`decode_to_rgb`), as a user would."""
    if spec.src_format not in ("bgr", "rgb"):
        src = decode_to_rgb(spec, src)
        spec = replace(spec, src_format="rgb")
    h, w = src.shape[:2]
    x, y, rw, rh = spec.roi if spec.roi is not None else (0, 0, w, h)
    img = src[y:y + rh, x:x + rw]
    ow, oh = spec.out_width, spec.out_height
    cw, ch = letterbox_size(spec, rw, rh)
    img = cv2.resize(img, (cw, ch), interpolation=_INTERP[spec.resize])
    code = _CVT[(spec.src_format, spec.color)]
    if code is not None:
        img = cv2.cvtColor(img, code)
    if (cw, ch) != (ow, oh):  # letterbox: paste into a canvas of pad_value
        canvas = np.full((oh, ow, 3), spec.pad_value, np.float32)
        x0, y0 = (ow - cw) // 2, (oh - ch) // 2
        canvas[y0:y0 + ch, x0:x0 + cw] = img
        img = canvas
    img = img.astype(np.float32) * np.float32(spec.scale)
    img = (img - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "nchw":
        img = img.transpose(2, 0, 1)
    img = np.ascontiguousarray(img[None])
    if spec.dtype == "uint8":
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img.astype(spec.dtype)

