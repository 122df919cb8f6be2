"""The public node API: [[nodes]] in a config, the docs' example node in a real pipeline, and the
errors a user sees for a wrong entry point, a node that fails in setup, and one that hangs."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHARED_MACHINE_CONTROL

import edgert
from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, from_dict, load
from edgert.runtime.node import Node, resolve_nodes
from edgert.runtime.stages.control import ControlStage
from edgert.runtime.supervisor import StageFailed, Supervisor
from edgert.runtime.topics import TOPICS, USER_TOPICS

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout
DOC = PROJECT_ROOT / "docs" / "nodes.md"

# A node that reads the example's topic and writes what it got to a file (params.out): the test's probe.
SINK = '''

class StatsSink(edgert.Node):
    inputs = ("steer_stats",)
    latest_only = False

    def setup(self):
        self.got = []

    def on_message(self, topic, msg):
        self.got.append([float(v) for v in msg["values"][: int(msg["n_values"])]])
        tmp = self.params["out"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"topic": topic, "stats": self.got}, f)
        os.replace(tmp, self.params["out"])


class FailsInSetup(edgert.Node):
    inputs = ("results",)

    def setup(self):
        raise FileNotFoundError("calibration file /etc/cal.json not found")


class HangsInCallback(edgert.Node):
    inputs = ("commands",)  # they flow once the pipeline runs: the node has been seen running by then

    def on_message(self, topic, msg):
        time.sleep(3600)


class BlocksInCallback(edgert.Node):
    inputs = ("commands",)

    def on_message(self, topic, msg):
        self.ctx.stop.wait(3600)  # blocks as a hung callback would, yet lets the test's run end


class HangsInSetup(edgert.Node):
    def setup(self):
        time.sleep(3600)


class NotANode:
    pass
'''


def doc_example() -> str:
    """The python block of docs/nodes.md that defines the example node."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return next(b for b in blocks if "class SteerMonitor" in b)


@pytest.fixture
def user_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The docs' example plus the test's nodes as an importable module, here and in stage processes."""
    mod = f"usernodes_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{mod}.py").write_text("import json\nimport os\nimport time\n" + doc_example() + SINK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    yield mod
    resolve_nodes(load(DEFAULT_CONFIG))  # drop the run's user topics from the table


def with_nodes(*nodes: dict, **sections: dict):  # type: ignore[no-untyped-def]
    raw = load(DEFAULT_CONFIG).to_dict()
    for sec, values in sections.items():
        raw[sec].update(values)
    raw["nodes"] = list(nodes)
    return from_dict(raw, base_dir=PROJECT_ROOT)


def test_the_public_api_is_importable_from_edgert():
    assert edgert.Node is Node and issubclass(ControlStage, edgert.Node)  # the built-ins run on it
    assert edgert.MsgType.RESULT.name == "RESULT"


@pytest.mark.parametrize("node,message", [
    ({"name": "a", "entry": "m:C", "color": "red"}, "unknown key 'nodes[0].color'"),
    ({"entry": "m:C"}, "nodes[0].name: required"),
    ({"name": "control", "entry": "m:C"}, "the name of a built-in stage"),
    ({"name": "Bad Name", "entry": "m:C"}, "a node name is 1 to 16 lower-case"),
    ({"name": "a", "entry": "m.C"}, "is not 'package.module:Class'"),
    ({"name": "a", "entry": "m:C", "inputs": "commands"}, "expected a list"),
    ({"name": "a", "entry": "m:C", "params": {"when": {"x": 1}}}, "a parameter is a string, number"),
])
def test_config_refuses_a_bad_nodes_table_naming_the_fix(node, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_nodes(node)


def test_config_refuses_two_nodes_with_one_name_and_round_trips_a_good_one():
    with pytest.raises(ConfigError, match="two nodes with this name"):
        with_nodes({"name": "a", "entry": "m:C"}, {"name": "a", "entry": "m:D"})
    cfg = with_nodes({"name": "mon", "entry": "m:C", "inputs": ["commands"], "params": {"window": 3, "k": [1.5]}},
                     pipeline={"affinity": {"mon": [0]}})
    back = type(cfg).from_json(cfg.to_json())
    assert back.nodes == cfg.nodes and back.nodes[0].params == {"window": 3, "k": [1.5]}
    assert back.replace(pipeline={"mode": "threads"}).nodes == cfg.nodes


@pytest.mark.parametrize("entry,inputs,message", [
    ("no_such_pkg.nodes:X", [], "no module 'no_such_pkg'; install the package"),
    ("{mod}:Missing", [],
     "has no 'Missing'; its nodes are: BlocksInCallback, FailsInSetup, HangsInCallback, HangsInSetup, StatsSink, "
     "SteerMonitor"),
    ("{mod}:NotANode", [], "NotANode is not an edgert.Node; subclass it"),
    ("{mod}:SteerMonitor", ["comands"], "input 'comands' is not a topic; topics are: frames"),
    ("{mod}:SteerMonitor", ["heartbeat"], "read by the supervisor alone"),
])
def test_a_wrong_entry_point_or_input_stops_the_run_before_any_stage_starts(user_nodes, entry, inputs, message):
    cfg = with_nodes({"name": "mine", "entry": entry.format(mod=user_nodes), "inputs": inputs})
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        Supervisor(cfg, duration_s=1.0)
    assert "'mine'" in str(e.value)


def test_an_output_may_not_take_a_builtin_or_another_nodes_topic(user_nodes):
    two = with_nodes({"name": "m1", "entry": f"{user_nodes}:SteerMonitor"},
                     {"name": "m2", "entry": f"{user_nodes}:SteerMonitor"})
    with pytest.raises(ConfigError, match="'m2': output 'steer_stats': topic already published by 'm1'"):
        resolve_nodes(two)
    one = with_nodes({"name": "m1", "entry": f"{user_nodes}:SteerMonitor"})
    resolve_nodes(one)
    resolve_nodes(one)  # a second run in the same process registers the same topics again
    assert TOPICS["steer_stats"].publisher == "m1" and USER_TOPICS == {"steer_stats"}
    assert list(TOPICS)[-1] == "steer_stats"  # after the built-ins: their tcp ports do not move


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_the_docs_example_node_runs_in_a_pipeline(user_nodes, tmp_path, mode):
    """The example from docs/nodes.md, declared in [[nodes]], reads every command of a real closed
    loop and publishes its statistics on its own topic, which a second node reads."""
    out = tmp_path / "stats.json"
    cfg = with_nodes({"name": "steer_monitor", "entry": f"{user_nodes}:SteerMonitor", "params": {"window": 10}},
                     {"name": "stats_sink", "entry": f"{user_nodes}:StatsSink", "params": {"out": str(out)}},
                     control=SHARED_MACHINE_CONTROL)
    s = Supervisor(cfg, duration_s=4.0, mode=mode).run()
    assert s["exit_reason"] == "duration 4 s reached", s
    mon, sink = s["stages"]["steer_monitor"], s["stages"]["stats_sink"]
    assert mon["frames"] >= 10 and mon["errors"] == mon["rejected"] == mon["restarts"] == 0, mon
    assert sink["frames"] >= 1 and sink["errors"] == sink["rejected"] == sink["restarts"] == 0, sink
    got = json.loads(out.read_text())
    assert got["topic"] == "steer_stats" and len(got["stats"]) == sink["frames"]
    max_steer = cfg.control.max_steer_rad
    for mean, biggest, takeovers in got["stats"]:
        assert 0 <= mean <= biggest <= max_steer + 1e-6 and takeovers >= 0
    # one window's statistics per 10 commands the monitor handled (the last window may still be open)
    assert len(got["stats"]) <= mon["frames"] // 10
    assert s["leaked_segments"] == []


def test_a_node_that_raises_in_setup_stops_the_start_naming_it(user_nodes, caplog):
    cfg = with_nodes({"name": "calib", "entry": f"{user_nodes}:FailsInSetup"}, control=SHARED_MACHINE_CONTROL)
    with caplog.at_level(logging.ERROR), pytest.raises(StageFailed, match="stage calib failed during start-up"):
        Supervisor(cfg, duration_s=4.0, mode="threads").run()
    logged = [r for r in caplog.records if r.name == "edgert.calib"]
    assert logged and "calibration file /etc/cal.json not found" in (logged[0].exc_text or ""), caplog.text


def test_a_node_hung_in_setup_stops_the_start_naming_it(user_nodes):
    cfg = with_nodes({"name": "slow_setup", "entry": f"{user_nodes}:HangsInSetup"},
                     pipeline={"ready_timeout_s": 6.0}, control=SHARED_MACHINE_CONTROL)
    # the other stages may be slow to start on a loaded machine and named too: only slow_setup must be
    with pytest.raises(StageFailed, match=r"stages not ready after 6 s: .*slow_setup.*fix a setup that never returns"):
        Supervisor(cfg, duration_s=4.0, mode="processes").run()


def test_a_node_hung_in_its_callback_is_killed_and_restarted(user_nodes, caplog):
    cfg = with_nodes({"name": "hangs", "entry": f"{user_nodes}:HangsInCallback"},
                     control=SHARED_MACHINE_CONTROL)
    sup = Supervisor(cfg, duration_s=600.0, mode="processes")

    def stop_after_a_restart() -> None:
        deadline = time.monotonic() + 600  # only a bound for a hung test (a loaded machine starts slowly)
        while sup.status["hangs"].restarts < 1 and time.monotonic() < deadline and not sup.stop_requested.is_set():
            time.sleep(0.05)
        sup.stop_requested.set()
    t = threading.Thread(target=stop_after_a_restart, daemon=True)
    t.start()
    with caplog.at_level(logging.ERROR, logger="edgert.supervisor"):
        s = sup.run()
    t.join()
    assert s["stages"]["hangs"]["hung"] >= 1 and s["stages"]["hangs"]["restarts"] >= 1, s["stages"]
    hung = [r.getMessage() for r in caplog.records if "stage hangs sent no heartbeat" in r.getMessage()]
    assert hung and "docs/nodes.md" in hung[0], caplog.text
    assert s["stages"]["control"]["restarts"] == 0  # the pipeline ran on
    assert s["leaked_segments"] == []


def test_a_node_hung_in_its_callback_in_threads_mode_is_reported(user_nodes, caplog):
    """A thread cannot be killed: the supervisor names the silent node and the fix, and runs on."""
    cfg = with_nodes({"name": "blocks", "entry": f"{user_nodes}:BlocksInCallback"}, control=SHARED_MACHINE_CONTROL)
    sup = Supervisor(cfg, duration_s=600.0, mode="threads")

    def reported() -> bool:
        return any("stage blocks sent no heartbeat" in r.getMessage() for r in caplog.records)

    def stop_once_reported() -> None:
        deadline = time.monotonic() + 600  # only a bound for a hung test
        while not reported() and time.monotonic() < deadline and not sup.stop_requested.is_set():
            time.sleep(0.05)
        sup.stop_requested.set()
    t = threading.Thread(target=stop_once_reported, daemon=True)
    t.start()
    with caplog.at_level(logging.ERROR, logger="edgert.supervisor"):
        s = sup.run()
    t.join()
    msg = next(r.getMessage() for r in caplog.records if "stage blocks sent no heartbeat" in r.getMessage())
    assert "a thread cannot be killed" in msg and "docs/nodes.md" in msg, msg
    assert s["stages"]["control"]["restarts"] == 0 and s["leaked_segments"] == []


def test_edgert_echo_prints_a_nodes_own_topic(user_nodes):
    """A node's output topic exists only in its run's config: `edgert echo` learns it from there."""
    cfg = with_nodes({"name": "steer_monitor", "entry": f"{user_nodes}:SteerMonitor", "params": {"window": 5}},
                     control=SHARED_MACHINE_CONTROL)
    sup = Supervisor(cfg, duration_s=600.0, mode="processes")
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        assert sup.running.wait(300), "the pipeline never started"
        echo = subprocess.run([sys.executable, "-m", "edgert.runtime.cli", "echo", "steer_stats", "--run", sup.run_id,
                               "--count", "2"], capture_output=True, text=True, timeout=120)
    finally:
        sup.request_stop("test done")
        runner.join(60)
    msgs = [json.loads(line) for line in echo.stdout.splitlines()]
    assert echo.returncode == 0 and len(msgs) == 2, echo.stderr
    assert all(m["n_values"] == 3 for m in msgs), msgs
