"""Record a real pipeline run, replay it through a real pipeline: bit-exact frames, equal outputs
with the same model, the differences reported (exit 1) with another, a truncated recording replayed
up to where it is readable and said so."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runtime import cli
from runtime import supervisor as supervisor_module
from runtime.fleet import mcapio
from runtime.replay import format_report, run_replay
from runtime.supervisor import Supervisor

from test_record import pipeline_config, signed_tiny


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 2 s threads-mode run of the tiny model on the simulator, recorded whole (mode all, raw frames)."""
    root = tmp_path_factory.mktemp("replay")
    model, keys = signed_tiny(root)
    cfg = pipeline_config(model, keys, mode="all", dir=str(root / "rec"), pre_s=0.0, ring_s=2.0)
    s = Supervisor(cfg, duration_s=2.0, mode="threads").run()
    assert s["stages"]["recorder"]["frames"] >= 30, s["stages"]
    (path,) = sorted((root / "rec").glob("*.mcap"))
    return path, root, keys


def test_replay_with_the_same_model_is_bit_exact_and_equal(recording, tmp_path):
    path, _, _ = recording
    info = mcapio.inspect(path)
    assert info.complete and info.topics[mcapio.RAW_TOPIC] >= 30
    r = run_replay(path, speed=0.0, mode="threads", verify_frames=True, work_dir=tmp_path)
    text = format_report(r)
    assert r.ok, text
    assert r.frames_replayed == info.topics[mcapio.RAW_TOPIC]  # every recorded frame went out again
    assert r.compared >= 0.9 * len({json.loads(m.data)["frame_id"]
                                    for _, m in mcapio.iter_messages(path, {"/results"})}), text
    assert r.frames_checked >= 0.9 * r.frames_replayed and r.frames_bit_exact == r.frames_checked, text
    assert r.max_abs_diff == 0.0  # same frames, same model, same machine: the same numbers
    assert r.truncated == "" and "OK" in text
    assert not list(tmp_path.iterdir())  # the replay's own recording is scratch, removed


def test_max_speed_replay_waits_for_a_stalled_recorder(recording, tmp_path, monkeypatch):
    """The recorder frozen (SIGSTOP, processes mode) for 0.6 s from the moment the camera starts: a
    max-speed replay waits for it (topic `recorded`) instead of lapping the camera pool's 4 slots
    (61 frames go out in ~50 ms here), so every frame is still checked bit for bit."""
    path, _, _ = recording
    sups: list[Supervisor] = []

    class Watched(Supervisor):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            sups.append(self)
    monkeypatch.setattr(supervisor_module, "Supervisor", Watched)
    done, froze = threading.Event(), []

    def freeze_at_start() -> None:
        end = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < end:
            if sups and hasattr(sups[0], "started_at"):  # set as the camera is told to start
                pid = sups[0].handles["recorder"].pid
                os.kill(pid, signal.SIGSTOP)
                froze.append(time.monotonic())
                done.wait(0.6)
                os.kill(pid, signal.SIGCONT)
                return
            time.sleep(0.001)
    t = threading.Thread(target=freeze_at_start, daemon=True)
    t.start()
    try:
        r = run_replay(path, speed=0.0, mode="processes", verify_frames=True, work_dir=tmp_path)
    finally:
        done.set()
        t.join(5)
    text = format_report(r)
    assert froze, "the recorder was never frozen"  # as the start signal went out: before any frame
    assert r.ok and r.frames_replayed == r.frames_recorded, text
    assert r.frames_checked == r.frames_replayed == r.frames_bit_exact, text
    assert not any("dropped" in n for n in r.notes), text


def test_replay_with_another_model_reports_the_frames_that_differ(recording, tmp_path, capsys):
    path, root, _ = recording
    other, _ = signed_tiny(root, weight=0.6, name="tiny-0.6")  # a "new variant": 20 % more steering
    out = tmp_path / "report.json"
    code = cli.main(["replay", str(path), "--model", str(other), "--speed", "1", "--mode", "threads",
                     "--tolerance", "1e-6", "--report", str(out)])
    text = capsys.readouterr().out
    assert code == 1, text
    rep = json.loads(out.read_text())
    assert rep["compared"] > 0 and len(rep["beyond"]) == rep["compared"] and not rep["ok"]
    for row in rep["rows"]:  # steer = w * mean(image): the new output is 0.6/0.5 of the recorded one
        assert row["replayed"] == pytest.approx(row["recorded"] * 1.2, rel=1e-5)
    assert "DIFFERENT" in text and "beyond tolerance" in text and f"frame {rep['rows'][0]['frame_id']}" in text


def test_a_truncated_recording_replays_its_readable_part_and_says_so(recording, tmp_path):
    path, _, _ = recording
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    info = mcapio.inspect(cut)
    assert not info.complete and info.topics.get(mcapio.RAW_TOPIC, 0) > 0
    r = run_replay(cut, speed=0.0, mode="threads", work_dir=tmp_path)
    assert r.truncated and r.frames_recorded == info.topics[mcapio.RAW_TOPIC]
    assert r.frames_replayed == r.frames_recorded and r.ok
    assert "RECORDING TRUNCATED" in format_report(r)


def test_replay_refuses_a_recording_without_frames(tmp_path, capsys):
    path = tmp_path / "x.mcap"
    f = mcapio.McapFile(path, {"region": "sim", "config": "{}"})
    f.write("/events", 1, 1, b'{"kind": "operator", "reason": "", "frame_id": 0, "t_ns": 1}')
    f.close()
    assert cli.main(["replay", str(path)]) == 2
    assert "no frames to replay" in capsys.readouterr().err
