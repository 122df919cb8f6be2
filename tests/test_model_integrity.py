"""The signature covers what runs: the run's manifest is pinned at start, caches are authenticated.

The supervisor approves the manifest once and pins its sha256; a stage that restarts after the
manifest was edited (even re-signed by a trusted publisher) refuses to start, with the reason,
instead of running a decoder nobody approved for this run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import StageHarness

from edgert.runtime import signing
from edgert.runtime.config import DEFAULT_CONFIG, MODELS_DIR, from_dict, load
from edgert.runtime.manifest import ModelError, load_manifest
from edgert.runtime.stage import StageContext
from edgert.runtime.stages.control import ControlStage
from edgert.runtime.stages.infer import InferStage
from edgert.runtime.stages.preprocess import PreprocessStage
from edgert.runtime.supervisor import Supervisor
from edgert.runtime.wire import StageState


@pytest.fixture
def pilotnet_signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The shipped pilotnet, re-published by a test publisher: (model dir, private key, trusted keys dir)."""
    priv, pub = signing.keygen(tmp_path / "keys", "test-pub")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(pub, trusted)
    d = tmp_path / "pilotnet"
    d.mkdir()
    for f in ("model.onnx", "manifest.toml"):
        shutil.copy(MODELS_DIR / "pilotnet" / f, d / f)
    text = (d / "manifest.toml").read_text()
    (d / "manifest.toml").write_text(text.replace('publisher = "edgert-sim"', 'publisher = "test-pub"'))
    signing.sign(d, priv)
    return d, priv, trusted


def _edit_decoder_and_resign(d: Path, priv: Path) -> str:
    """A new decoder (10x the steering), validly signed: only the run's pin can refuse it. Returns its sha256."""
    text = (d / "manifest.toml").read_text()
    assert "scale = 1.0\n" in text
    (d / "manifest.toml").write_text(text.replace("scale = 1.0\n", "scale = 10.0\n"))
    signing.sign(d, priv)
    assert load_manifest(d).decoder.scale == 10.0
    return _sha(d)


def _sha(d: Path) -> str:
    return hashlib.sha256((d / "manifest.toml").read_bytes()).hexdigest()


@pytest.mark.timeout(400)  # a whole pipeline and three refused restarts, on a shared machine
def test_edited_manifest_mid_run_keeps_killed_control_from_coming_back(pilotnet_signed, tmp_path, capfd):
    """processes mode: edit (and re-sign) manifest.toml while the pipeline runs, SIGKILL control:
    every restart refuses the new manifest, naming the file and both hashes, and the run ends
    (nothing would command the car) instead of control running with the new decoder."""
    d, priv, trusted = pilotnet_signed
    pinned = _sha(d)
    cfg = load(DEFAULT_CONFIG).replace(infer={"model": str(d), "trusted_keys": str(trusted),
                                              "cache_dir": str(tmp_path / "cache")})
    sup = Supervisor(cfg, duration_s=90.0, mode="processes")
    seen: dict[str, object] = {}

    def editor() -> None:
        while not sup.running.is_set():
            time.sleep(0.05)
        control = sup.handles["control"]
        while sup.status["control"].state != StageState.RUNNING and not sup.stop_requested.is_set():
            time.sleep(0.05)
        seen["new_sha"] = _edit_decoder_and_resign(d, priv)
        seen["pid"] = control.pid
        os.kill(control.pid, signal.SIGKILL)
        # from now on control must never report READY or RUNNING again
        while not sup.stop_requested.is_set():
            if sup.status["control"].pid not in (0, seen["pid"]) and \
                    sup.status["control"].state in (StageState.READY, StageState.RUNNING):
                seen["came_back"] = sup.status["control"].pid
            time.sleep(0.02)
    t = threading.Thread(target=editor, daemon=True)
    t.start()
    s = sup.run()
    t.join(10)
    err = capfd.readouterr().err
    assert "pid" in seen, "control never ran"
    assert "came_back" not in seen, f"control came back (pid {seen.get('came_back')}) after the manifest changed"
    assert s["exit_reason"] == "control stage given up", s["exit_reason"]
    assert s["stages"]["control"]["given_up"] and s["stages"]["control"]["restarts"] >= 1, s["stages"]["control"]
    assert s["leaked_segments"] == []
    refusal = f"{d / 'manifest.toml'} changed after the pipeline approved it: its sha256 is now {seen['new_sha']}, " \
              f"the run pinned {pinned} at start"
    assert refusal in err, err[-3000:]
    assert err.count(refusal) == s["stages"]["control"]["restarts"]  # every restart refused, and said why


class CrashOnDemandControl(ControlStage):
    """Control that crashes once `crash` is set (a thread cannot be SIGKILLed)."""

    crash = threading.Event()

    def step(self) -> None:
        if CrashOnDemandControl.crash.is_set():
            CrashOnDemandControl.crash.clear()
            raise RuntimeError("crashed on demand")
        super().step()


@pytest.mark.timeout(400)  # a whole pipeline and three refused restarts, on a shared machine
def test_threads_mode_stages_get_the_pin_and_a_restart_refuses_the_edit(pilotnet_signed, tmp_path, caplog):
    d, priv, trusted = pilotnet_signed
    cfg = load(DEFAULT_CONFIG).replace(infer={"model": str(d), "trusted_keys": str(trusted),
                                              "cache_dir": str(tmp_path / "cache")})
    sup = Supervisor(cfg, duration_s=90.0, mode="threads",
                     stage_classes={"control": f"{__name__}:CrashOnDemandControl"})
    seen: dict[str, object] = {}

    def editor() -> None:
        while not sup.running.is_set():
            time.sleep(0.05)
        seen["new_sha"] = _edit_decoder_and_resign(d, priv)
        CrashOnDemandControl.crash.set()
    t = threading.Thread(target=editor, daemon=True)
    t.start()
    s = sup.run()
    t.join(10)
    assert s["exit_reason"] == "control stage given up", s["exit_reason"]
    assert f"its sha256 is now {seen['new_sha']}" in caplog.text
    assert "ManifestChanged" in caplog.text


def _ctx(h: StageHarness, cls: type, pin: str) -> StageContext:
    return StageContext(cls.name, h.cfg, h.run_id, h.endpoints, h.zmq, h.stop, manifest_sha256=pin)


@pytest.mark.parametrize("stage_cls", [ControlStage, PreprocessStage, InferStage])
def test_every_manifest_reading_stage_checks_the_pin(pilotnet_signed, stage_cls, tmp_path):
    """Each stage that loads the manifest refuses bytes other than the pinned ones, naming file and hashes."""
    d, priv, trusted = pilotnet_signed
    pinned = _sha(d)
    new_sha = _edit_decoder_and_resign(d, priv)
    cfg = from_dict({"infer": {"model": str(d), "trusted_keys": str(trusted), "cache_dir": "off"}})
    h = StageHarness(cfg)
    try:
        with pytest.raises(ModelError, match=f"manifest.toml changed after the pipeline approved it: its sha256 "
                                                  f"is now {new_sha}, the run pinned {pinned} at start"):
            stage_cls(_ctx(h, stage_cls, pinned)).setup()
    finally:
        h.close()


def test_pinned_manifest_loads_the_approved_bytes(pilotnet_signed):
    d, _, trusted = pilotnet_signed
    m = signing.load_approved(d, "sim", trusted)
    assert m.manifest_sha256 == _sha(d)
    assert signing.load_approved(d, "sim", trusted, pin=m.manifest_sha256).decoder.scale == 1.0
