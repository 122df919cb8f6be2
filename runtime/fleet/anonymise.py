"""Anonymisation of camera frames before they are written: faces and licence plates pixelated.

Detection runs on a downscaled grey (and, for faces, BGR) copy in buffers allocated once;
hits are mapped back to the full frame, grown by a margin, and pixelated *in place* into
blocks so coarse (the region's shorter side becomes `blocks` blocks) that no face or
character survives. It is meant for the recorder, off the control path: bench/anonymise.py
measures its cost per frame.

Detectors (OpenCV only, no download at run time; the pinned opencv-python-headless<5 ships
the Haar cascades under cv2.data.haarcascades):
- faces: OpenCV's bundled Haar frontal-face cascade (haarcascade_frontalface_default.xml), or
  YuNet (`cv2.FaceDetectorYN`, optional, better on real faces at an angle) given its ONNX file
  (`face_model`, from OpenCV's model zoo). An OpenCV build without the cascade and no YuNet
  file has no face detector: asking for faces is then refused (AnonymiseError), never
  silently recorded in the clear.
- plates: both a classical localiser (dark characters on a bright wide rectangle: black-hat,
  horizontal gradient, closing, contour shape; no model file) and, where OpenCV ships it, the
  Haar plate cascade (trained on Russian plates: it misses many others); the union of their
  boxes is pixelated, so either finding a plate is enough.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgert.runtime.errors import EdgertError

Box = tuple[int, int, int, int]  # x, y, w, h in full-frame pixels


class AnonymiseError(EdgertError, ValueError):
    """Anonymisation was asked for but cannot be done as asked (no detector, wrong frame)."""


def _cascade(name: str) -> object | None:
    """An OpenCV Haar cascade by file name, if this OpenCV build has both the class and the file."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = os.path.join(folder, name) if folder else ""
    if not hasattr(cv2, "CascadeClassifier") or not path or not os.path.isfile(path):
        return None
    c = cv2.CascadeClassifier(path)
    return None if c.empty() else c


def _box(v: Sequence[Any]) -> Box:
    """(x, y, w, h) as ints, from a detector's row or OpenCV's rectangle."""
    return int(v[0]), int(v[1]), int(v[2]), int(v[3])


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


class PlateLocaliser:
    """Classical plate localisation on a grey image: dark strokes on a bright, wide rectangle."""

    def __init__(self, min_height: int = 8, aspect: tuple[float, float] = (1.8, 7.0)) -> None:
        self.min_height = min_height
        self.aspect = aspect
        self.k_hat = cv2.getStructuringElement(cv2.MORPH_RECT, (13, 5))
        self.k_close = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 3))

    def __call__(self, gray: np.ndarray) -> list[Box]:
        """Boxes from two cues, united: character strokes (which may cover only part of a plate
        whose characters are far apart) and the bright plate ground around them (its whole extent)."""
        return self._strokes(gray) + self._grounds(gray)

    def _plate_like(self, gray: np.ndarray, box: Box) -> bool:
        x, y, w, h = box
        if h < self.min_height or not self.aspect[0] <= w / h <= self.aspect[1]:
            return False
        roi = gray[y:y + h, x:x + w]
        bright = np.count_nonzero(roi > 150) / roi.size  # plate ground
        dark = np.count_nonzero(roi < 90) / roi.size  # characters
        return bool(bright > 0.3 and 0.05 < dark < 0.6)

    def _grounds(self, gray: np.ndarray) -> list[Box]:
        """Bright, nearly rectangular regions of plate shape holding dark characters (the holes)."""
        _, mask = cv2.threshold(gray, 150, 255, cv2.THRESH_BINARY)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for c in contours:
            box = _box(cv2.boundingRect(c))
            if cv2.contourArea(c) >= 0.6 * box[2] * box[3] and self._plate_like(gray, box):
                out.append(box)
        return out

    def _strokes(self, gray: np.ndarray) -> list[Box]:
        hat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, self.k_hat)  # dark strokes on light ground
        grad = cv2.convertScaleAbs(cv2.Sobel(hat, cv2.CV_16S, 1, 0, ksize=3))  # characters are vertical edges
        grad = cv2.morphologyEx(grad, cv2.MORPH_CLOSE, self.k_close)
        _, mask = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.k_close, iterations=2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, None, iterations=1)  # type: ignore[call-overload]  # 3x3
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return [box for box in map(_box, map(cv2.boundingRect, contours)) if self._plate_like(gray, box)]


class Anonymiser:
    """Detect faces and plates in a BGR frame and pixelate them in place; returns how many."""

    def __init__(self, frame_shape: tuple[int, int, int] = (1080, 1920, 3), faces: bool = True,
                 plates: bool = True, face_model: str | Path | None = None, detect_width: int = 960,
                 margin: float = 0.15, blocks: int = 4, scale_step: float = 1.2) -> None:
        if len(frame_shape) != 3 or frame_shape[2] != 3:
            raise AnonymiseError(f"frame shape {frame_shape}: expected (height, width, 3) BGR")
        self.h, self.w = int(frame_shape[0]), int(frame_shape[1])
        self.scale = min(1.0, detect_width / self.w)
        sw, sh = max(1, round(self.w * self.scale)), max(1, round(self.h * self.scale))
        self.small = np.empty((sh, sw, 3), np.uint8)  # buffers reused by every frame
        self.gray = np.empty((sh, sw), np.uint8)
        self.margin, self.blocks = margin, max(1, blocks)
        # the cascades' pyramid step: 1.2 halves their cost against 1.1 (measured 12 -> 6 ms for faces,
        # 15 -> 8 ms for plates at 960 px) for a coarser size search; the margin covers the coarser boxes
        self.scale_step = float(scale_step)
        self.face_kind, self.plate_kind = "off", "off"
        self.yunet = self.face_cascade = self.plate_cascade = None
        self.localiser: PlateLocaliser | None = None
        if faces:
            if face_model is not None:
                path = Path(face_model)
                if not path.is_file():
                    raise AnonymiseError(f"face model {path} not found; give the YuNet ONNX file "
                                         "(face_detection_yunet_2023mar.onnx from OpenCV's model zoo)")
                self.yunet = cv2.FaceDetectorYN.create(str(path), "", (sw, sh), 0.7, 0.3, 5000)
                self.face_kind = "yunet"
            else:
                self.face_cascade = _cascade("haarcascade_frontalface_default.xml")
                if self.face_cascade is None:
                    raise AnonymiseError(
                        f"face anonymisation needs a detector and OpenCV {cv2.__version__} ships none (OpenCV 5 "
                        "wheels dropped the Haar cascades): give face_model = the YuNet ONNX file from OpenCV's "
                        "model zoo, or turn faces off only where the policy does not require anonymisation")
                self.face_kind = "haar"
        if plates:  # both, boxes united: the cascade alone misses plates unlike the Russian ones it learnt
            self.localiser = PlateLocaliser()
            self.plate_cascade = _cascade("haarcascade_russian_plate_number.xml")
            self.plate_kind = "localiser" if self.plate_cascade is None else "localiser+haar"

    def describe(self) -> str:
        return f"faces: {self.face_kind}, plates: {self.plate_kind}, detection at {self.gray.shape[1]} px wide"

    def detect(self, bgr: np.ndarray) -> list[Box]:
        """Face and plate boxes in full-frame pixels (not yet grown by the margin)."""
        if bgr.shape != (self.h, self.w, 3) or bgr.dtype != np.uint8:
            raise AnonymiseError(f"frame is {bgr.dtype} {bgr.shape}; this anonymiser was built for uint8 "
                                 f"{(self.h, self.w, 3)}: make one per camera format")
        cv2.resize(bgr, (self.small.shape[1], self.small.shape[0]), dst=self.small, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self.small, cv2.COLOR_BGR2GRAY, dst=self.gray)
        small: list[Box] = []
        if self.yunet is not None:
            _, faces = self.yunet.detect(self.small)
            if faces is not None:
                small += [_box(f) for f in faces]
        if self.face_cascade is not None:
            small += [_box(b) for b in self.face_cascade.detectMultiScale(self.gray, self.scale_step, 5)]  # type: ignore[attr-defined]
        if self.localiser is not None:
            local = self.localiser(self.gray)
            small += local
            if self.plate_cascade is not None:  # its window pads the plate: where the localiser has it, its box wins
                hits = self.plate_cascade.detectMultiScale(self.gray, self.scale_step, 4)  # type: ignore[attr-defined]
                small += [b for b in map(_box, hits) if not any(_overlap(b, o) for o in local)]
        k = 1.0 / self.scale
        return [(int(x * k), int(y * k), int(np.ceil(w * k)), int(np.ceil(h * k))) for x, y, w, h in small]

    def blur(self, bgr: np.ndarray, boxes: list[Box]) -> int:
        """Pixelate each box (grown by the margin, clipped to the frame) in place; returns the count."""
        n = 0
        H, W = bgr.shape[:2]
        for x, y, w, h in boxes:
            mx, my = int(w * self.margin), int(h * self.margin)
            x0, y0 = max(0, x - mx), max(0, y - my)
            x1, y1 = min(W, x + w + mx), min(H, y + h + my)
            if x1 <= x0 or y1 <= y0:
                continue
            roi = bgr[y0:y1, x0:x1]
            rw, rh = x1 - x0, y1 - y0
            cell = max(1, min(rw, rh) // self.blocks)
            coarse = cv2.resize(roi, (max(1, rw // cell), max(1, rh // cell)), interpolation=cv2.INTER_AREA)
            roi[...] = cv2.resize(coarse, (rw, rh), interpolation=cv2.INTER_NEAREST)
            n += 1
        return n

    def __call__(self, bgr: np.ndarray) -> int:
        """Anonymise one BGR frame in place; returns the number of regions pixelated."""
        return self.blur(bgr, self.detect(bgr))
