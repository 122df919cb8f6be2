"""`edgert bench infer` report shape, on the shipped zoo models with a tiny n (fast)."""

from __future__ import annotations

import json

import pytest

from edgert.bench import infer
from edgert.bench.report import Report

CASE_KEYS = {"n", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"}


def test_report_shape_tiny_n(tmp_path):
    rep = infer.run(quick=True, n=5, cold_n=1, variants=("pilotnet", "pilotnet-int8"))
    assert isinstance(rep, Report) and rep.benchmark == "infer"
    for tag in ("fp32_cpu", "int8_cpu"):
        for case in (f"bare_{tag}", f"engine_{tag}", f"cold_{tag}", f"cold_cached_{tag}"):
            assert set(rep.cases[case]) == CASE_KEYS, case
        assert rep.cases[f"engine_{tag}"]["n"] == 5 and rep.cases[f"cold_{tag}"]["n"] == 1
        for key in (f"engine_{tag}/bare_{tag}", f"engine_{tag}/bare_{tag}_p99", f"cold_cached_{tag}/cold_{tag}"):
            assert rep.ratios[key] > 0, key
    assert rep.ratios["engine_fp32_cpu/bare_fp32_cpu"] == pytest.approx(
        rep.cases["engine_fp32_cpu"]["p50_ms"] / rep.cases["bare_fp32_cpu"]["p50_ms"])
    paths = rep.write(tmp_path)
    data = json.loads(paths[0].read_text())
    assert data["benchmark"] == "infer" and data["config"]["n"] == 5
    assert set(data) >= {"machine", "config", "cases", "ratios"}
    assert all(p.is_file() for p in paths)


def test_default_variants_are_the_zoo_variants():
    assert infer.VARIANTS == ("pilotnet", "pilotnet-fp16", "pilotnet-int8")
