"""`edgert bench pipeline --scenario single-stream|multi-stream|server`: the whole pipeline, timed.

The real pipeline (runtime.supervisor with its four stage processes) is fed by the "frames"
source (runtime/stages/frames.py: the same pre-rendered frames every run) at a scenario's
pacing, after MLPerf LoadGen:

  single-stream  the next frame once the last command is out, at most `fps` frames a second
  multi-stream   N cameras (default 4) in lock-step at a fixed `fps`: one (N, H, W, 3) slot per
                 tick, one batched tensor, a batch-N model (bench/_batchmodel.py)
  server         frames at a Poisson (or fixed) rate whatever the pipeline does; drops counted

In the same call, on the same frames at the same rates, the naive baseline runs in the same
process topology (bench/_naive.py: frames pickled through ZeroMQ, cv2 + NumPy preprocessing,
plain `session.run`), and the standalone preprocessing kernel and engine (and the naive chain
and bare session) are timed in this process on those frames. A second edgert pipeline,
"edgert-threads", runs the same config in threads mode (one process, the stages as threads):
ARCHITECTURE's lowest-latency setup, so the report shows a process per stage against it. Runs
alternate between the pipelines, in reverse every other round (`rounds`), so a noisy spell on a
shared machine hits all of them.

Each run lasts until it has `min_count` commands AND `min_duration_s` seconds after a warm-up
(LoadGen's rule: whichever is longer); a run that cannot reach `min_count` within its time cap
is marked INVALID in the notes. Per command, from the stamps every stage adds
(time.monotonic_ns, one clock for all processes):

  end-to-end     CTRL_SEND - CAPTURE                      cases "edgert", "naive"
  per stage      the hops and stages between the stamps   cases "edgert:preprocess", ...
  pipeline tax   end-to-end - (standalone preprocess p50 + standalone infer p50), both measured
                 hot in this run on the same frames: what the pipeline costs over the work itself
                 (hops, waits, contention, control, cold caches)  cases "edgert:tax", "naive:tax"
  tax_vs_paced   end-to-end - (paced preprocess p50 + paced infer p50): the same kernel and engine
                 in this process at the run's frame rate, after a copy of each frame. What is left
                 is the runtime's own cost; tax - tax_vs_paced is what the rate costs any
                 implementation (caches and CPU cold between frames)  cases "edgert:tax_vs_paced"
  jitter         |change of latency between consecutive commands| (RFC 3393 IPDV), i.e.
                 |command interval - frame interval|       cases "edgert:jitter", "naive:jitter"

plus drops (frames the source skipped or whose command never came; frames captured but never
commanded, by frame-id gaps at control), CPU % and peak RSS of each stage process, and
throughput. Ratios: naive/edgert (p50) and naive/edgert_p99 for end-to-end, and the same for tax;
naive/edgert-threads, and edgert:tax/edgert-threads:tax (processes against threads).
With `video` (`--video FILE`, single-stream), the camera is the video source on FILE instead, with
decode cost per frame beside the pipeline's and NV12 against BGR slots (bench/_video.py).
With `compare_zmq` a fourth pipeline, "edgert-zmq", runs edgert with ZeroMQ-only hops (no
mailboxes) in the same rounds: ratio edgert-zmq:tax/edgert:tax is what they save.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgert.bench.report import Report, interleaved_ns
from edgert.runtime.config import DEFAULT_CONFIG, PipelineConfig, load
from edgert.runtime.errors import UsageError
from edgert.runtime.stats import LogHistogram, ipdv_ns
from edgert.runtime.telemetry import SEGMENTS
from edgert.runtime.wire import Stamp

STAGES = ("capture", "preprocess", "infer", "control")
POISSON_DEADLINE_MS = 500.0
THREADS = "edgert-threads"  # ARCHITECTURE's lowest-latency setup: threads mode
PIPELINES = ("edgert", THREADS, "naive")
ZMQ_ABLATION = "edgert-zmq"  # --compare-zmq: edgert with ZeroMQ-only hops (pipeline.mailbox = false)
VIDEO_NV12 = "edgert-nv12"  # --video: edgert with NV12 camera slots, on the same clip (where camera.format takes nv12)
COLOURS = ("tab:blue", "tab:purple", "tab:red", "tab:green")


@dataclasses.dataclass(frozen=True)
class Scenario:
    pacing: str  # camera.pacing of the frames source
    cameras: int
    fps: float
    question: str


SCENARIOS = {
    "single-stream": Scenario("closed", 1, 30.0, "latency of one camera, next frame once the command is out"),
    "multi-stream": Scenario("fixed", 4, 30.0, "N cameras in lock-step at a fixed rate, one batched model call"),
    "server": Scenario("poisson", 1, 30.0, "arrivals at a rate that ignores the pipeline: latency and drops"),
}
# LoadGen-style minimums: a run ends when it has both (after WARMUP_S, not counted)
FULL = {"min_count": 1024, "min_duration_s": 60.0, "rounds": 2, "standalone_n": 2000, "paced_n": 600, "frames": 16,
        "warmup_s": 2.0}
QUICK = {"min_count": 60, "min_duration_s": 2.0, "rounds": 1, "standalone_n": 100, "paced_n": 30, "frames": 4,
         "warmup_s": 0.5}
# Single-stream targets on the 2-core reference machine (issue 7)
TARGETS = {"tax_p50_ms": 0.5, "tax_p99_ms": 2.0, "naive/edgert_p99": 3.0}


@dataclasses.dataclass
class RunResult:
    """One pipeline run: the measured window's command stamps, counters and resources."""

    stamps: np.ndarray  # (n, N_STAMPS) int64, one row per model command in the window
    window_s: float
    counters: dict[str, dict[str, int]]  # per stage: frames/dropped/rejected/errors in the window
    cpu_percent: dict[str, float]
    rss_mb: dict[str, float]
    machine_busy_percent: float
    valid: bool
    exit_reason: str


def scenario_config(base: PipelineConfig, scenario: str, cameras: int | None = None, fps: float | None = None,
                    arrival: str | None = None, frames: int = 8) -> PipelineConfig:
    """The pipeline config of a scenario: the base config with the frames source and its pacing."""
    sc = SCENARIOS[scenario]
    pacing = sc.pacing
    if arrival is not None:
        if scenario != "server":
            raise UsageError(f"--arrival applies to the server scenario only (this is {scenario}); remove it")
        pacing = arrival
    n = sc.cameras if cameras is None else cameras
    if n != 1 and scenario != "multi-stream":
        raise UsageError(f"--cameras applies to the multi-stream scenario only (this is {scenario}); remove it")
    cfg = base.replace(camera={"source": "frames", "pacing": pacing, "cameras": n, "fps": fps or sc.fps,
                               "frames": frames},
                       pipeline={"mode": "processes", "transport": "ipc", "log_level": "WARNING", "curve": False})
    if pacing == "poisson":
        # Poisson gaps exceed two mean periods 13.5 % of the time: the watchdog would rightly take over
        # for want of frames, and commands after a takeover wait for 3 good results. What is measured
        # here is latency under bursts, so the deadline is one no gap reaches (P < 1e-6 at 30/s).
        cfg = cfg.replace(control={"deadline_ms": max(POISSON_DEADLINE_MS, cfg.deadline_ns / 1e6)})
    return cfg


# -- one run ------------------------------------------------------------------------------

class _Watcher(threading.Thread):
    """Beside a running Supervisor: opens the measured window after the warm-up, samples each
    stage's CPU time and RSS, drives the progress bar and ends the run once both minimums are met."""

    def __init__(self, sup: Any, min_count: int, min_duration_s: float, warmup_s: float, bar: Any) -> None:
        super().__init__(daemon=True, name="bench-watcher")
        self.sup, self.min_count, self.min_duration_s, self.warmup_s, self.bar = \
            sup, min_count, min_duration_s, warmup_s, bar
        self.n0 = self.n1 = 0
        self.t0 = self.t1 = 0.0
        self.counters0: dict[str, dict[str, int]] = {}
        self.counters1: dict[str, dict[str, int]] = {}
        self.cpu0: dict[str, float] = {}
        self.cpu1: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self.busy = float("nan")
        self.done = False
        self.procs: dict[str, Any] = {}  # stage -> psutil.Process, or a thread id in threads mode
        self.me: Any = None

    def _counters(self) -> dict[str, dict[str, int]]:
        counters = self.sup.counters()
        return {n: counters[n] for n in STAGES}

    def _cpu(self) -> dict[str, float]:
        """CPU seconds of each stage so far (read at the window's two ends). In threads mode a
        stage's CPU time is its thread's: psutil reads every thread's, 0.5 ms of Python holding
        the GIL the stage threads need, so not in the sampling loop."""
        out = {}
        threads = None
        for name, p in self.procs.items():
            try:
                if isinstance(p, int):  # a thread of this process, if the stage has not been restarted since
                    if threads is None:
                        threads = {t.id: t.user_time + t.system_time for t in self.me.threads()}
                    same = self.sup.stage_thread_id(name) == p
                    out[name] = threads.get(p, float("nan")) if same else float("nan")
                else:
                    t = p.cpu_times()
                    out[name] = t.user + t.system
            except Exception:  # a stage that died (the run reports it); psutil.Error and OSError
                out[name] = float("nan")
        self._rss()
        return out

    def _rss(self) -> None:
        """Peak RSS of each stage; in threads mode the one process's, shared by all stages."""
        for name, p in self.procs.items():
            try:
                rss = (self.me if isinstance(p, int) else p).memory_info().rss
                self.rss[name] = max(self.rss.get(name, 0.0), rss / 2 ** 20)
            except Exception:  # a stage that died (the run reports it); psutil.Error and OSError
                pass

    def run(self) -> None:
        import psutil

        sup = self.sup
        while not sup.running.wait(0.02):  # every stage ready: the camera is starting
            if sup.stop_requested.is_set():
                return
        self.me = psutil.Process()
        pids = {n: sup.stage_pid(n) for n in STAGES}
        self.procs = {n: psutil.Process(pid) if pid is not None else sup.stage_thread_id(n) for n, pid in pids.items()}
        if sup.stop_requested.wait(self.warmup_s):
            return
        tel = sup.telemetry.stamps
        sys0 = psutil.cpu_times()
        self.n0, self.t0, self.counters0, self.cpu0 = tel.n, time.monotonic(), self._counters(), self._cpu()
        while not sup.stop_requested.is_set():
            time.sleep(0.1)
            got = tel.n - self.n0
            self.bar.update(min(got, self.min_count) - self.bar.n)
            self._rss()
            if got >= self.min_count and time.monotonic() - self.t0 >= self.min_duration_s:
                self.n1, self.t1, self.counters1, self.cpu1 = tel.n, time.monotonic(), self._counters(), self._cpu()
                sys1 = psutil.cpu_times()
                busy = lambda t: t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
                total = sum(sys1) - sum(sys0)
                self.busy = 100.0 * (busy(sys1) - busy(sys0)) / total if total > 0 else float("nan")
                self.done = True
                sup.request_stop("benchmark minimums reached")
                return


def run_once(cfg: PipelineConfig, stage_classes: dict[str, str] | None, min_count: int, min_duration_s: float,
             warmup_s: float, desc: str = "", progress: bool = True) -> RunResult:
    """Start the pipeline, measure one window that meets both minimums, stop it cleanly."""
    from tqdm import tqdm

    from edgert.runtime.supervisor import Supervisor

    rate = cfg.camera.fps
    cap_s = warmup_s + 3 * max(min_duration_s, min_count / rate) + 10  # then INVALID, not forever
    sup = Supervisor(cfg, duration_s=cap_s, stage_classes=stage_classes)
    with tqdm(total=min_count, desc=desc, unit="cmd", leave=False, disable=None if progress else True) as bar:
        w = _Watcher(sup, min_count, min_duration_s, warmup_s, bar)
        w.start()
        try:
            summary = sup.run()
        finally:
            sup.request_stop()  # the watcher ends with the run, however it ended
            w.join(5)
    assert sup.telemetry is not None  # start() made it
    if not w.done:  # the cap came first: report what there is, marked invalid
        w.n1, w.t1 = sup.telemetry.stamps.n, w.t0 + (summary["duration_s"] - warmup_s)
        w.counters1, w.cpu1 = {n: summary["stages"][n] for n in STAGES}, w.cpu0
    stamps = sup.telemetry.stamps.rows(w.n0, w.n1).astype(np.int64)  # the newest STAMP_WINDOW are kept
    window = max(w.t1 - w.t0, 1e-9)
    counters = {n: {k: int(w.counters1.get(n, {}).get(k, 0)) - int(w.counters0.get(n, {}).get(k, 0))
                    for k in ("frames", "dropped", "rejected", "errors")} for n in STAGES}
    for n in STAGES:
        counters[n]["restarts"] = int(summary["stages"][n]["restarts"])
    cpu = {n: 100.0 * (w.cpu1.get(n, np.nan) - w.cpu0.get(n, np.nan)) / window for n in STAGES}
    return RunResult(stamps, window, counters, cpu, dict(w.rss), w.busy,
                     valid=w.done and len(stamps) >= min_count, exit_reason=summary["exit_reason"])


# -- standalone timings ----------------------------------------------------------------------

def standalone(cfg: PipelineConfig, images: np.ndarray, n: int, paced_n: int = 0) -> dict[str, np.ndarray]:
    """Preprocess and inference alone, edgert's and the naive ones, interleaved, on the run's frames;
    then edgert's kernel and engine paced at the run's frame rate (`paced`)."""
    import onnxruntime as ort

    from edgert.kernels import Preprocessor, reference_preprocess
    from edgert.runtime.engine import Engine, session_options
    from edgert.runtime.providers import plan
    from edgert.runtime.signing import approved_manifest

    m = approved_manifest(cfg)
    cams, k = cfg.camera.cameras, len(images)
    batches = [np.stack([images[(i + j) % k] for j in range(cams)]) if cams > 1 else images[i] for i in range(k)]
    pre = Preprocessor(m.preprocess, images.shape[1:], threads=cfg.preprocess.threads, batch=cams)
    pre.warmup()
    spec = m.inputs[0]
    tensor = np.zeros(spec.shape, spec.dtype)
    providers = plan(cfg.infer.providers).chosen
    threads = cfg.infer.intra_op_threads or 1
    eng = Engine(m, providers=providers, intra_op_threads=threads)
    binding = eng.bind({spec.name: tensor})
    sess = ort.InferenceSession(m.read_verified(), sess_options=session_options(threads), providers=providers)
    naive_tensor = np.concatenate([reference_preprocess(m.preprocess, f) for f in
                                   (batches[0] if cams > 1 else [batches[0]])])
    it = {"pre": 0, "naive": 0}

    def run_pre() -> None:
        it["pre"] = (it["pre"] + 1) % k
        pre(batches[it["pre"]], tensor)

    def run_naive_pre() -> None:
        it["naive"] = (it["naive"] + 1) % k
        b = batches[it["naive"]]
        np.concatenate([reference_preprocess(m.preprocess, f) for f in (b if cams > 1 else [b])])

    hot = interleaved_ns({
        "standalone:preprocess": run_pre,
        "standalone:infer": lambda: eng.run(binding),
        "standalone:naive_preprocess": run_naive_pre,
        "standalone:naive_infer": lambda: sess.run(None, {spec.name: naive_tensor}),
    }, n, warmup=max(10, n // 20))
    return {**hot, **paced(batches, lambda src: pre(src, tensor), lambda: eng.run(binding), cfg.camera.fps, paced_n)}


def paced(frames: list[np.ndarray], preprocess: Callable[[np.ndarray], object], infer: Callable[[], object],
          fps: float, n: int, warmup: int = 10) -> dict[str, np.ndarray]:
    """The same kernel and engine in one process at the pipeline's frame rate, each tick after a copy of
    the frame into a camera buffer (as the camera stage makes it). Between frames the CPU idles and other
    work evicts the caches; a hot loop hides that, and any implementation at this rate pays it. So the
    tax against this floor is what the runtime itself adds (hops, checks, control)."""
    if n <= 0:
        return {}
    period = int(1e9 / fps)
    slot = np.empty_like(frames[0])
    out = np.zeros((2, n), np.int64)
    tick = time.monotonic_ns()
    for i in range(-warmup, n):
        tick = max(tick + period, time.monotonic_ns())  # an overrun skips ticks (as a camera would), never runs hot
        time.sleep(max(0, tick - time.monotonic_ns()) / 1e9)
        np.copyto(slot, frames[i % len(frames)])
        t0 = time.monotonic_ns()
        preprocess(slot)
        t1 = time.monotonic_ns()
        infer()
        if i >= 0:
            out[:, i] = t1 - t0, time.monotonic_ns() - t1
    return {"paced:preprocess": out[0], "paced:infer": out[1]}


# -- the benchmark ----------------------------------------------------------------------------

class PipelineReport(Report):
    """A Report with the pipeline's extra tables (drops, CPU, RSS) and three more plots."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.details: dict[str, Any] = {}
        self.timelines: dict[str, np.ndarray] = {}  # pipeline -> (2, n): capture time s, e2e ms
        self.pipelines: tuple[str, ...] = PIPELINES

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "details": self.details}

    def body(self) -> str:
        d = self.details
        lines = [super().body(), "", "| pipeline | stage | frames | dropped | CPU % | peak RSS MB |",
                 "|---|---|---|---|---|---|"]
        for p in self.pipelines:
            for s in STAGES:
                c = d["stages"][p][s]
                lines.append(f"| {p} | {s} | {c['frames']} | {c['dropped']} | {c['cpu_percent']:.1f} | "
                             f"{c['rss_mb']:.0f} |")
        lines += ["", "| pipeline | commands/s | source drops | pipeline drops | jitter std ms | valid runs |",
                  "|---|---|---|---|---|---|"]
        for p in self.pipelines:
            x = d["pipelines"][p]
            lines.append(f"| {p} | {x['commands_per_s']:.1f} | {x['source_drops']} | {x['pipeline_drops']} | "
                         f"{x['jitter_std_ms']:.3f} | {x['valid_runs']}/{x['runs']} |")
        b = self.benchmark
        lines += ["", f"![per-stage breakdown]({b}-stages.png)", "", f"![latency over time]({b}-time.png)"]
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        """Log-scale latency histograms of end-to-end and tax, every pipeline of the run."""
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, suffix, title in ((axes[0], "", "end-to-end (capture -> command)"), (axes[1], ":tax", "pipeline tax")):
            for p, colour in zip(self.pipelines, COLOURS):
                x = self.samples.get(p + suffix)
                if x is None or not len(x):
                    continue
                h = LogHistogram(lo_ns=1e4, hi_ns=1e10, per_decade=20)
                h.record(np.maximum(x, 1e4))
                edges = np.concatenate([[h.lo], h.edges])
                used = np.flatnonzero(h.counts)
                lo, hi = used[0], used[-1] + 1
                ax.stairs(h.counts[lo:hi], edges[lo:hi + 1] / 1e6, label=p, color=colour)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("ms (log scale; 20 bins per decade)")
            ax.set_ylabel("commands")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(f"{self.benchmark}: {self.machine['cpu']}, {self.machine['cores']} cores")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_stages(self, path: Path) -> None:
        """Stacked mean time per hop and stage (means add up to the end-to-end mean; p50s do not)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 2.8))
        segs = [name for name, _, _ in SEGMENTS]
        colours = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
        for row, p in enumerate(self.pipelines):
            left = 0.0
            for i, s in enumerate(segs):
                w = self.cases[f"{p}:{s}"]["mean_ms"]
                ax.barh(row, w, left=left, color=colours[i], label=s if row == 0 else None)
                left += w
        ax.set_yticks(range(len(self.pipelines)), self.pipelines)
        ax.invert_yaxis()
        ax.set_xlabel("mean ms per command, by hop and stage")
        ax.legend(ncol=3, fontsize=8, loc="lower right")
        ax.set_title(f"{self.benchmark}: where the time goes")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_time(self, path: Path) -> None:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 3.2))
        for p, colour in zip(self.pipelines, COLOURS):
            t = self.timelines.get(p)
            if t is not None and t.shape[1]:
                ax.plot(t[0], t[1], ".", ms=2, color=colour, label=p)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("s since the measured window opened (runs concatenated)")
        ax.set_ylabel("end-to-end ms (log)")
        ax.set_title(f"{self.benchmark}: latency over time")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def write(self, out_dir: str | Path) -> list[Path]:
        paths = super().write(out_dir)
        out = Path(out_dir)
        extra = [out / f"{self.benchmark}-stages.png", out / f"{self.benchmark}-time.png"]
        self.plot_stages(extra[0])
        self.plot_time(extra[1])
        return paths + extra


def _aggregate(rep: PipelineReport, p: str, runs: list[RunResult], tax_floor_ns: float,
               paced_floor_ns: float | None = None) -> None:
    st = np.concatenate([r.stamps for r in runs]) if runs else np.zeros((0, 8), np.int64)
    e2e = st[:, Stamp.CTRL_SEND] - st[:, Stamp.CAPTURE]
    rep.add(p, e2e)
    for name, a, b in SEGMENTS:
        rep.add(f"{p}:{name}", st[:, b] - st[:, a])
    rep.add(f"{p}:tax", e2e - tax_floor_ns)
    if paced_floor_ns is not None:
        rep.add(f"{p}:tax_vs_paced", e2e - paced_floor_ns)
    jit = np.concatenate([ipdv_ns(r.stamps[:, Stamp.CAPTURE], r.stamps[:, Stamp.CTRL_SEND]) for r in runs])
    rep.add(f"{p}:jitter", jit)
    timeline, offset = [], 0.0
    for r in runs:
        if len(r.stamps):
            t = (r.stamps[:, Stamp.CAPTURE] - r.stamps[0, Stamp.CAPTURE]) / 1e9 + offset
            timeline.append(np.stack([t, (r.stamps[:, Stamp.CTRL_SEND] - r.stamps[:, Stamp.CAPTURE]) / 1e6]))
            offset = float(t[-1]) + 1.0
    rep.timelines[p] = np.concatenate(timeline, axis=1) if timeline else np.zeros((2, 0))
    window = sum(r.window_s for r in runs)
    stages = {}
    for s in STAGES:
        c: dict[str, float] = {k: sum(r.counters[s][k] for r in runs)
                               for k in ("frames", "dropped", "rejected", "errors", "restarts")}
        c["cpu_percent"] = float(np.nansum([r.cpu_percent[s] * r.window_s for r in runs]) / window)
        c["rss_mb"] = float(max(r.rss_mb.get(s, 0.0) for r in runs))
        stages[s] = c
    rep.details.setdefault("stages", {})[p] = stages
    hist = LogHistogram()
    hist.record(e2e)
    iv = np.concatenate([np.diff(r.stamps[:, Stamp.CAPTURE]) for r in runs]).astype(np.float64)
    # frames captured before the previous frame's command went out: 0 in a closed loop
    overlap = sum(int((r.stamps[1:, Stamp.CAPTURE] < r.stamps[:-1, Stamp.CTRL_SEND]).sum()) for r in runs)
    rep.details.setdefault("pipelines", {})[p] = {
        "runs": len(runs), "valid_runs": sum(r.valid for r in runs), "window_s": window,
        "commands": int(len(e2e)), "commands_per_s": len(e2e) / window if window else 0.0,
        "source_drops": stages["capture"]["dropped"],  # ticks skipped, or closed-loop commands that never came
        "pipeline_drops": stages["control"]["dropped"],  # captured, never commanded (id gaps, stale results)
        "jitter_std_ms": float(np.std(jit) / 1e6) if len(jit) else float("nan"),
        "capture_interval_ms": {"mean": float(iv.mean() / 1e6) if len(iv) else float("nan"),
                                "cv": float(iv.std() / iv.mean()) if len(iv) else float("nan")},
        "overlapping_frames": overlap,
        "machine_busy_percent": [r.machine_busy_percent for r in runs],
        "exit_reasons": [r.exit_reason for r in runs],
        "e2e_histogram": hist.to_dict(),
    }


def run(quick: bool = False, scenario: str = "single-stream", cameras: int | None = None, fps: float | None = None,
        arrival: str | None = None, min_count: int | None = None, min_duration_s: float | None = None,
        rounds: int | None = None, config: str | Path = DEFAULT_CONFIG, progress: bool = True,
        compare_zmq: bool = False, video: str | Path | None = None) -> PipelineReport:
    """One scenario, edgert and the naive baseline in the same call; see the module docstring. With
    `video` (single-stream only), the video source on that file instead of the frames source, and no
    naive baseline (bench/_video.py): decode cost per frame beside the pipeline's, BGR against NV12."""
    from edgert.runtime.stages.frames import render_frames

    if video is not None and scenario != "single-stream":
        raise UsageError(f"--video runs the single-stream scenario (this is {scenario}); remove --scenario")
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}; scenarios: {', '.join(SCENARIOS)}")
    p: dict[str, Any] = dict(QUICK if quick else FULL)
    for key, value in (("min_count", min_count), ("min_duration_s", min_duration_s), ("rounds", rounds)):
        if value is not None:
            if value <= 0:
                raise UsageError(f"{key}: must be > 0, got {value}")
            p[key] = value
    with tempfile.TemporaryDirectory(prefix="edgert-bench.") as tmp:
        cfg = scenario_config(load(config), scenario, cameras, fps, arrival, frames=p["frames"])
        if video is not None:
            from edgert.bench import _video

            cfg = _video.video_config(cfg, video)
        if cfg.camera.cameras > 1:  # a batch-N copy of the model, checked and signed for this run only
            from edgert.bench._batchmodel import batch_variant

            model_dir, keys = batch_variant(cfg.model_dir(), cfg.camera.cameras, tmp)
            cfg = cfg.replace(infer={"model": str(model_dir), "trusted_keys": str(keys)})
        conf = {"scenario": scenario, "question": SCENARIOS[scenario].question, "pacing": cfg.camera.pacing,
                "cameras": cfg.camera.cameras, "fps": cfg.camera.fps, "frame": [cfg.camera.height, cfg.camera.width],
                "model": Path(cfg.infer.model).name, "quick": quick, **p,
                "deadline_ms": cfg.deadline_ns / 1e6, "mode": cfg.pipeline.mode, "transport": cfg.pipeline.transport,
                "mailbox": cfg.pipeline.mailbox}
        run_cfgs = {"edgert": cfg, ZMQ_ABLATION: cfg.replace(pipeline={"mailbox": False}),
                    THREADS: cfg.replace(pipeline={"mode": "threads"}),
                    "naive": cfg.replace(pipeline={"mailbox": False})}  # by hand
        conf[THREADS] = {"mode": run_cfgs[THREADS].pipeline.mode}
        rep = PipelineReport(f"pipeline-{scenario}" + ("-video" if video is not None else ""), conf)
        if compare_zmq:
            rep.pipelines = (*PIPELINES, ZMQ_ABLATION)
        if video is not None:  # the video source: edgert on BGR (and NV12 where the pipeline takes it) slots
            conf["video"] = cfg.camera.uri
            rep.pipelines = ("edgert", THREADS) + ((VIDEO_NV12,) if _video.nv12_runs() else ())
            run_cfgs[VIDEO_NV12] = cfg.replace(camera={"format": "nv12"}) if _video.nv12_runs() else cfg
            images = _video.decode_images(cfg, cfg.camera.frames)
            alone = {**standalone(cfg, images, p["standalone_n"], p["paced_n"]),
                     **_video.decode_cost(cfg, p["standalone_n"]),
                     "standalone:preprocess-nv12": _video.kernel_cost(cfg, p["standalone_n"])}
        else:
            images = render_frames(cfg, cfg.camera.frames)
            alone = standalone(cfg, images, p["standalone_n"], p["paced_n"])
        del images
        results: dict[str, list[RunResult]] = {k: [] for k in rep.pipelines}
        from edgert.bench._naive import STAGE_CLASSES

        for r in range(p["rounds"]):
            order = rep.pipelines if r % 2 == 0 else rep.pipelines[::-1]
            for name in order:
                results[name].append(run_once(run_cfgs[name], STAGE_CLASSES if name == "naive" else None,
                                              p["min_count"], p["min_duration_s"], p["warmup_s"],
                                              desc=f"{scenario} {name} {r + 1}/{p['rounds']}", progress=progress))
    def p50_sum(cases: tuple[str, ...]) -> float:
        return sum(float(np.percentile(alone[c], 50)) for c in cases)

    # every edgert pipeline runs edgert's kernel and engine; the naive one the cv2 chain and bare session
    edgert_floor = p50_sum(("standalone:preprocess", "standalone:infer"))
    naive_floor = p50_sum(("standalone:naive_preprocess", "standalone:naive_infer"))
    paced_floor_ns = p50_sum(("paced:preprocess", "paced:infer")) if "paced:infer" in alone else None
    for name in rep.pipelines:
        floor = naive_floor if name == "naive" else edgert_floor
        paced_floor = None if name == "naive" else paced_floor_ns
        _aggregate(rep, name, results[name], floor, paced_floor)
        rep.details["pipelines"][name]["tax_floor_ms"] = floor / 1e6
        if paced_floor is not None:
            rep.details["pipelines"][name]["paced_floor_ms"] = paced_floor / 1e6
    for case, s in alone.items():
        rep.add(case, s)
    for p99 in (False, True):
        if "naive" in rep.pipelines:
            rep.ratio("naive", "edgert", p99=p99)
            rep.ratio("naive:tax", "edgert:tax", p99=p99)
            rep.ratio("naive", THREADS, p99=p99)
        rep.ratio("edgert:tax", f"{THREADS}:tax", p99=p99)  # a process per stage, against threads
        if compare_zmq:
            rep.ratio(f"{ZMQ_ABLATION}:tax", "edgert:tax", p99=p99)
        if VIDEO_NV12 in rep.pipelines:
            rep.ratio(VIDEO_NV12, "edgert", p99=p99)
            rep.ratio(f"{VIDEO_NV12}:preprocess", "edgert:preprocess", p99=p99)  # the fused kernel, NV12 vs BGR
    if video is not None:
        rep.ratio("decode:nv12", "decode:bgr")
        rep.ratio("standalone:preprocess-nv12", "standalone:preprocess")  # the fused kernel on NV12 against BGR
        rep.notes.append(
            f"video: {conf['video']}, looped, closed pacing; decode:FMT = FFmpeg's decode of one frame plus its write "
            "into a packed pool slot of that format (runtime/video.py SlotWriter), in this process, beside the "
            "pipeline's end-to-end, which starts at the decoded frame's publication (CAPTURE) and so excludes it"
            + ("" if VIDEO_NV12 in rep.pipelines else "; NV12 through the pipeline not run: camera.format takes "
               "only " + ", ".join(choices_of_format()) + " in this build"))
    _notes(rep, scenario, p["min_count"])
    return rep


def choices_of_format() -> tuple[str, ...]:
    from edgert.runtime.config import choices

    return tuple(choices("camera.format"))


def _notes(rep: PipelineReport, scenario: str, min_count: int) -> None:
    d = rep.details["pipelines"]
    for p in rep.pipelines:
        if d[p]["valid_runs"] < d[p]["runs"]:
            rep.notes.append(f"INVALID: {d[p]['runs'] - d[p]['valid_runs']} {p} run(s) ended before {min_count} "
                             f"commands ({', '.join(d[p]['exit_reasons'])})")
    rep.notes.append("tax = end-to-end minus (standalone preprocess p50 + standalone infer p50), both measured in "
                     "this run on the same frames; edgert against its kernel and engine, naive against the cv2 "
                     "chain and bare session.run")
    if "edgert:tax_vs_paced" in rep.cases:
        c = rep.cases
        rep.notes.append(
            f"tax_vs_paced = end-to-end minus (paced preprocess p50 + paced infer p50): edgert's kernel and engine in "
            f"this process at the run's frame rate, each after a copy of the frame into a camera buffer. Of the tax "
            f"p50 {c['edgert:tax']['p50_ms']:.3f} ms, the runtime's own cost (hops, checks, control) is "
            f"{c['edgert:tax_vs_paced']['p50_ms']:.3f} ms and the floor's change "
            f"{c['edgert:tax']['p50_ms'] - c['edgert:tax_vs_paced']['p50_ms']:.3f} ms: a net of two opposite effects. "
            f"Infer is slower paced (model cold between frames: any implementation at this rate pays it); "
            f"preprocess is faster paced (the copy, on the same core, leaves the frame in cache, where the pipeline's "
            f"camera copies on another core). The targets are on the tax. "
            f"Stage by stage, p50: preprocess {c['edgert:preprocess']['p50_ms']:.3f} ms in the pipeline against "
            f"{c['paced:preprocess']['p50_ms']:.3f} paced and {c['standalone:preprocess']['p50_ms']:.3f} hot; infer "
            f"{c['edgert:infer']['p50_ms']:.3f} against {c['paced:infer']['p50_ms']:.3f} paced and "
            f"{c['standalone:infer']['p50_ms']:.3f} hot")
    rep.notes.append("jitter = |latency of a command - latency of the previous one| (RFC 3393 IPDV); source drops "
                     "= ticks the source skipped or closed-loop commands that never came; pipeline drops = frames "
                     "captured but never commanded (frame-id gaps and stale results at control)")
    if THREADS in rep.pipelines:
        rep.notes.append(
            f"{THREADS} = the same config in threads mode (pipeline.mode = \"threads\": one process, the stages "
            f"as threads, the same stage code): ARCHITECTURE's lowest-latency setup, "
            f"traded against isolation (a stage that crashes the interpreter takes the others with it). Its CPU % "
            f"per stage is its thread's; its RSS is the one process's (the benchmark's own included). "
            f"edgert:tax/{THREADS}:tax compares a process per stage with threads")
    if scenario == "single-stream":
        t = TARGETS
        for p in (x for x in ("edgert", THREADS) if x in rep.pipelines):
            tax, drops = rep.cases[f"{p}:tax"], d[p]["source_drops"] + d[p]["pipeline_drops"]
            checks = [(f"{p} drops {drops} == 0", drops == 0),
                      (f"{p} tax p50 {tax['p50_ms']:.3f} ms <= {t['tax_p50_ms']}", tax["p50_ms"] <= t["tax_p50_ms"]),
                      (f"{p} tax p99 {tax['p99_ms']:.3f} ms <= {t['tax_p99_ms']}", tax["p99_ms"] <= t["tax_p99_ms"])]
            if f"naive/{p}_p99" in rep.ratios:  # no naive baseline on --video
                ratio = rep.ratios[f"naive/{p}_p99"]
                checks.append((f"naive/{p}_p99 {ratio:.2f} >= {t['naive/edgert_p99']}", ratio >= t["naive/edgert_p99"]))
            for text, ok in checks:
                rep.notes.append(f"target {'met' if ok else 'MISSED'}: {text}")
