"""bench/preprocess.py runs end to end and writes the one report shape (tiny n: no timing asserted)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgert.bench import _suite
from edgert.bench._suite import OPENCV_NO_SPIN, run_one

CASES = ("bgr1080_to_384x640", "bgr1080_to_384x640_fresh", "bgr1080_to_384x640_steady", "nv12_1080_to_384x640",
         "nv12_720_to_360x640",
         "pilotnet_bgr1080_to_66x200_yuv", "8cam_720p_to_8x3x256x512")


def test_quick_run_has_every_case_baseline_and_ratio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGERT_BENCH_N", "3")
    monkeypatch.setenv("EDGERT_BENCH_NO_COLDSTART", "1")
    for k in OPENCV_NO_SPIN:  # run_one turns OpenCV's busy-waiting off; setenv first so teardown restores
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setattr(_suite, "_opencv", {})
    import cv2  # noqa: F401  (loaded first, as in any pytest run that got here after other tests)

    report = run_one("preprocess", quick=True)
    # cv2 was loaded before run_one: the variables are set for stage processes, and the report
    # says this process keeps OpenCV's default
    assert report.config["cv2_active_wait"] == {"env": {k: "0" for k in OPENCV_NO_SPIN}, "in_this_process": False}
    for case in CASES:
        for impl in ("fused", "naive", "blob", "memcpy"):
            assert report.cases[f"{case}:{impl}"]["n"] == 3
        for a, b in (("blob", "fused"), ("naive", "fused"), ("fused", "memcpy")):
            for suffix in ("", "_p99"):
                assert report.ratios[f"{case}:{a}/{case}:{b}{suffix}"] > 0
    for case in ("bgr1080_to_384x640", "bgr1080_to_384x640_fresh", "nv12_1080_to_384x640",
                 "nv12_720_to_360x640"):  # derived memory floor
        floor = report.config["floor"][case]
        assert floor["read_bytes"] > 0 and floor["written_bytes"] > 0 and floor["floor_ms"] > 0
    # 1920x1080 BGR -> 384 rows: 768 weighted source rows of 5760 bytes (+ a line), 3x384x640 float32
    assert report.config["floor"]["bgr1080_to_384x640"]["read_bytes"] == 768 * (5760 // 64 + 1) * 64
    assert report.config["floor"]["bgr1080_to_384x640"]["written_bytes"] == 3 * 384 * 640 * 4
    # the first case's tail baselines, and issue 4's targets checked on each first case
    for case in ("bgr1080_to_384x640", "bgr1080_to_384x640_steady"):
        for impl in ("fixed", "fixed_1t"):
            assert report.cases[f"{case}:{impl}"]["n"] == 3
    for case in ("bgr1080_to_384x640", "bgr1080_to_384x640_fresh", "bgr1080_to_384x640_steady"):
        t = report.config["targets"][case]
        assert set(t["value"]) == set(t["met"]) == {"blob/fused", "naive/fused", "fused p99/p50", "fused/memcpy"}
        assert t["value"]["blob/fused"] == pytest.approx(report.ratios[f"{case}:blob/{case}:fused"], rel=1e-2)
        assert any(n.startswith(f"{case} against issue 4's targets") for n in report.notes)
    assert set(report.config["machine_jitter"]) == {f"cpu{c}" for c in os.sched_getaffinity(0)}
    paths = report.write(tmp_path)
    data = json.loads(paths[0].read_text())
    assert set(data) >= {"benchmark", "machine", "config", "cases", "ratios"}
    assert data["benchmark"] == "preprocess" and data["config"]["n"] == 3
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
