"""Source formats: how a camera buffer's shape maps to a frame size, and how YUV decodes to RGB.

Buffers are read where they lie (a frame-pool slot, a V4L2 buffer): rows may be padded (a row
pitch larger than the row), so every format is described by an array whose last axes are
packed and whose row stride is free:
    bgr, rgb   (H, W, 3)        strides (pitch, 3, 1)
    gray       (H, W) / (H, W, 1) strides (pitch, 1[, 1])
    nv12       (H * 3 // 2, W)  strides (pitch, 1): Y rows, then H/2 rows of interleaved U, V
    i420       (H * 3 // 2, W)  strides (pitch, 1): Y rows, then the U and V planes, each H/2
               rows of W/2 bytes stored two per buffer row (OpenCV's layout for a pitched I420)
    yuyv       (H, W, 2)        strides (pitch, 2, 1): Y0 U Y1 V per two pixels (YUY2)
4:2:0 formats need even W and H, YUYV an even W (a chroma sample covers 2 pixels).
Chroma is taken from the sample covering the pixel (no chroma interpolation), as OpenCV's
cvtColor does.

YUV -> RGB (Kr, Kb of the matrix; U' = U - 128, V' = V - 128):
    full     Y' = Y,                  chroma scale 1
    limited  Y' = max(Y - 16, 0) * 255/219, chroma scale 255/224 (footroom below 16 is black,
             as in OpenCV; headroom above 235 is kept until the final saturation)
    R = Y' + 2(1-Kr) V',  B = Y' + 2(1-Kb) U',  G = Y' - (2Kb(1-Kb) U' + 2Kr(1-Kr) V') / Kg
then saturated to [0, 255]. BT.601 limited is what cv2.COLOR_YUV2RGB_NV12/_I420/_YUYV do.
"""

from __future__ import annotations

import numpy as np

from edgert.kernels.spec import PreprocessSpec

LAYOUT_OF = {"bgr": "(H, W, 3)", "rgb": "(H, W, 3)", "gray": "(H, W) or (H, W, 1)", "nv12": "(H * 3 // 2, W)",
             "i420": "(H * 3 // 2, W)", "yuyv": "(H, W, 2)"}  # for error messages
FORMAT_CODE = {"gray": 0, "nv12": 1, "i420": 2, "yuyv": 3}  # the YUV kernel's format switch
_K = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def yuv_coefficients(matrix: str, rng: str) -> np.ndarray:
    """float32 [7]: (y_offset, y_scale, r_v, g_u, g_v, b_u, unused) for the decode above."""
    kr, kb = _K[matrix]
    kg = 1.0 - kr - kb
    yoff, ys, cs = (16.0, 255.0 / 219.0, 255.0 / 224.0) if rng == "limited" else (0.0, 1.0, 1.0)
    return np.array([yoff, ys, 2 * (1 - kr) * cs, -2 * kb * (1 - kb) / kg * cs, -2 * kr * (1 - kr) / kg * cs,
                     2 * (1 - kb) * cs, 0.0], np.float32)


def frame_size(spec: PreprocessSpec, src_shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of the picture in a buffer of `src_shape`; ValueError says what to fix."""
    fmt = spec.src_format
    shape = tuple(src_shape)
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"src_shape: expected positive integers, got {src_shape!r}")
    want = {"bgr": "(height, width, 3)", "rgb": "(height, width, 3)", "gray": "(height, width) or (height, width, 1)",
            "nv12": "(height * 3 // 2, width)", "i420": "(height * 3 // 2, width)", "yuyv": "(height, width, 2)"}[fmt]
    if fmt in ("bgr", "rgb"):
        if len(shape) != 3:
            raise ValueError(f"src_shape: expected {want} positive integers, got {src_shape!r}")
        if shape[2] != 3:
            raise ValueError(f"src_shape: {fmt!r} frames have 3 channels, got {shape[2]} in {shape}; "
                             "convert the camera to BGR/RGB or fix preprocess.src_format")
        return int(shape[0]), int(shape[1])
    if fmt == "gray":
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            return int(shape[0]), int(shape[1])
        raise ValueError(f"src_shape: 'gray' frames are {want}, got {shape}; fix preprocess.src_format or the camera")
    if fmt == "yuyv":
        if len(shape) != 3 or shape[2] != 2:
            raise ValueError(f"src_shape: 'yuyv' frames are {want} (Y and U/V interleaved), got {shape}")
        if shape[1] % 2:
            raise ValueError(f"src_shape: 'yuyv' needs an even width (one U, V pair per 2 pixels), got {shape[1]}; "
                             "crop the camera to an even width")
        return int(shape[0]), int(shape[1])
    # nv12 / i420
    if len(shape) != 2:
        raise ValueError(f"src_shape: {fmt!r} frames are one array of {want}, got {shape}")
    rows, w = int(shape[0]), int(shape[1])
    if rows % 3 or (rows * 2 // 3) % 2 or w % 2:
        raise ValueError(f"src_shape: {fmt!r} (4:2:0) needs an even width and height, i.e. {want} with "
                         f"rows a multiple of 3 and an even height; got {shape}; crop the camera to even sizes")
    return rows * 2 // 3, w


def check_strides(fmt: str, src: np.ndarray) -> None:
    """Packed pixels, free (but not negative or overlapping) row pitch, as described above."""
    packed = {"bgr": (3, 1), "rgb": (3, 1), "yuyv": (2, 1)}.get(fmt)
    want_inner = packed if packed is not None else (1, 1)[: src.ndim - 1]
    # a dimension of size 1 has no meaningful stride (NumPy may report anything there)
    ok = all(n == 1 or st == want for n, st, want in zip(src.shape[1:], src.strides[1:], want_inner))
    row = src.shape[1] * int(np.prod(src.shape[2:], dtype=np.int64))
    if not ok or (src.shape[0] > 1 and src.strides[0] < row):
        want = f"(row, {', '.join(map(str, want_inner))})"
        raise ValueError(f"src: strides {src.strides} unsupported for {fmt!r}; pixels must be packed (strides {want} "
                         f"with row >= {row}; rows may be padded); pass a copy or a slot view")


def yuv_to_rgb_reference(fmt: str, src: np.ndarray, matrix: str = "bt601", rng: str = "limited") -> np.ndarray:
    """NumPy oracle: float64 (H, W, 3) RGB, saturated, not rounded, from a buffer in `fmt`."""
    c = yuv_coefficients(matrix, rng).astype(np.float64)
    if fmt == "gray":
        g = (src.reshape(src.shape[0], src.shape[1])).astype(np.float64)
        return np.stack([g, g, g], -1)
    if fmt == "yuyv":
        h, w = src.shape[:2]
        y = src[:, :, 0].astype(np.float64)
        u = np.repeat(src[:, 0::2, 1], 2, 1).astype(np.float64)
        v = np.repeat(src[:, 1::2, 1], 2, 1).astype(np.float64)
    else:
        h, w = src.shape[0] * 2 // 3, src.shape[1]
        y = src[:h].astype(np.float64)
        if fmt == "nv12":
            uv = src[h:]
            u, v = uv[:, 0::2], uv[:, 1::2]
        else:  # i420: chroma rows of w/2, two per buffer row
            planes = np.ascontiguousarray(src[h:]).reshape(-1, w // 2)
            u, v = planes[: h // 2], planes[h // 2:]
        u = np.repeat(np.repeat(u, 2, 0), 2, 1).astype(np.float64)
        v = np.repeat(np.repeat(v, 2, 0), 2, 1).astype(np.float64)
    yy = np.maximum(y - c[0], 0.0) * c[1]
    u, v = u - 128.0, v - 128.0
    rgb = np.stack([yy + c[2] * v, yy + c[3] * u + c[4] * v, yy + c[5] * u], -1)
    return np.clip(rgb, 0.0, 255.0)
