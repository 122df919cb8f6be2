"""Stage processes start with OpenCV's busy-waiting off unless the deployment says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.procenv import OPENCV_NO_SPIN, stage_env
from runtime.supervisor import ProcessHandle


def test_stage_env_adds_defaults_and_keeps_what_is_set():
    env = stage_env({"PATH": "/bin", "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "2000"})
    assert env["PATH"] == "/bin"
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] == "2000"  # the deployment's choice wins
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"] == "0"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


@pytest.mark.parametrize("user_value", [None, "2000"])
def test_a_stage_process_starts_with_them(tmp_path, monkeypatch, user_value):
    for k in OPENCV_NO_SPIN:
        monkeypatch.delenv(k, raising=False)
    if user_value:
        monkeypatch.setenv("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", user_value)
    # no pipeline.json in the run dir: the stage exits with an error once it has started, but
    # its environment is fixed at exec, and it is still importing when we read it
    h = ProcessHandle("capture", tmp_path, "1.deadbeef")
    h.start()
    try:
        env = _environ(h.pid)
    finally:
        if h.alive():
            h.kill()
        assert h.join(30)
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] == (user_value or "0")
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"] == "0"
