"""`edgert bench transport`: a tiny real run produces every case and the ratios the issue names."""

from __future__ import annotations

import json
import os

from edgert.bench import transport
from edgert.runtime import shm
from edgert.runtime.mailbox import unsupported


def test_transport_benchmark_report_shape(tmp_path):
    report = transport.run(quick=True, n=5)
    methods = ("shm", "pickle_pipe", "zmq_copy_ipc", "zmq_nocopy_ipc", "zmq_copy_tcp", "memcpy")
    if not unsupported():  # the pipeline's mailbox hop, where the pipeline has mailboxes
        methods += ("shm_mailbox",)
    assert set(report.cases) == {f"{m}@{s}" for m in methods for s in transport.SIZES}
    assert all(c["n"] == 5 and c["p50_ms"] > 0 for c in report.cases.values())
    for name in ("zmq_copy_ipc@1080p/shm@1080p", "shm@1080p/memcpy@1080p") + (
            ("shm@1080p/shm_mailbox@1080p",) if "shm_mailbox" in methods else ()):
        assert report.ratios[name] > 0 and report.ratios[name + "_p99"] > 0
    assert {p.suffix for p in report.write(tmp_path)} == {".json", ".md", ".png"}
    # the benchmark's frame pools were created by this process (its pid is in their names): all gone
    assert not [p for p in shm.SHM_DIR.iterdir() if p.name.startswith(f"{shm.PREFIX}.{os.getpid()}.")]


def test_transport_leaves_the_mailbox_case_out_with_the_reason_where_mailboxes_cannot_run(monkeypatch):
    monkeypatch.setattr(transport, "unsupported", lambda: "no futex(2) on Plan9")
    report = transport.run(quick=True, n=3)
    assert not [c for c in report.cases if c.startswith("shm_mailbox@")]
    assert "shm_mailbox left out: no futex(2) on Plan9" in report.notes
    assert report.cases["shm@1080p"]["n"] == 3


def test_the_cli_runs_a_benchmark_that_takes_no_pipeline_options(tmp_path, monkeypatch):
    """`edgert bench transport` with no pipeline flag must not be refused for one it was not given
    (a store_true flag's False once counted as given and broke every non-pipeline benchmark)."""
    from edgert.runtime.cli import main as edgert

    # the benchmark's own shape is test_transport_benchmark_report_shape's; here the CLI's path to it
    # matters, so its run is as short as that test's (n=5, not --quick's 200 small / 30 large frames)
    orig = transport.run
    monkeypatch.setattr(transport, "run", lambda quick: orig(quick=quick, n=5))
    assert edgert(["bench", "transport", "--quick", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"transport.json", "transport.md", "transport.png"}
    assert json.loads((tmp_path / "transport.json").read_text())["config"]["n_small"] == 5
    assert edgert(["bench", "transport", "--compare-zmq", "--out", str(tmp_path)]) == 2  # given: refused


def test_a_receiver_that_died_is_an_error_not_a_hang():
    import multiprocessing as mp

    import pytest
    import zmq

    ctx = zmq.Context()
    ack = ctx.socket(zmq.PAIR)
    ack.bind("inproc://bench-transport-reply")
    proc = mp.get_context("spawn").Process(target=os._exit, args=(3,))
    proc.start()
    proc.join(30)
    try:
        with pytest.raises(RuntimeError, match="the receiver process exited with code 3"):
            transport._reply(ack, proc)
    finally:
        ack.close(0)
        ctx.term()
