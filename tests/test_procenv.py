"""Stage processes start with OpenCV's busy-waiting off unless the deployment says otherwise."""

from __future__ import annotations

import sys

import pytest

from edgert.runtime.procenv import OPENCV_NO_SPIN, stage_env
from edgert.runtime.supervisor import ProcessHandle


def test_stage_env_adds_defaults_and_keeps_what_is_set():
    env = stage_env({"PATH": "/bin", "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "2000"})
    assert env["PATH"] == "/bin"
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] == "2000"  # the deployment's choice wins
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"] == "0"


@pytest.mark.parametrize("user_value", [None, "2000"])
def test_a_stage_process_starts_with_them(tmp_path, monkeypatch, user_value):
    for k in OPENCV_NO_SPIN:
        monkeypatch.delenv(k, raising=False)
    if user_value:
        monkeypatch.setenv("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", user_value)
    # the supervisor's real start path (ProcessHandle.start, a real exec), with an interpreter
    # stand-in that writes the environment it was given and exits
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nenv > {tmp_path / 'env.txt'}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    h = ProcessHandle("capture", tmp_path, "1.deadbeef")
    h.start()
    assert h.join(30) and h.exitcode() == 0
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] == (user_value or "0")
    assert env["OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"] == "0"
