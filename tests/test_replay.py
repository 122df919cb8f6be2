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
from test_record import pipeline_config, signed_tiny

from edgert.runtime import cli
from edgert.runtime import supervisor as supervisor_module
from edgert.runtime.fleet import crypto, mcapio
from edgert.runtime.replay import format_report, run_replay
from edgert.runtime.supervisor import Supervisor


def _watch_supervisors(monkeypatch) -> list[Supervisor]:  # type: ignore[no-untyped-def]
    """Every Supervisor the replay makes, as it makes it (the test reaches its processes through it)."""
    sups: list[Supervisor] = []

    class Watched(Supervisor):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            sups.append(self)
    monkeypatch.setattr(supervisor_module, "Supervisor", Watched)
    return sups


def local_config(root: Path, keys: Path):  # type: ignore[no-untyped-def]
    """This machine's config: its trusted keys (the test publisher's) and its vehicle key folder."""
    return pipeline_config(root / "tiny", keys).replace(record={"keys_dir": str(root / "fleet-keys")})


def local_toml(root: Path, keys: Path, out: Path) -> Path:
    out.write_text(f'[camera]\nfrozen_frames = 0\n[infer]\ntrusted_keys = "{keys}"\n'
                   f'[record]\nkeys_dir = "{root / "fleet-keys"}"\n')
    return out


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
    path, root, keys = recording
    info = mcapio.inspect(path)
    assert info.complete and info.topics[mcapio.RAW_TOPIC] >= 30
    r = run_replay(path, local_config(root, keys), speed=0.0, mode="threads", verify_frames=True, work_dir=tmp_path)
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
    path, root, keys = recording
    sups = _watch_supervisors(monkeypatch)
    done, froze = threading.Event(), []

    def freeze_at_start() -> None:
        end = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < end:
            if sups and sups[0].running.is_set():  # set as the camera is told to start
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
        r = run_replay(path, local_config(root, keys), speed=0.0, mode="processes", verify_frames=True,
                       work_dir=tmp_path)
    finally:
        done.set()
        t.join(5)
    text = format_report(r)
    assert froze, "the recorder was never frozen"  # as the start signal went out: before any frame
    assert r.ok and r.frames_replayed == r.frames_recorded, text
    assert r.frames_checked == r.frames_replayed == r.frames_bit_exact, text
    assert not any("dropped" in n for n in r.notes), text


def test_replay_with_another_model_reports_the_frames_that_differ(recording, tmp_path, capsys):
    path, root, keys = recording
    other, _ = signed_tiny(root, weight=0.6, name="tiny-0.6")  # a "new variant": 20 % more steering
    out = tmp_path / "report.json"
    code = cli.main(["replay", str(path), "--config", str(local_toml(root, keys, tmp_path / "local.toml")),
                     "--model", str(other), "--speed", "1", "--mode", "threads",
                     "--tolerance", "1e-6", "--report", str(out)])
    text = capsys.readouterr().out
    assert code == 1, text
    rep = json.loads(out.read_text())
    assert rep["compared"] > 0 and len(rep["beyond"]) == rep["compared"] and not rep["ok"]
    for row in rep["rows"]:  # steer = w * mean(image): the new output is 0.6/0.5 of the recorded one
        assert row["replayed"] == pytest.approx(row["recorded"] * 1.2, rel=1e-5)
    assert "DIFFERENT" in text and "beyond tolerance" in text and f"frame {rep['rows'][0]['frame_id']}" in text


def test_a_truncated_recording_replays_its_readable_part_and_says_so(recording, tmp_path):
    path, root, keys = recording
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ValueError, match="before its content was sealed"):  # unsealed: its frames could be any
        run_replay(cut, local_config(root, keys), speed=0.0, mode="threads", work_dir=tmp_path)
    # what the recorder does at its next start: seal the readable part (it holds the vehicle key)
    assert mcapio.seal_recovered(cut, crypto.load_key(root / "fleet-keys", crypto.VEHICLE)) == ""
    info = mcapio.inspect(cut)
    assert not info.complete and info.topics.get(mcapio.RAW_TOPIC, 0) > 0
    r = run_replay(cut, local_config(root, keys), speed=0.0, mode="threads", work_dir=tmp_path)
    assert r.truncated and r.frames_recorded == info.topics[mcapio.RAW_TOPIC]
    assert r.frames_replayed == r.frames_recorded and r.ok
    assert "RECORDING TRUNCATED" in format_report(r)


def test_replay_refuses_a_recording_without_frames(tmp_path, capsys):
    path = tmp_path / "x.mcap"
    key = crypto.load_or_make_key(tmp_path / "keys", crypto.VEHICLE)
    f = mcapio.McapFile(path, {"region": "sim", "config": "{}"}, auth_key=key)
    f.write("/events", 1, 1, b'{"kind": "operator", "reason": "", "frame_id": 0, "t_ns": 1}')
    f.close()
    assert cli.main(["replay", str(path), "--keys", str(tmp_path / "keys")]) == 2
    assert "no frames to replay" in capsys.readouterr().err


# -- replay never drives a vehicle; it replays only what authenticates (issue 17, points 1 and 6) ---------
def _with_stored_config(path: Path, dst: Path, vehicle_key: bytes | None, **sections: dict) -> Path:
    """The recording as a vehicle running another config would have written it (re-authenticated with
    its vehicle key), or, without the key, as someone editing the file would leave it."""
    from test_residency_auth import rewrite_metadata

    from edgert.runtime.config import PipelineConfig

    stored = PipelineConfig.from_json(mcapio.read_metadata(path)["config"]).replace(**sections)
    return rewrite_metadata(path, dst, key=vehicle_key, config=stored.to_json())


def _hostile(recording, tmp_path: Path, channel: str, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """A recording whose stored config drives a CAN bus and listens on tcp 0.0.0.0, authenticated by the
    vehicle key (a car really ran it so); this machine's default config is the test's local one."""
    from edgert.runtime import replay

    path, root, keys = recording
    monkeypatch.setattr(replay, "DEFAULT_CONFIG", local_toml(root, keys, tmp_path / "local.toml"), raising=False)
    key = crypto.load_key(root / "fleet-keys", crypto.VEHICLE)
    return _with_stored_config(path, tmp_path / "hostile.mcap", key,
                               control={"can_interface": "virtual", "can_channel": channel, "deadline_ms": 200.0},
                               pipeline={"transport": "tcp", "tcp_host": "0.0.0.0", "tcp_base_port": 47110,
                                         "curve": True})  # a valid config: off loopback, tcp needs CURVE


def test_replay_sends_nothing_on_the_can_bus_its_recording_names(recording, tmp_path, monkeypatch):
    """The stored config enables CAN output on a (python-can virtual) bus: in threads mode the control
    stage would send on it from this very process, where a listener waits on that channel."""
    import uuid

    import can

    channel = f"edgert-replay-{uuid.uuid4().hex[:8]}"
    hostile = _hostile(recording, tmp_path, channel, monkeypatch)
    rx = can.Bus(interface="virtual", channel=channel)
    try:
        r = run_replay(hostile, speed=0.0, mode="threads", work_dir=tmp_path)  # as `edgert replay FILE` does
        got = rx.recv(1.0)
    finally:
        rx.shutdown()
    assert r.ok and r.compared > 0, format_report(r)  # the replay ran, and compared outputs
    assert got is None, f"the replay sent {got} on the recording's CAN bus"


def test_replay_listens_on_ipc_only_whatever_its_recording_says(recording, tmp_path, monkeypatch):
    """The stored config says tcp on 0.0.0.0: the replay's stage processes still bind ipc:// only,
    seen from the outside (psutil: every socket of every stage process while they run)."""
    import psutil

    hostile = _hostile(recording, tmp_path, "unused", monkeypatch)
    sups = _watch_supervisors(monkeypatch)
    seen: dict[str, list] = {"inet": [], "unix": [], "stages": []}
    done = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not done.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    seen["inet"] += [c for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
                    if p is not me:
                        seen["unix"] += p.net_connections("unix")
                        seen["stages"].append(p.name())
                except psutil.Error:  # it ended meanwhile
                    pass
            done.wait(0.25)  # light: the replay's recorder runs at SCHED_IDLE, on what CPU is left
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        r = run_replay(hostile, speed=1.0, mode="processes", work_dir=tmp_path)
    finally:
        done.set()
        t.join(10)
    assert r.compared > 0, format_report(r)
    cfg = sups[0].cfg
    assert cfg.pipeline.transport == "ipc" and cfg.control.can_interface == "" and cfg.control.can_channel == ""
    assert {"edgert-infer", "edgert-control"} <= set(seen["stages"]), seen["stages"]  # watched while they ran
    assert seen["unix"], "no ipc socket seen: the watcher saw no stage at work"
    assert seen["inet"] == [], f"listening beyond ipc: {seen['inet']}"


def test_replay_refuses_a_recording_whose_metadata_was_edited(recording, tmp_path, capsys):
    """Edited without the vehicle key (here: its stored config), or from another vehicle: refused before
    anything starts, with the reason."""
    path, root, keys = recording
    edited = _with_stored_config(path, tmp_path / "edited.mcap", None, control={"can_interface": "virtual",
                                                                                "can_channel": "x",
                                                                                "deadline_ms": 200.0})
    with pytest.raises(ValueError, match=r"edited.mcap: its metadata was edited after recording"):
        run_replay(edited, local_config(root, keys), speed=0.0, mode="threads", work_dir=tmp_path)
    conf = str(local_toml(root, keys, tmp_path / "local.toml"))
    assert cli.main(["replay", str(edited), "--config", conf]) == 2
    assert "its metadata was edited after recording" in capsys.readouterr().err
    assert cli.main(["replay", str(path), "--config", conf, "--keys", str(tmp_path / "other-keys")]) == 2
    assert "no vehicle key at" in capsys.readouterr().err
    assert list(tmp_path.glob("edgert-replay.*")) == []


def test_the_recorded_model_is_read_from_a_config_this_version_would_refuse():
    """A recording made by an older edgert stores keys this one refuses (pipeline.spin_us, since
    removed); the replay needs only the model's name from it, so the rest must not stop it."""
    from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, PipelineConfig, load
    from edgert.runtime.replay import recorded_model

    stored = json.loads(load(DEFAULT_CONFIG).to_json())
    stored["config"]["pipeline"]["spin_us"] = 0  # what every recording before its removal carries
    with pytest.raises(ConfigError, match="spin_us was removed"):
        PipelineConfig.from_json(json.dumps(stored))
    assert recorded_model({"config": json.dumps(stored)}) == "pilotnet"
    assert recorded_model({"config": "{not json"}) is None and recorded_model({}) is None
