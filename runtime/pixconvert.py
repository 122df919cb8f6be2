"""BGR images into a camera.format slot, for the sources that render BGR (simulator, frames).

A real camera delivers its own format and the fused kernel decodes it; the simulated ones
render BGR, so to run the closed loop in every format they convert their render the way a
camera's ISP would encode it: OpenCV's cvtColor, BT.601 limited range (what
cv2.COLOR_YUV2RGB_NV12/_I420/_YUYV decode, and camera.yuv_matrix/yuv_range's defaults).
OpenCV encodes I420 and YUY2 but not NV12, so NV12 is I420 into a preallocated buffer, then its
U and V planes interleaved into the slot's chroma rows. Nothing is allocated per frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgert.runtime.topics import frame_shape

_CODE = {"rgb": cv2.COLOR_BGR2RGB, "i420": cv2.COLOR_BGR2YUV_I420, "yuyv": cv2.COLOR_BGR2YUV_YUY2}


class BgrTo:
    """`conv(bgr, dst)`: one (H, W, 3) BGR image into `dst`, an image of `fmt` (runtime/topics.frame_shape)."""

    def __init__(self, fmt: str, height: int, width: int) -> None:
        self.fmt = fmt
        self.shape = frame_shape(fmt, height, width)
        self.h, self.w = int(height), int(width)
        if fmt == "nv12":
            self._i420 = np.empty(self.shape, np.uint8)
            chroma = self._i420.reshape(-1)[self.h * self.w:]
            q = (self.h // 2) * (self.w // 2)
            self._u = chroma[:q].reshape(self.h // 2, self.w // 2)
            self._v = chroma[q:].reshape(self.h // 2, self.w // 2)

    def __call__(self, bgr: np.ndarray, dst: np.ndarray) -> None:
        if dst.shape != self.shape or bgr.shape != (self.h, self.w, 3):
            raise ValueError(f"BgrTo({self.fmt!r}): a {bgr.shape} BGR image into {dst.shape}; expected "
                             f"{(self.h, self.w, 3)} into {self.shape}")
        if self.fmt == "bgr":
            np.copyto(dst, bgr)
        elif self.fmt == "nv12":
            cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420, dst=self._i420)
            h = self.h
            np.copyto(dst[:h], self._i420[:h])
            np.copyto(dst[h:, 0::2], self._u)  # NV12: U V U V ... in each of the H / 2 chroma rows
            np.copyto(dst[h:, 1::2], self._v)
        else:
            out = cv2.cvtColor(bgr, _CODE[self.fmt], dst=dst)
            if out is not dst:  # OpenCV writes into dst when its shape and type fit, as they do here
                np.copyto(dst, out)
