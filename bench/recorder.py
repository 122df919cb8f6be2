"""`edgert bench recorder`: what recording costs the control path.

The question (issue 8): does the recorder stage slow the pipeline down? The same closed loop
(the default config: the simulator at 1920x1080, 30 fps, processes mode) runs with the recorder
off; on in mode "all" (raw frames, the heaviest setting: every frame copied into the ring and
written to disk); and on in mode "clips" (the default for a car: every frame copied into the
ring, written only around an event, of which a plain drive has none); and off again, so that
the two recorder-off runs show how far two identical runs differ in this call (the noise that
"no overhead" is judged against). The order is reversed every other round within one call, so
a noisy spell on a shared machine hits every case alike.
The figure is end-to-end latency per command (capture stamp to control's send stamp, the same
clock in every process), after a warm-up; ratios record_on/record_off and
record_clips/record_off at p50 and p99. The notes say what the recorder wrote and what it
dropped: a recorder that keeps the latency by dropping most frames would be no answer.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgert.bench.report import Report
from edgert.runtime.config import DEFAULT_CONFIG, PipelineConfig, load
from edgert.runtime.wire import Stamp

# on = mode "all"; clips = the default for a car; off_again = a second recorder-off run in every
# round, so record_off_again/record_off is the same-run noise that "no overhead" is judged against
# The order puts each recorder-off run right after a recorder-on run in half the rounds: a run
# that follows mode "all" (330 MB written and deleted) is measurably slower, and the A/A pair
# must see that alike.
CASES = ("record_off", "record_on", "record_off_again", "record_clips")


def _one_run(cfg: PipelineConfig, duration_s: float, warmup_s: float) -> tuple[np.ndarray, dict[str, Any]]:
    """End-to-end latencies (ns) of the model commands after the warm-up, and the run's summary."""
    from edgert.runtime.supervisor import Supervisor

    sup = Supervisor(cfg, duration_s=warmup_s + duration_s)
    summary = sup.run()
    assert sup.telemetry is not None  # run() made it
    st = sup.telemetry.stamps.data.astype(np.int64)
    if not len(st):
        return np.empty(0, np.int64), summary
    start = st[0, Stamp.CAPTURE] + int(warmup_s * 1e9)
    st = st[st[:, Stamp.CAPTURE] >= start]
    return st[:, Stamp.CTRL_SEND] - st[:, Stamp.CAPTURE], summary


def run(quick: bool = False, rounds: int | None = None, duration_s: float | None = None,
        warmup_s: float | None = None, config: PipelineConfig | None = None) -> Report:
    """Alternating recorder-off / recorder-on runs of the closed loop; see the module docstring."""
    rounds = rounds or (1 if quick else 4)
    duration_s = duration_s or (4.0 if quick else 20.0)
    warmup_s = 1.0 if warmup_s is None else warmup_s
    base = config or load(DEFAULT_CONFIG)
    cam = base.camera
    rep = Report("recorder", {"rounds": rounds, "duration_s": duration_s, "warmup_s": warmup_s,
                              "frame": [cam.height, cam.width], "fps": cam.fps, "mode": base.pipeline.mode,
                              "record": {"modes": ["all", "clips"], "frames": "raw",
                                         "compression": base.record.compression},
                              "model": Path(base.infer.model).name,
                              "order": "off/all/off again/clips, reversed every other round"})
    samples: dict[str, list[np.ndarray]] = {c: [] for c in CASES}
    written = {"frames": 0, "dropped": 0, "bytes": 0, "seconds": 0.0, "errors": 0}
    tmp = Path(tempfile.mkdtemp(prefix="edgert-bench-recorder."))
    try:
        for r in range(rounds):
            for case in CASES if r % 2 == 0 else CASES[::-1]:
                rec_dir = tmp / f"r{r}"
                if case in ("record_off", "record_off_again"):
                    cfg = base
                elif case == "record_on":  # every frame copied into the ring and written to disk
                    cfg = base.replace(record={"enabled": True, "mode": "all", "frames": "raw", "dir": str(rec_dir),
                                               "region": base.record.region or "sim", "pre_s": 0.0, "ring_s": 2.0})
                else:  # clips: every frame copied into the ring, written only around an event (none here)
                    cfg = base.replace(record={"enabled": True, "mode": "clips", "frames": "raw", "dir": str(rec_dir),
                                               "region": base.record.region or "sim"})
                lat, summary = _one_run(cfg, duration_s, warmup_s)
                samples[case].append(lat)
                if case == "record_on":
                    st = summary["stages"]["recorder"]
                    written["frames"] += st["frames"] - st["dropped"]
                    written["dropped"] += st["dropped"]
                    written["errors"] += st["errors"]
                    written["bytes"] += sum(p.stat().st_size for p in rec_dir.glob("*.mcap"))
                    written["seconds"] += summary["duration_s"]
                    shutil.rmtree(rec_dir, ignore_errors=True)  # 1080p raw is ~190 MB/s before compression
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for case in CASES:
        rep.add(case, np.concatenate(samples[case]) if samples[case] else np.empty(0, np.int64))
    for case in CASES[1:]:
        if rep.cases[case]["n"] and rep.cases["record_off"]["n"]:
            rep.ratio(case, "record_off")
            rep.ratio(case, "record_off", p99=True)
    if rep.cases["record_off_again"]["n"] and rep.cases["record_off"]["n"]:
        for p99, what in ((False, "p50"), (True, "p99")):
            aa = rep.ratios[f"record_off_again/record_off{'_p99' if p99 else ''}"]
            band = max(aa, 1 / aa)  # two recorder-off runs differ by this much: the noise
            for case in ("record_on", "record_clips"):
                ratio = rep.ratios.get(f"{case}/record_off{'_p99' if p99 else ''}")
                if ratio is not None:
                    verdict = "within" if ratio <= band else "BEYOND"
                    rep.notes.append(f"{case} {what}: {ratio:.3f}x recorder-off, {verdict} the same-run noise "
                                     f"(two recorder-off runs differ by {band:.3f}x)")
    secs = max(written["seconds"], 1e-9)
    rep.notes.append(f"recorder (mode all, raw frames): {written['frames']} frames written, {written['dropped']} "
                     f"dropped and counted, {written['errors']} errors; {written['bytes'] / 2**20 / secs:.1f} MiB/s "
                     f"to disk after {base.record.compression} compression")
    rep.notes.append("in threads mode the recorder would share the pipeline's GIL; processes mode (the default) "
                     "is the configuration this measures")
    return rep
