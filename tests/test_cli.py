"""The command line: one module per command group, bad input -> exit 2 with its message, a bug ->
its traceback (never dressed up as a usage error)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import edgert
from edgert.runtime import cli
from edgert.runtime.errors import EdgertError

ROOT = Path(__file__).resolve().parent.parent


def _edgert(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgert.runtime.cli", *argv], capture_output=True, text=True,
                          timeout=120, **kw)


# -- the package ------------------------------------------------------------------------------
def test_one_module_per_command_group_each_adds_its_parser():
    """Every module of runtime/cli/ is a registered command group with add_parser, and the other way round."""
    modules = {m.name for m in pkgutil.iter_modules(cli.__path__)} - {"__main__"}
    assert modules == set(cli.COMMANDS)
    for name in cli.COMMANDS:
        mod = importlib.import_module(f"edgert.runtime.cli.{name}")
        assert callable(mod.add_parser), name
    sub = cli.build_parser()._subparsers._group_actions[0]  # the subcommands, in `edgert --help` order
    assert list(sub.choices) == list(cli.COMMANDS)


def test_python_dash_m_and_every_command_help():
    r = _edgert("--help")
    assert r.returncode == 0 and "{run,echo,doctor,cameras,models,infer,sim,fleet,replay,record,bench}" in r.stdout
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0, name


def test_mode_choices_come_from_the_config():
    from edgert.runtime.config import choices

    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--mode", "fibers"])
    assert e.value.code == 2  # argparse: a usage error, exit 2
    run = cli.build_parser()._subparsers._group_actions[0].choices["run"]
    mode = next(a for a in run._actions if a.dest == "mode")
    assert tuple(mode.choices) == choices("pipeline.mode")


# -- EdgertError ------------------------------------------------------------------------------
def _domain_errors() -> list[type]:
    """Every exception class named *Error defined in runtime/ (the source is grepped, then imported)."""
    found = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        for name in re.findall(r"^class (\w+Error)\(", path.read_text(), re.M):
            mod = ".".join(("edgert",) + path.relative_to(ROOT).with_suffix("").parts)
            cls = getattr(importlib.import_module(mod), name)
            if inspect.isclass(cls) and issubclass(cls, BaseException):
                found.append(cls)
    return found


def test_edgert_error_is_public_and_the_base_of_every_domain_error():
    from edgert.runtime.config import ConfigError
    from edgert.runtime.manifest import ModelError
    from edgert.runtime.supervisor import StageFailed

    assert edgert.EdgertError is EdgertError and "EdgertError" in edgert.__all__
    errors = _domain_errors()
    assert {"ConfigError", "ModelError", "WireError", "CanError", "KeyFileError", "PolicyError", "CryptoError",
            "ClipError", "AuditError", "AnonymiseError", "SlotError"} <= {c.__name__ for c in errors}
    for cls in [*errors, StageFailed]:
        assert issubclass(cls, EdgertError), cls
    # the second base stays, so `except ValueError` / `except RuntimeError` still catch them
    assert issubclass(ConfigError, ValueError) and issubclass(ModelError, ValueError)
    assert issubclass(StageFailed, RuntimeError)


def test_a_bad_config_value_is_exit_2_with_its_message_and_no_traceback(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[camera]\nfps = 500.0\n")
    r = _edgert("run", str(p))
    assert r.returncode == 2, r.stderr
    assert "edgert: error: camera.fps: 500.0 is outside its range 1 <= fps <= 240 frames/s" in r.stderr
    assert "Traceback" not in r.stderr


def test_domain_errors_of_several_commands_are_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # no other run on this host is looked at
    assert cli.main(["echo", "nosuchtopic"]) == 2
    assert "edgert: error: unknown topic 'nosuchtopic'; topics are: " in capsys.readouterr().err
    assert cli.main(["sim", "--scenario", "nope"]) == 2
    assert "edgert: error: unknown scenario 'nope'" in capsys.readouterr().err
    assert cli.main(["bench", "pipeline", "--scenario", "nope"]) == 2
    assert "edgert: error: unknown scenario 'nope'; scenarios: single-stream" in capsys.readouterr().err


@pytest.mark.parametrize("name, content, message", [
    ("junk.mcap", b"not a recording", "not a readable MCAP file"),
    ("clip.mcap.enc", b"ciphertext", "encrypted; `edgert fleet decrypt` it"),
])
def test_replay_of_what_is_not_a_replayable_recording_is_exit_2(tmp_path, capsys, name, content, message):
    """These were ValueErrors caught wholesale by the replay command; now domain errors, named."""
    (tmp_path / name).write_bytes(content)
    assert cli.main(["replay", str(tmp_path / name), "--keys", str(tmp_path / "keys")]) == 2
    err = capsys.readouterr().err
    assert f"edgert: error: {tmp_path / name}: " in err and message in err


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("a bug, not bad input"),
                                 KeyError("internal")])
def test_a_bug_propagates_and_is_never_a_usage_error(monkeypatch, capsys, bug):
    """Even a plain ValueError or KeyError from inside a command is a bug: it is raised, not exit 2."""
    from edgert.runtime.cli import doctor

    def broken(args):
        raise bug
    monkeypatch.setattr(doctor, "cmd_doctor", broken)
    with pytest.raises(type(bug)):
        cli.main(["doctor"])
    assert "edgert: error" not in capsys.readouterr().err


def test_a_bug_shows_its_traceback_and_exits_1(tmp_path):
    script = ("import sys\nfrom edgert.runtime import cli\nfrom edgert.runtime.cli import doctor\n"
              "doctor.cmd_doctor = lambda args: 1 / 0\nsys.exit(cli.main(['doctor']))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "ZeroDivisionError" in r.stderr
    assert "edgert: error" not in r.stderr
