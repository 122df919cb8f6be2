"""`edgert sim`: the closed loop as a test bench.

    edgert sim --scenario NAME [--added-latency-ms X] [--drop-rate P] [--duration S] [--mode M]
    edgert sim list
    edgert sim clip OUT.mp4 [--seconds N] [--fps F] [--codec h264|mpeg4] [--size WxH]
    edgert sim sweep [--latencies 0,50,100,...] [--scenario NAME] [--drop-rate P] --out DIR

A scenario (runtime/sim/scenarios.py) runs through the real pipeline (runtime.supervisor,
processes mode by default) and is judged against its expected outcome: exit status 0 when it
happened, 1 when not. The sweep runs one scenario at several added actuator latencies and
writes DIR/sim_sweep.json and DIR/sim_sweep.png: lane error against end-to-end latency.
Config errors are ConfigError (cli.main(): exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, PipelineConfig, choices, load
from edgert.runtime.logs import setup_logging
from edgert.runtime.sim import scenarios

log = logging.getLogger("edgert.sim")
DEFAULT_SWEEP = "0,100,200,300,400,500,600,800"
SWEEP_SCENARIO = "s_bend"


def run_scenario(cfg: PipelineConfig, name: str, added_latency_ms: float = 0.0, drop_rate: float = 0.0,
                 duration_s: float | None = None, mode: str | None = None) -> tuple[dict[str, Any], scenarios.Outcome]:
    """Run scenario `name` through the real pipeline; (the run's summary, the verdict)."""
    from edgert.runtime.supervisor import Supervisor

    scn = scenarios.get(name)
    cfg = cfg.replace(sim={"scenario": name, "added_latency_ms": added_latency_ms, "drop_rate": drop_rate})
    summary = Supervisor(cfg, duration_s=duration_s or scn.duration_s, mode=mode).run()
    summary["scenario"] = {"name": name, "added_latency_ms": added_latency_ms, "drop_rate": drop_rate}
    return summary, scenarios.judge(scn, summary, cfg.camera.fps)


def format_outcome(name: str, summary: dict[str, Any], outcome: scenarios.Outcome) -> str:
    """The scenario's part of the report: lane keeping, takeovers with reasons, latency, verdict."""
    scn = scenarios.get(name)
    lane, e2e, act = summary["lane"], summary["end_to_end"], summary.get("actuation_age", {})
    added = summary["scenario"]["added_latency_ms"]
    lines = [f"scenario {name}: {scn.description}"]
    if lane.get("frames"):
        lines.append(f"  lane-keeping error: mean {lane['mean_abs_m']:.3f} m, max {lane['max_abs_m']:.3f} m, "
                     f"departures {lane['departures']}")
    takeovers = [t for t in summary.get("takeovers", []) if t["reason"] != "SHUTDOWN"]
    for t in takeovers:
        resumed = ("not resumed" if t["resumed_after_s"] is None
                   else f"model commands resumed after {t['resumed_after_s']:.2f} s")
        lines.append(f"  takeover request: {t['reason']}; {resumed}")
    if not takeovers:
        lines.append("  takeover requests: none")
    if e2e.get("n"):
        line = (f"  latency: end-to-end (capture -> command) p50 {e2e['p50_ms']:.2f} ms, p99 {e2e['p99_ms']:.2f} ms"
                f" + added {added:g} ms")
        if act.get("n"):
            line += f"; capture -> actuated p50 {act['p50_ms']:.1f} ms (includes waiting for the next sim tick)"
        lines.append(line)
    if summary["scenario"]["drop_rate"]:
        lines.append(f"  frames dropped before publishing: {summary['stages']['capture']['dropped']}")
    verdict = "PASS" if outcome.ok else "FAIL"
    lines.append(f"  expected: {outcome.expected}\n  happened: {outcome.happened}\n  -> {verdict}")
    return "\n".join(lines)


def cmd_sim(args: argparse.Namespace) -> int:
    if args.scenario is None:
        raise ConfigError("edgert sim: name a scenario with --scenario NAME, or use `edgert sim list` / "
                          f"`edgert sim sweep`; scenarios: {', '.join(scenarios.names())}")
    cfg = load(args.config)
    _check_name(args.scenario)
    from edgert.runtime.supervisor import StageFailed, dump_json, format_summary

    setup_logging(cfg.pipeline.log_level)
    try:
        summary, outcome = run_scenario(cfg, args.scenario, args.added_latency_ms, args.drop_rate,
                                        args.duration, args.mode)
    except StageFailed as e:
        log.error("%s", e)
        return 1
    print(format_summary(summary))
    print(format_outcome(args.scenario, summary, outcome), flush=True)
    if args.report:
        dump_json({**summary, "outcome": vars(outcome)}, args.report)
        print(f"  report: {args.report}")
    return 0 if outcome.ok and not summary["leaked_segments"] else 1


def cmd_list(args: argparse.Namespace) -> int:
    w = max(map(len, scenarios.names()))
    for s in scenarios.SCENARIOS.values():
        expect = ("stays in lane" if s.expect == scenarios.IN_LANE
                  else f"hands over: {s.expect} within {s.react_frames} frames")
        print(f"{s.name:<{w}}  {s.duration_s:4.1f} s  {expect:<42} {s.description}")
    return 0


def cmd_clip(args: argparse.Namespace) -> int:
    """A road clip: the seeded road of --config driven open loop (runtime/sim/clip.py)."""
    from edgert.runtime.errors import UsageError
    from edgert.runtime.sim.clip import road_clip

    cfg = load(args.config)
    try:
        w, h = (int(v) for v in args.size.lower().split("x")) if args.size else (cfg.camera.width, cfg.camera.height)
    except ValueError:
        raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320 and w % 2 == 0 and h % 2 == 0):
        raise UsageError(f"--size {args.size}: width 16..7680 and height 16..4320, both even (yuv420p)")
    if not (0 < args.seconds <= 3600 and 1 <= args.fps <= 240):
        raise UsageError(f"--seconds {args.seconds:g} / --fps {args.fps:g}: use 0 < seconds <= 3600, 1 <= fps <= 240")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: no folder {out.parent}; create it first")
    t0 = time.monotonic()
    n = road_clip(out, cfg, args.seconds, args.fps, (w, h), args.codec)
    print(f"{out}: {n} frames, {w}x{h} at {args.fps:g} fps ({args.codec}), road seed {cfg.sim.road_seed} "
          f"driven open loop (weaving about the lane centre), in {time.monotonic() - t0:.1f} s")
    # camera.width/height stay the model's: its preprocess spec (region of interest) is written for that size
    print(f"run it: camera.source = \"video\", camera.uri = \"{out}\" (configs/video.toml); keep camera.width/height "
          f"at the model's camera size ({cfg.camera.width}x{cfg.camera.height} in {args.config}): a video of another "
          "size is scaled to it by the source")
    return 0


def _check_name(name: str) -> None:
    try:
        scenarios.get(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _latencies(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--latencies: {text!r} is not a comma-separated list of milliseconds, "
                          "e.g. 0,50,100") from None
    if not vals or any(not 0 <= v <= 2000 for v in vals):
        raise ConfigError(f"--latencies: {text!r}: give 1 or more values in 0..2000 ms, e.g. {DEFAULT_SWEEP}")
    return vals


def cmd_sweep(args: argparse.Namespace) -> int:
    """Lane error against end-to-end latency: one scenario run per added latency."""
    from edgert.bench._suite import require_bench_extra

    require_bench_extra()  # the plot needs matplotlib: say so before the runs, not after them
    cfg = load(args.config).replace(pipeline={"log_level": "WARNING"})
    _check_name(args.scenario)
    latencies = _latencies(args.latencies)
    from edgert.runtime.supervisor import StageFailed

    setup_logging("WARNING")
    points = []
    for added in latencies:
        try:
            summary, outcome = run_scenario(cfg, args.scenario, added, args.drop_rate, args.duration, args.mode)
        except StageFailed as e:
            log.error("added latency %g ms: %s", added, e)
            return 1
        e2e, lane, act = summary["end_to_end"], summary["lane"], summary["actuation_age"]
        p = {"added_ms": added, "end_to_end_p50_ms": e2e["p50_ms"], "end_to_end_p99_ms": e2e["p99_ms"],
             "total_p50_ms": e2e["p50_ms"] + added, "actuated_p50_ms": act.get("p50_ms"),
             "lane_mean_m": lane["mean_abs_m"], "lane_rms_m": lane["rms_m"], "lane_max_m": lane["max_abs_m"],
             "departures": lane["departures"],
             "takeovers": [t["reason"] for t in summary["takeovers"] if t["reason"] != "SHUTDOWN"],
             "expected_outcome": outcome.ok}
        points.append(p)
        print(f"added {added:6.1f} ms: end-to-end p50 {e2e['p50_ms']:.2f} ms -> total {p['total_p50_ms']:.1f} ms; "
              f"lane error mean {p['lane_mean_m']:.3f} m, max {p['lane_max_m']:.3f} m, "
              f"departures {p['departures']}", flush=True)
    report = sweep_report(cfg, args.scenario, points, args.drop_rate)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim_sweep.json").write_text(json.dumps(report, indent=2))
    plot_sweep(report, out / "sim_sweep.png")
    for seg in report["marginal_cost"]:
        print(f"{seg['from_ms']:6.1f} -> {seg['to_ms']:6.1f} ms: each millisecond costs "
              f"{seg['mean_mm_per_ms']:+.3f} mm of mean and {seg['max_mm_per_ms']:+.3f} mm of max lane error")
    print(out / "sim_sweep.json")
    print(out / "sim_sweep.png")
    return 0


def sweep_report(cfg: PipelineConfig, name: str, points: list[dict[str, Any]], drop_rate: float) -> dict[str, Any]:
    from edgert.bench.report import machine_info

    # What a millisecond costs, between neighbouring points: the curve is not a line (a model that
    # anticipates the road absorbs some latency; past that, the loop starts to oscillate).
    pts = sorted(points, key=lambda p: p["total_p50_ms"])
    marginal = [{"from_ms": a["total_p50_ms"], "to_ms": b["total_p50_ms"],
                 "mean_mm_per_ms":
                     1000.0 * (b["lane_mean_m"] - a["lane_mean_m"]) / (b["total_p50_ms"] - a["total_p50_ms"]),
                 "max_mm_per_ms":
                     1000.0 * (b["lane_max_m"] - a["lane_max_m"]) / (b["total_p50_ms"] - a["total_p50_ms"])}
                for a, b in zip(pts, pts[1:]) if b["total_p50_ms"] > a["total_p50_ms"]]
    return {"benchmark": "sim_sweep", "machine": machine_info(),
            "config": {"scenario": name, "fps": cfg.camera.fps, "speed_mps": cfg.sim.speed_mps, "drop_rate": drop_rate,
                       "departure_threshold_m": (cfg.sim.lane_width_m - cfg.sim.vehicle_width_m) / 2,
                       "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
            "points": points, "marginal_cost": marginal}


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report["points"]
    x = [p["total_p50_ms"] for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(x, [p["lane_mean_m"] for p in pts], "o-", label="mean |lane error|")
    ax.plot(x, [p["lane_max_m"] for p in pts], "s--", label="max |lane error|")
    ax.axhline(report["config"]["departure_threshold_m"], color="red", lw=1, label="lane departure")
    for p in pts:
        if p["takeovers"]:
            ax.annotate(",".join(sorted(set(p["takeovers"]))).lower(), (p["total_p50_ms"], p["lane_max_m"]),
                        fontsize=7, textcoords="offset points", xytext=(3, 4))
    ax.set_xlabel("end-to-end latency p50 + added actuator latency (ms)")
    ax.set_ylabel("lane error (m)")
    ax.set_title(f"what latency costs in driving: scenario {report['config']['scenario']}, "
                 f"{report['config']['speed_mps']:g} m/s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base pipeline config (default: sim.toml)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of frames dropped before publishing")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: the scenario's own)")
    p.add_argument("--mode", choices=choices("pipeline.mode"), default=None, help="override pipeline.mode")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`sim` (run a scenario), `sim list` and `sim sweep`."""
    s = sub.add_parser("sim", help="run a driving scenario through the real pipeline and judge it; list; sweep")
    _run_options(s)
    s.add_argument("--scenario", default=None, help="the scenario to run (`edgert sim list`)")
    s.add_argument("--added-latency-ms", type=float, default=0.0,
                   help="the simulated actuator applies each command this much later")
    s.add_argument("--report", help="also write the summary and verdict as JSON to this file")
    s.set_defaults(func=cmd_sim)
    ssub = s.add_subparsers(dest="sim_command")
    p = ssub.add_parser("list", help="list the scenarios and their expected outcomes")
    p.set_defaults(func=cmd_list)
    p = ssub.add_parser("clip", help="render the simulator's road camera into a video file (for camera.source = "
                        "\"video\")")
    p.add_argument("out", help="the video file to write, e.g. road.mp4 (.mp4, .mkv, .ts, ...)")
    p.add_argument("--seconds", type=float, default=10.0, help="length (default 10)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--codec", choices=("h264", "mpeg4"), default="h264", help="encoder (default h264)")
    p.add_argument("--size", default="", help="WxH (default: --config's camera.width x height, 1920x1080 for "
                   "sim.toml: the default model's camera, as configs/video.toml has it)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="whose [sim] road to drive (default: sim.toml)")
    p.set_defaults(func=cmd_clip)
    p = ssub.add_parser("sweep", help="lane error against end-to-end latency: JSON + PNG")
    _run_options(p)
    p.add_argument("--latencies", default=DEFAULT_SWEEP, help=f"added latencies, ms (default: {DEFAULT_SWEEP})")
    p.add_argument("--scenario", default=SWEEP_SCENARIO, help=f"the scenario (default: {SWEEP_SCENARIO})")
    p.add_argument("--out", required=True, help="output folder for sim_sweep.json and sim_sweep.png")
    p.set_defaults(func=cmd_sweep)
