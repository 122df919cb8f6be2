"""Telemetry holds bounded memory however long a run lasts (duration_s = 0 runs for hours)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zmq

from edgert.runtime import wire
from edgert.runtime.stats import LatencyStats, Samples, summarize_ns
from edgert.runtime.telemetry import SEGMENTS, TAKEOVERS_KEPT, Telemetry
from edgert.runtime.wire import CommandFlags, MsgType, Stamp, TakeoverReason

HOURS = 2.0
RATE_HZ = 30.0  # a camera's: 216 000 commands and as many vehicle messages in two hours


class _Synthetic:
    """Command and vehicle messages as the pipeline sends them, with made-up but plausible stamps."""

    def __init__(self) -> None:
        self.cmd = wire.new_message(MsgType.COMMAND)
        self.veh = wire.new_message(MsgType.VEHICLE)
        self.rng = np.random.default_rng(0)
        self.t_ns = 10**12

    def command(self, i: int) -> bytes:
        c = self.cmd
        self.t_ns += int(1e9 / RATE_HZ)
        step = self.rng.integers(50_000, 3_000_000, size=len(SEGMENTS))
        stamps = self.t_ns + np.concatenate([[0], np.cumsum(step)])
        c["seq"], c["frame_id"], c["steer"] = i + 1, i + 1, 0.01
        c["stamps"][:] = 0
        c["stamps"][[Stamp.CAPTURE, Stamp.PRE_RECV, Stamp.PRE_DONE, Stamp.INFER_RECV, Stamp.INFER_DONE,
                     Stamp.CTRL_RECV, Stamp.CTRL_SEND]] = stamps
        failsafe = i % 200 >= 190  # a takeover every 200 commands: their list must stay bounded too
        c["flags"] = int(CommandFlags.FAILSAFE | CommandFlags.TAKEOVER) if failsafe else 0
        c["reason"] = int(TakeoverReason.DEADLINE) if failsafe else 0
        return wire.encode(c)

    def vehicle(self, i: int) -> bytes:
        v = self.veh
        v["frame_id"], v["t_ns"] = i + 1, self.t_ns
        v["lateral"] = 0.9 * math.sin(i / 50)  # leaves the lane now and then: departures are listed
        v["cmd_age_ns"] = 20_000_000 + i % 1000
        return wire.encode(v)


def _drive(hours: float, traced: int = 0) -> None:
    """`hours` of a 30 Hz camera through the real receive path; resident memory must not grow.
    With `traced` > 0, the first `traced` commands after the warm-up also run under tracemalloc:
    every Python and NumPy allocation they keep is counted, so a leak of one float a command
    shows in a few thousand commands (tracemalloc makes this path several times slower, so it
    watches a window, and RSS the whole run)."""
    import tracemalloc

    import psutil

    proc = psutil.Process()
    ctx = zmq.Context()
    tel = Telemetry(ctx, None, max_steer=0.5, lane_half_margin_m=0.8, deadline_ns=10**15,  # type: ignore[arg-type]
                    stamp_window=4096)
    gen = _Synthetic()
    n = int(hours * 3600 * RATE_HZ)
    warm = 3 * 4096  # the stamp window is full: from here on nothing may grow
    for i in range(warm):
        tel._on_command(gen.command(i))
        tel._on_vehicle(gen.vehicle(i))
    before = proc.memory_info().rss
    if traced:
        tracemalloc.start()
        try:
            t0, _ = tracemalloc.get_traced_memory()
            for i in range(warm, warm + traced):
                tel._on_command(gen.command(i))
                tel._on_vehicle(gen.vehicle(i))
            kept = tracemalloc.get_traced_memory()[0] - t0
        finally:
            tracemalloc.stop()
        # measured: 5 to 8 KB over 3000 commands (bounded tables filling); one float64 kept a command is 96 KB
        assert kept < 48 * 1024, f"{kept} bytes kept over {traced} commands ({kept / traced:.1f} a command)"
    for i in range(warm + traced, n):
        tel._on_command(gen.command(i))
        tel._on_vehicle(gen.vehicle(i))
    after = proc.memory_info().rss
    s = tel.summary()
    ctx.term()
    # what grew with the run before: 8 float64 stamps a command, a lane error and an age a vehicle
    # message (80 bytes a command: 4.3 MB in half an hour, 17 MB in two hours)
    assert after - before < 2 * 2**20, f"resident memory grew {(after - before) / 2**20:.1f} MiB over {n - warm} commands"
    assert s["commands"]["commands"] == n and s["lane"]["frames"] == n
    assert s["end_to_end"]["n"] == s["commands"]["model_commands"] > 0.9 * n
    assert s["commands"]["takeover_events"] == n // 200 and len(s["takeovers"]) == TAKEOVERS_KEPT
    assert tel.stamps.n == s["commands"]["model_commands"] and len(tel.stamps.data) == 4096


def test_a_quarter_hour_of_commands_keeps_telemetry_memory_flat():
    """A quarter of an hour (27 000 commands), with every allocation of 3000 of them counted: the
    default run's version of the two-hour drive below (an eighth of its time)."""
    _drive(0.25, traced=3000)


@pytest.mark.slow  # about 70 s on 2 cores; test_a_quarter_hour_of_commands_keeps_telemetry_memory_flat runs by default
@pytest.mark.timeout(900)
def test_hours_of_commands_keep_telemetry_memory_flat():
    """Two hours of a 30 Hz camera through the real receive path; resident memory must not grow.
    (tracemalloc would say the same, but makes this path several times slower.)"""
    _drive(HOURS)


def test_telemetry_summary_matches_exact_statistics_to_the_stated_resolution():
    ctx = zmq.Context()
    tel = Telemetry(ctx, None, max_steer=0.5, lane_half_margin_m=0.8, deadline_ns=10**15)  # type: ignore[arg-type]
    gen = _Synthetic()
    for i in range(5000):
        tel._on_command(gen.command(i))
        tel._on_vehicle(gen.vehicle(i))
    s = tel.summary()
    ctx.term()
    st = tel.stamps.data.astype(np.int64)  # all of them: under the window
    exact = summarize_ns(st[:, Stamp.CTRL_SEND] - st[:, Stamp.CAPTURE])
    for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms"):
        assert s["end_to_end"][k] == pytest.approx(exact[k], rel=0.025), k  # one bucket: 2.3 %
    assert s["end_to_end"]["max_ms"] == exact["max_ms"] and s["end_to_end"]["mean_ms"] == pytest.approx(exact["mean_ms"])
    for name, a, b in SEGMENTS:
        assert s["stage_latency"][name]["p50_ms"] == pytest.approx(np.median(st[:, b] - st[:, a]) / 1e6, rel=0.025)
    lat = 0.9 * np.sin(np.arange(5000) / 50)
    assert s["lane"]["rms_m"] == pytest.approx(np.sqrt((lat ** 2).mean()))
    assert s["lane"]["max_abs_m"] == pytest.approx(np.abs(lat).max())


def test_latency_stats_percentiles_within_half_a_bucket_of_the_exact_ones():
    rng = np.random.default_rng(3)
    x = rng.lognormal(math.log(2e6), 0.5, 100_000)
    ls = LatencyStats()
    for v in x.tolist():
        ls.record(v)
    exact, got = summarize_ns(x), ls.summary()
    for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms"):
        assert got[k] == pytest.approx(exact[k], rel=0.0235), k
    assert got["n"] == exact["n"] and got["max_ms"] == exact["max_ms"]
    assert got["mean_ms"] == pytest.approx(exact["mean_ms"])
    assert math.isnan(LatencyStats().summary()["p50_ms"])


def test_a_limited_samples_buffer_keeps_the_newest_rows():
    s = Samples(width=2, capacity=2, limit=5)
    for i in range(12):
        s.append([i, -i])
    assert s.n == 12 and s.data[:, 0].tolist() == [7, 8, 9, 10, 11]
    assert s.rows(8, 11)[:, 0].tolist() == [8, 9, 10]
    with pytest.raises(ValueError, match="rows 3..9 requested, rows 7..12 held"):
        s.rows(3, 9)
