"""Anonymisation: a synthetic licence plate and a synthetic face come out pixelated, the rest of the frame untouched."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgert.bench import anonymise as bench_anonymise
from edgert.bench.anonymise import draw_face, draw_plate, face_patch, scene
from edgert.runtime.fleet import anonymise
from edgert.runtime.fleet.anonymise import AnonymiseError, Anonymiser

SHAPE = (1080, 1920, 3)


@pytest.fixture(scope="module")
def anon() -> Anonymiser:
    return Anonymiser(SHAPE, faces=False)


def _outside(mask_box: tuple[int, int, int, int], margin: float = 0.5) -> np.ndarray:
    """A mask of the frame away from the box (grown by `margin` of its size on each side)."""
    x, y, w, h = mask_box
    m = np.ones(SHAPE[:2], bool)
    m[max(0, y - int(h * margin)):y + h + int(h * margin), max(0, x - int(w * margin)):x + w + int(w * margin)] = False
    return m


@pytest.mark.parametrize("w, h", [(400, 86), (240, 52), (140, 30)])
def test_plate_is_detected_and_pixelated_in_place(anon, w, h):
    x, y = 760, 620
    frame = scene(seed=1)
    draw_plate(frame, x, y, w, h, "AB 1234")
    before = frame.copy()
    n = anon(frame)
    assert n >= 1
    text = (slice(y + 3, y + h - 3), slice(x + 3, x + w - 3))  # inside the plate's border
    g0 = cv2.cvtColor(before, cv2.COLOR_BGR2GRAY)[text].astype(np.int16)
    g1 = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[text].astype(np.int16)
    # Pixelated, not merely softened: the dark character strokes are gone ...
    assert np.count_nonzero(g1 < 60) < 0.05 * np.count_nonzero(g0 < 60)
    # ... and so are their edges: what is left are the few block boundaries.
    def edges(g: np.ndarray) -> float:
        return float((np.abs(np.diff(g, axis=1)) > 30).mean())
    assert edges(g1) < 0.4 * edges(g0)
    # Everything away from the plate is byte-for-byte the original.
    away = _outside((x, y, w, h))
    assert np.array_equal(frame[away], before[away])


def test_face_is_detected_and_pixelated_in_place():
    # The synthetic face is a real detection by the cascade (not a box the test hands over) ...
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert len(cascade.detectMultiScale(face_patch(), 1.1, 3)) == 1
    anon = Anonymiser(SHAPE, faces=True, plates=True)
    assert anon.face_kind == "haar"
    frame = scene(seed=5)
    box = draw_face(frame, 700, 300, scale=1.2)  # the oval: 192 x 252 px of a 1080p frame
    before = frame.copy()
    assert anon(frame) == 1  # ... found once in the 1080p frame (detected at 960 px wide), nothing else
    x, y, w, h = box
    inner = (slice(y + h // 5, y + h - h // 5), slice(x + w // 5, x + w - w // 5))  # eyes, brows, nose, mouth
    g0 = cv2.cvtColor(before, cv2.COLOR_BGR2GRAY)[inner].astype(np.int16)
    g1 = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[inner].astype(np.int16)
    # Pixelated: the dark eyes and mouth are gone and the fine structure with them ...
    assert np.count_nonzero(g0 < 70) > 500 and np.count_nonzero(g1 < 70) < 0.05 * np.count_nonzero(g0 < 70)
    assert len(np.unique(g1)) <= 2 * anon.blocks ** 2
    # ... and everything away from the face is byte-for-byte the original.
    away = _outside(box)
    assert np.array_equal(frame[away], before[away])


def test_frame_without_plates_is_untouched(anon):
    frame = scene(seed=2)
    before = frame.copy()
    assert anon(frame) == 0
    assert np.array_equal(frame, before)


def test_two_plates_both_blurred(anon):
    frame = scene(seed=3, plates=bench_anonymise.PLATES)
    assert anon.detect(frame) and anon(frame) >= 2


def test_blur_of_a_known_region_is_block_constant_and_confined(anon):
    """The blur mechanics on a given box (as a face detector would return it)."""
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    before = frame.copy()
    box = (500, 300, 160, 200)
    assert anon.blur(frame, [box]) == 1
    m = anon.margin
    x0, y0 = box[0] - int(box[2] * m), box[1] - int(box[3] * m)
    x1, y1 = box[0] + box[2] + int(box[2] * m), box[1] + box[3] + int(box[3] * m)
    region = frame[y0:y1, x0:x1].astype(np.int16)
    # Coarse blocks: the region holds only a handful of distinct colours, one per block.
    n_colours = len(np.unique(region.reshape(-1, 3), axis=0))
    assert n_colours <= (anon.blocks + 1) * ((x1 - x0) // ((y1 - y0) // anon.blocks) + 1)
    assert np.abs(np.diff(region, axis=1)).astype(bool).mean() < 0.2  # mostly flat along rows
    outside = np.ones(SHAPE[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], before[outside])
    # Boxes at or past the edges are clipped, never wrap around.
    assert anon.blur(frame, [(-50, -50, 100, 100), (1900, 1060, 100, 100)]) == 2
    assert anon.blur(frame, [(5000, 5000, 10, 10)]) == 0


def test_faces_without_a_detector_are_refused_not_recorded_in_the_clear(monkeypatch):
    # An OpenCV build without the Haar cascades (the 5.0 wheels): the cascade lookup finds nothing.
    monkeypatch.setattr(anonymise, "_cascade", lambda name: None)
    with pytest.raises(AnonymiseError, match=r"face anonymisation needs a detector.*give face_model = the YuNet ONNX"):
        Anonymiser(SHAPE, faces=True)


def test_bad_inputs_are_named(anon, tmp_path):
    with pytest.raises(AnonymiseError, match=r"face model .* not found; give the YuNet ONNX file"):
        Anonymiser(SHAPE, faces=True, face_model=tmp_path / "yunet.onnx")
    with pytest.raises(AnonymiseError, match=r"expected \(height, width, 3\) BGR"):
        Anonymiser((1080, 1920), faces=False)
    with pytest.raises(AnonymiseError, match=r"built for uint8 \(1080, 1920, 3\): make one per camera format"):
        anon(np.zeros((720, 1280, 3), np.uint8))


def test_benchmark_quick_report_shape(tmp_path):
    rep = bench_anonymise.run(quick=True, n=5)
    assert set(rep.cases) == {"memcpy", "gaussian_full", "anonymise_no_hits", "anonymise_2_plates",
                              "anonymise_face_2_plates"}
    assert "faces: haar" in rep.config["detector"]
    for key in ("anonymise_no_hits/memcpy", "anonymise_no_hits/gaussian_full", "anonymise_2_plates/memcpy_p99",
                "anonymise_face_2_plates/memcpy"):
        assert rep.ratios[key] > 0
    assert rep.ratios["anonymise_no_hits/memcpy"] == pytest.approx(
        rep.cases["anonymise_no_hits"]["p50_ms"] / rep.cases["memcpy"]["p50_ms"])
    data = json.loads(rep.write(tmp_path)[0].read_text())
    assert data["benchmark"] == "anonymise" and data["cases"]["memcpy"]["n"] == 5
