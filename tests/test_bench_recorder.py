"""`edgert bench recorder` report shape, on a tiny model and small frames (fast)."""

from __future__ import annotations

import json

import pytest
from test_record import pipeline_config, signed_tiny

from edgert.bench import recorder
from edgert.bench.report import Report

CASE_KEYS = {"n", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"}


def test_report_shape_quick_tiny(tmp_path):
    model, keys = signed_tiny(tmp_path)
    cfg = pipeline_config(model, keys)
    rep = recorder.run(quick=True, rounds=1, duration_s=1.0, warmup_s=0.3, config=cfg)
    assert isinstance(rep, Report) and rep.benchmark == "recorder"
    for case in recorder.CASES:
        assert set(rep.cases[case]) == CASE_KEYS and rep.cases[case]["n"] >= 10, rep.cases
    assert rep.ratios["record_on/record_off"] == pytest.approx(
        rep.cases["record_on"]["p50_ms"] / rep.cases["record_off"]["p50_ms"])
    assert rep.ratios["record_on/record_off_p99"] > 0
    written = next(n for n in rep.notes if "frames written" in n)
    assert " 0 frames written" not in written
    aa = rep.ratios["record_off_again/record_off_p99"]
    clips = next(n for n in rep.notes if n.startswith("record_clips p99:"))  # judged against the A/A noise
    assert ("within" if rep.ratios["record_clips/record_off_p99"] <= max(aa, 1 / aa) else "BEYOND") in clips
    paths = rep.write(tmp_path / "out")
    data = json.loads(paths[0].read_text())
    assert data["benchmark"] == "recorder" and data["config"]["record"]["frames"] == "raw"
    assert all(p.is_file() for p in paths)
