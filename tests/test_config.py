"""Config: the default loads, and every kind of bad key or value is named in the error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, load


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(text)
    return p


def test_default_config_loads():
    cfg = load(DEFAULT_CONFIG)
    assert cfg.camera.width == 1920 and cfg.camera.height == 1080 and cfg.camera.fps == 30
    assert cfg.deadline_ns == pytest.approx(2e9 / 30, rel=1e-6)  # default: two frame periods
    assert (cfg.model_dir() / "manifest.toml").is_file()


@pytest.mark.parametrize("text, match", [
    ("[camera]\nfsp = 30\n", r"unknown key 'camera.fsp' \(did you mean 'fps'\?\)"),
    ("[camra]\nfps = 30\n", r"unknown key 'camra' \(did you mean 'camera'\?\)"),
    ("[camera]\nfps = 'fast'\n", r"camera.fps: expected a finite number, got 'fast'"),
    ("[camera]\nwidth = 19.5\n", r"camera.width: expected an integer"),
    ("[camera]\nfps = -1\n", r"camera.fps: must be >= 1, got -1"),
    ("[camera]\nfps = 0.5\n", r"camera.fps: must be >= 1, got 0.5; its range is 1 <= fps <= 240 frames/s"),
    ("[pipeline]\nduration_s = nan\n", r"pipeline.duration_s: expected a finite number, got nan"),
    ("[pipeline]\ntcp_base_port = 65530\n", r"pipeline.tcp_base_port: 65530 is outside its range 1024 <= tcp_base_port <= 65519"),
    ("[pipeline]\ntransport = 'tcp'\ntcp_host = '0.0.0.0'\n",
     r"pipeline.tcp_host: '0.0.0.0' is not a loopback address.*set pipeline.curve = true"),
    ("[pipeline]\ntransport = 'tcp'\ntcp_host = '10.0.0.2'\ncurve = false\n",
     r"pipeline.tcp_host: '10.0.0.2' is not a loopback address.*set pipeline.curve = true"),
    ("[pipeline]\ntransport = 'tcp'\ntcp_host = 'ecu-2.local'\n", r"pipeline.tcp_host: 'ecu-2.local' is not a loopback"),
    ("[pipeline]\ntransport = 'tcp'\ntcp_host = '::1'\n", r"pipeline.tcp_host: '::1' is an IPv6 address.*IPv4 only"),
    ("[control]\ncan_interface = 'virtual'\ncan_channel = 'x'\ndeadline_ms = 300\n",
     r"control.deadline_ms: 300 ms .* with CAN output.*set control.deadline_ms below 255"),
    ("[camera]\nfps = 5\n[control]\ncan_interface = 'virtual'\ncan_channel = 'x'\n",
     r"control.deadline_ms: 400 ms \(0 = two frame periods\) with CAN"),
    ("[camera]\npool_slots = 1\n", r"camera.pool_slots: must be >= 2, got 1"),
    ("[pipeline]\nmode = 'fibers'\n", r"pipeline.mode: 'fibers' is not one of 'processes', 'threads'"),
    ("[pipeline]\nduration_s = -5\n", r"pipeline.duration_s: must be >= 0"),
    ("[pipeline]\nmailbox = 1\n", r"pipeline.mailbox: expected true or false"),
    ("[pipeline.affinity]\ninfer = [999]\n", r"pipeline.affinity.infer: cores \[999\] invalid"),
    ("[pipeline.affinity]\ninfre = [0]\n", r"unknown key 'pipeline.affinity.infre' \(did you mean 'infer'\?\)"),
    ("[infer]\nmodel = 'nosuchmodel'\n", r"infer.model: no manifest.toml in .*nosuchmodel.*zoo's: pilotnet"),
    ("[infer]\nproviders = []\n", r"infer.providers: empty"),
    ("camera = 3\n", r"\[camera\] must be a table"),
    ("[camera\n", r"not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load(_write(tmp_path, text))


@pytest.mark.parametrize("text", [
    "[pipeline]\ntransport = 'tcp'\n",  # 127.0.0.1 by default
    "[pipeline]\ntransport = 'tcp'\ntcp_host = 'localhost'\n",
    "[pipeline]\ntransport = 'tcp'\ntcp_host = '10.0.0.2'\ncurve = true\n",  # authenticated: fine
    "[pipeline]\ntransport = 'ipc'\ntcp_host = '10.0.0.2'\n",  # no tcp: the host is unused
])
def test_tcp_is_loopback_or_curve(tmp_path, text):
    load(_write(tmp_path, text))

@pytest.mark.parametrize("text, key", [
    ("[pipeline]\nspin_us = 0\n", "pipeline.spin_us"),
    ("[pipeline]\nwarm_us = 1500\n", "pipeline.warm_us"),
    ("[infer]\nwarm_run = false\n", "infer.warm_run"),
])
def test_a_removed_latency_knob_is_refused_with_what_to_do(tmp_path, text, key):
    """Removed, not silently ignored: a config written for them would otherwise run differently
    from what its author reads in it. Even the old default value is refused."""
    with pytest.raises(ConfigError, match=rf"^{key} was removed \(.*no gain in full benchmarks.*\): delete the key"):
        load(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found; the default closed loop is"):
        load(tmp_path / "absent.toml")


def test_relative_model_path_resolves_against_the_config_file(tmp_path):
    model = Path(DEFAULT_CONFIG).parent.parent / "models" / "pilotnet"
    (tmp_path / "m").symlink_to(model)
    cfg = load(_write(tmp_path, "[infer]\nmodel = './m'\n"))
    assert cfg.model_dir().resolve() == model.resolve()


def test_cli_reports_config_error_and_exits_2(tmp_path):
    p = _write(tmp_path, "[control]\nmax_steer_rad = 0\n")
    r = subprocess.run([sys.executable, "-m", "edgert.runtime.cli", "run", str(p)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "control.max_steer_rad: must be > 0, got 0" in r.stderr


# -- upper bounds a safety review accepts (beside each field in runtime/config.py, docs/config.md) ----
def _bounds():
    """Every key with an upper bound, read from the Limits declared beside its field."""
    import dataclasses

    from edgert.runtime.config import _SECTIONS

    return sorted((f"{sec}.{f.name}", f.metadata["limits"]) for sec, cls in _SECTIONS.items()
                  for f in dataclasses.fields(cls) if "limits" in f.metadata and f.metadata["limits"].le is not None)


@pytest.mark.parametrize("key, lim", _bounds(), ids=[k for k, _ in _bounds()])
def test_a_value_above_its_upper_bound_is_refused_with_its_range(key, lim):
    from edgert.runtime.config import from_dict

    hi, unit = lim.le, lim.unit
    section, name = key.split(".")
    over = hi + 1 if isinstance(hi, int) else hi * 1.01
    with pytest.raises(ConfigError, match=rf"^{key}: {over!r} is outside its range (\S+ <=? )?{name} <= {hi:g}"
                                          rf"( {unit.replace('^', '.')})?"):
        from_dict({section: {name: over}})


def test_the_safety_bounds_are_declared():
    """The control bounds docs/config.md promises, and the memory bounds, are there (a field that
    lost its Limits would pass the test above by not being in it)."""
    keys = {k for k, _ in _bounds()}
    assert {"control.deadline_ms", "control.max_steer_rad", "control.plausible_steer_rad",
            "control.max_steer_rate_rad_s", "control.failsafe_decel_mps2", "camera.fps", "camera.width",
            "camera.pool_slots", "infer.pool_slots", "record.ring_mb", "sim.speed_mps"} <= keys


@pytest.mark.parametrize("key, module, registry", [
    ("camera.source", "edgert.runtime.sources", lambda m: tuple(m.CAPTURE_SOURCES)),
    ("infer.profile", "edgert.runtime.profiles", lambda m: m.PROFILES),
    ("sim.scenario", "edgert.runtime.sim.scenarios", lambda m: ("", *m.names())),  # "" = the seeded road
    ("record.compression", "edgert.runtime.fleet.mcapio", lambda m: tuple(m.COMPRESSION)),
])
def test_choices_come_from_their_registry(key, module, registry):
    import importlib

    from edgert.runtime.config import choices, from_dict

    assert choices(key) == tuple(registry(importlib.import_module(module)))
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"^{key}: 'nope' is not one of "):
        from_dict({section: {name: "nope"}})


def test_affinity_stages_come_from_the_stage_registry():
    from edgert.runtime.config import from_dict
    from edgert.runtime.stages import _CLASSES

    with pytest.raises(ConfigError, match=r"unknown key 'pipeline.affinity.infre' \(did you mean 'infer'\?\); "
                                          r"allowed here: " + ", ".join(_CLASSES)):
        from_dict({"pipeline": {"affinity": {"infre": [0]}}})


@pytest.mark.parametrize("section, values", [
    ("control", {"deadline_ms": 500.0, "max_steer_rad": 0.6, "plausible_steer_rad": 1.0,
                 "max_steer_rate_rad_s": 2.0, "failsafe_decel_mps2": 5.0}),
    ("camera", {"fps": 240.0, "width": 7680, "height": 4320}),
    ("sim", {"speed_mps": 70.0, "actuator_timeout_ms": 1000.0}),
])
def test_values_at_their_upper_bounds_are_accepted(section, values):
    from edgert.runtime.config import from_dict

    cfg = from_dict({section: values})
    assert all(getattr(getattr(cfg, section), k) == v for k, v in values.items())


def test_the_derived_deadline_is_bounded_too():
    from edgert.runtime.config import from_dict

    with pytest.raises(ConfigError, match=r"control.deadline_ms: 0 means two frame periods, 1000 ms at camera.fps = 2: "
                                          r"outside its range 0 <= deadline_ms <= 500 ms"):
        from_dict({"camera": {"fps": 2.0}})
    assert from_dict({"camera": {"fps": 2.0}, "control": {"deadline_ms": 400.0}}).deadline_ns == 400_000_000
