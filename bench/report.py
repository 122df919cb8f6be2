"""The one report shape every benchmark writes (../shared/ARCHITECTURE.md, "Benchmark reports").

    {"benchmark": NAME, "machine": {...}, "config": {...},
     "cases":  {CASE: {"n", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"}},
     "ratios": {"A/B": A.p50 / B.p50, "A/B_p99": A.p99 / B.p99}}

Every figure is measured in the same run as its baseline, on the same machine, and ratios
are what a report claims; absolute times are context. `write()` puts NAME.json, NAME.md and
NAME.png (latency distribution per case, log scale) in the output folder.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgert.runtime.stats import summarize_ns


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, library versions, providers, GPU."""
    import numba
    import onnxruntime as ort

    from edgert.runtime.providers import nvidia_driver

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "gpu": None if nvidia_driver() else "NVIDIA (driver present)",
    }


def machine_line(m: dict[str, Any]) -> str:
    return (f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, numpy {m['numpy']}, "
            f"numba {m['numba']}, onnxruntime {m['onnxruntime']}; GPU: {m['gpu'] or 'none'}.")


def time_ns(fn: Callable[[], object], n: int, warmup: int = 10) -> np.ndarray:
    """n timings of fn() in nanoseconds (monotonic clock), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out


def interleaved_ns(fns: dict[str, Callable[[], object]], n: int, warmup: int = 10) -> dict[str, np.ndarray]:
    """Time several cases round-robin, so a noisy spell on a shared machine hits them all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: np.empty(n, dtype=np.int64) for k in fns}
    for i in range(n):
        for k, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            out[k][i] = time.perf_counter_ns() - t0
    return out


def blocked_ns(fns: dict[str, Callable[[], object]], n: int, block: int = 100,
               warmup: int = 10, block_warmup: int = 3) -> dict[str, np.ndarray]:
    """Time several cases in blocks of `block` calls in a row, the blocks in turn: each case runs
    in its own steady state (caches, thread pools warm from its own previous call), while a noisy
    spell on a shared machine still spreads over all of them. Each block starts with
    `block_warmup` untimed calls: the first call after another case's block is not steady state
    (its thread pool asleep, its data evicted), and timed it would be exactly 1 % of the samples
    at a block of 100, i.e. the p99."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: np.empty(n, dtype=np.int64) for k in fns}
    for start in range(0, n, block):
        for k, fn in fns.items():
            for _ in range(block_warmup):
                fn()
            for i in range(start, min(start + block, n)):
                t0 = time.perf_counter_ns()
                fn()
                out[k][i] = time.perf_counter_ns() - t0
    return out


@dataclass
class Report:
    benchmark: str
    config: dict[str, Any]
    cases: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine_info)

    def add(self, case: str, samples_ns: np.ndarray) -> None:
        self.samples[case] = np.asarray(samples_ns)
        self.cases[case] = summarize_ns(self.samples[case])

    def ratio(self, a: str, b: str, p99: bool = False) -> float:
        """Record and return A/B at p50 (or p99): both cases from this run."""
        key = "p99_ms" if p99 else "p50_ms"
        value = self.cases[a][key] / self.cases[b][key]
        self.ratios[f"{a}/{b}" + ("_p99" if p99 else "")] = value
        return value

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "machine": self.machine, "config": self.config,
                "cases": self.cases, "ratios": self.ratios, "notes": self.notes}

    def markdown(self) -> str:
        return "\n".join([f"# Benchmark: {self.benchmark}", "", machine_line(self.machine), "", self.body(), ""])

    def body(self) -> str:
        """The report without its title and machine line: config, tables, ratios, notes, plots."""
        lines = [f"Config: `{json.dumps(self.config)}`", "",
                 "| case | n | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | mean ms | p99/p50 |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for name, c in self.cases.items():
            lines.append(f"| {name} | {c['n']} | {c['p50_ms']:.4f} | {c['p90_ms']:.4f} | {c['p99_ms']:.4f} | "
                         f"{c['p999_ms']:.4f} | {c['max_ms']:.4f} | {c['mean_ms']:.4f} | "
                         f"{c['p99_ms'] / c['p50_ms'] if c['p50_ms'] > 0 else float('nan'):.2f} |")
        if self.ratios:
            lines += ["", "| ratio (same run) | value |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in self.ratios.items()]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        lines += ["", f"![latency distributions]({self.benchmark}.png)"]
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # in-car and CI machines have no display
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 0.55 * len(self.samples) + 1.8))
        names = list(self.samples)
        data = [np.maximum(self.samples[k] / 1e6, 1e-6) for k in names]
        ax.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(names) + 1), names)
        ax.invert_yaxis()  # first case at the top, as in the table
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale; box = p25-p75, whiskers = p1-p99, dots beyond)")
        ax.set_title(f"{self.benchmark}: {self.machine['cpu']}, {self.machine['cores']} cores")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{self.benchmark}.json", out / f"{self.benchmark}.md", out / f"{self.benchmark}.png"]
        paths[0].write_text(json.dumps(self.to_json(), indent=2))
        paths[1].write_text(self.markdown())
        self.plot(paths[2])
        return paths


def write_index(reports: list[Report], out_dir: str | Path, quick: bool = False,
                failed: list[str] | None = None) -> Path:
    """DIR/index.md: the machine once, then every report's config, tables, ratios, notes and plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = reports[0].machine if reports else machine_info()
    lines = ["# edgert benchmarks" + (" (quick: CI-sized, says nothing about tails)" if quick else ""), "",
             machine_line(machine), f"Providers: {', '.join(machine['providers'])}.", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Every ratio compares two cases of the same run; "
             "see docs/benchmarks.md for the method.", "",
             "| benchmark | cases | ratios (same run) |", "|---|---|---|"]
    for r in reports:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in list(r.ratios.items())[:4])
        lines.append(f"| [{r.benchmark}](#{r.benchmark}) | {len(r.cases)} | {ratios} |")
    for f in failed or []:
        lines.append(f"| FAILED: {f} | | |")
    for r in reports:
        lines += ["", f"## {r.benchmark}", "", r.body()]
    path = out / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path
