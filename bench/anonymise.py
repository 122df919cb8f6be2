"""`edgert bench anonymise`: what blurring faces and plates costs per 1920x1080 frame.

The question (issue 8): can anonymisation run in the recorder, off the control path, and at
what share of a frame period? Cases, interleaved round-robin in one run:

- `memcpy`: copying the frame once (np.copyto), the floor for touching it at all;
- `gaussian_full`: cv2.GaussianBlur (31x31) of the whole frame, the naive "blur everything";
- `anonymise_no_hits`: the Anonymiser on a textured frame with nothing to blur (detection cost);
- `anonymise_2_plates`: the same frame with two licence plates, restored from a copy before each
  call (so the case includes one memcpy), detected and pixelated;
- `anonymise_face_2_plates`: the same plus a synthetic face (draw_face), as restored and handled.

Faces and plates are both on, as the recorder runs it where the policy requires anonymisation
(faces by OpenCV's bundled Haar cascade; runtime/fleet/anonymise.py).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from edgert.bench.report import Report, interleaved_ns
from edgert.runtime.fleet.anonymise import Anonymiser

SHAPE = (1080, 1920, 3)
PLATES = ((520, 640, 260, 56, "AB 1234"), (1300, 700, 180, 40, "KX 58 PL"))
FACE_AT = (1240, 40)  # top-left of the 640x480 face patch in the benchmark's frame


def draw_plate(frame: np.ndarray, x: int, y: int, w: int, h: int, text: str) -> None:
    """A licence-plate pattern: a bright rectangle with a dark border and dark characters."""
    cv2.rectangle(frame, (x, y), (x + w, y + h), (235, 235, 235), -1)
    cv2.rectangle(frame, (x, y), (x + w, y + h), (20, 20, 20), 3)
    scale = h / 40
    cv2.putText(frame, text, (x + int(0.06 * w), y + int(0.78 * h)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (10, 10, 10), max(2, int(scale * 3)), cv2.LINE_AA)


def face_patch(scale: float = 1.0) -> np.ndarray:
    """A grey 640x480 (times `scale`) face-like pattern that OpenCV's frontal-face Haar cascade finds.

    Bright oval on a mid-grey ground, dark eyes under dark brows, a lighter nose ridge and a
    dark mouth, softened (the cascade keys on those light/dark bands, not on a real face).
    """
    img: np.ndarray = np.full((480, 640), 90, np.uint8)
    cv2.ellipse(img, (320, 240), (80, 105), 0, 0, 360, 200, -1)
    for x in (320 - 32, 320 + 32):
        cv2.ellipse(img, (x, 215), (18, 9), 0, 0, 360, 40, -1)
        cv2.line(img, (x - 22, 195), (x + 22, 195), 50, 6)
    cv2.line(img, (320, 225), (320, 265), 150, 8)
    cv2.ellipse(img, (320, 290), (30, 10), 0, 0, 360, 60, -1)
    img = cv2.GaussianBlur(img, (7, 7), 2)
    return img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def draw_face(frame: np.ndarray, x: int, y: int, scale: float = 1.0) -> tuple[int, int, int, int]:
    """Paste face_patch(scale) into a BGR frame at (x, y); returns the face oval's box (x, y, w, h)."""
    g = face_patch(scale)
    frame[y:y + g.shape[0], x:x + g.shape[1]] = g[:, :, None]
    return (x + round(240 * scale), y + round(135 * scale), round(160 * scale), round(210 * scale))


def scene(seed: int = 0, plates: tuple = ()) -> np.ndarray:  # type: ignore[type-arg]
    """A textured road-like frame (gradient, noise, a car body) with optional plates."""
    rng = np.random.default_rng(seed)
    f = np.empty(SHAPE, np.uint8)
    f[:] = np.linspace(40, 120, SHAPE[1], dtype=np.uint8)[None, :, None]
    f += rng.integers(0, 20, SHAPE, dtype=np.uint8)
    cv2.rectangle(f, (400, 560), (1000, 900), (60, 60, 140), -1)
    for p in plates:
        draw_plate(f, *p)
    return f


def run(quick: bool = False, n: int | None = None) -> Report:
    """Per-frame cost of anonymisation against memcpy and a whole-frame Gaussian blur."""
    n = n or (50 if quick else 3000)
    anon = Anonymiser(SHAPE, faces=True, plates=True)
    rep = Report("anonymise", {"n": n, "frame": list(SHAPE), "detector": anon.describe(),
                               "gaussian": "31x31, sigma auto", "threads": cv2.getNumThreads()})
    empty, with_plates = scene(), scene(plates=PLATES)
    with_face = with_plates.copy()
    draw_face(with_face, *FACE_AT)
    work, dst = empty.copy(), np.empty_like(empty)
    for frame, want in ((with_plates, len(PLATES)), (with_face, len(PLATES) + 1)):
        hits = anon(frame.copy())
        if hits < want:
            raise AssertionError(f"the anonymiser found {hits} of {want} faces and plates; the timing would be of "
                                 "the wrong work")

    def plates_case() -> None:
        np.copyto(work, with_plates)
        anon(work)

    def face_case() -> None:
        np.copyto(work, with_face)
        anon(work)

    fns: dict[str, Callable[[], object]] = {
        "memcpy": lambda: np.copyto(dst, empty),
        "gaussian_full": lambda: cv2.GaussianBlur(empty, (31, 31), 0, dst=dst),
        "anonymise_no_hits": lambda: anon(empty),
        "anonymise_2_plates": plates_case,
        "anonymise_face_2_plates": face_case,
    }
    samples = interleaved_ns(fns, n, warmup=max(5, n // 50))
    for case, s in samples.items():
        rep.add(case, s)
    for a, b in (("anonymise_no_hits", "memcpy"), ("anonymise_no_hits", "gaussian_full"),
                 ("anonymise_2_plates", "memcpy"), ("anonymise_face_2_plates", "memcpy")):
        rep.ratio(a, b)
        rep.ratio(a, b, p99=True)
    period_ms = 1000 / 30
    rep.notes.append(f"at 30 fps a frame period is {period_ms:.1f} ms; anonymise_face_2_plates p99 takes "
                     f"{rep.cases['anonymise_face_2_plates']['p99_ms'] / period_ms:.0%} of it here (OpenCV threads: "
                     f"{cv2.getNumThreads()}): run it in "
                     "the recorder process, never in capture/preprocess/infer/control")
    rep.notes.append("anonymise_2_plates and anonymise_face_2_plates include restoring the frame from a copy "
                     "(one memcpy) before each call")
    return rep
