"""The plain OpenCV/NumPy chain a user would write for a PreprocessSpec.

It is the oracle for the fused kernel's tests and the baseline the benchmarks measure it
against, so it is deliberately the obvious code, one library call per step, allocating as it
goes. It rounds to uint8 after cv2.resize and after cv2.cvtColor (that is what those calls
do on 8-bit images); the kernel does not, hence the tolerance in kernels/preprocess.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from kernels.spec import PreprocessSpec

_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}
_CVT = {  # (src_format, color) -> cv2 code, None = already in that order
    ("bgr", "bgr"): None, ("bgr", "rgb"): cv2.COLOR_BGR2RGB, ("bgr", "yuv601"): cv2.COLOR_BGR2YUV,
    ("rgb", "rgb"): None, ("rgb", "bgr"): cv2.COLOR_RGB2BGR, ("rgb", "yuv601"): cv2.COLOR_RGB2YUV,
}


def reference_preprocess(spec: PreprocessSpec, src: np.ndarray) -> np.ndarray:
    """Crop, cv2.resize, cv2.cvtColor, float32 normalise, transpose: a new spec.out_shape array."""
    h, w = src.shape[:2]
    x, y, rw, rh = spec.roi if spec.roi is not None else (0, 0, w, h)
    img = src[y:y + rh, x:x + rw]
    img = cv2.resize(img, (spec.out_width, spec.out_height), interpolation=_INTERP[spec.resize])
    code = _CVT[(spec.src_format, spec.color)]
    if code is not None:
        img = cv2.cvtColor(img, code)
    img = img.astype(np.float32) * np.float32(spec.scale)
    img = (img - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "nchw":
        img = img.transpose(2, 0, 1)
    return np.ascontiguousarray(img[None]).astype(spec.dtype)
