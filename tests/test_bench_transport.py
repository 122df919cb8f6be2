"""`edgert bench transport`: a tiny real run produces every case and the ratios the issue names."""

from __future__ import annotations

import os

from bench import transport
from runtime import shm


def test_transport_benchmark_report_shape(tmp_path):
    report = transport.run(quick=True, n=5)
    methods = ("shm", "pickle_pipe", "zmq_copy_ipc", "zmq_nocopy_ipc", "zmq_copy_tcp", "memcpy")
    assert set(report.cases) == {f"{m}@{s}" for m in methods for s in transport.SIZES}
    assert all(c["n"] == 5 and c["p50_ms"] > 0 for c in report.cases.values())
    for name in ("zmq_copy_ipc@1080p/shm@1080p", "shm@1080p/memcpy@1080p"):
        assert report.ratios[name] > 0 and report.ratios[name + "_p99"] > 0
    assert {p.suffix for p in report.write(tmp_path)} == {".json", ".md", ".png"}
    # the benchmark's frame pools were created by this process (its pid is in their names): all gone
    assert not [p for p in shm.SHM_DIR.iterdir() if p.name.startswith(f"{shm.PREFIX}.{os.getpid()}.")]
