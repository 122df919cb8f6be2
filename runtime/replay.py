"""`edgert replay`: feed a recording through today's pipeline and say where the outputs differ.

The regression check for a new model variant: the recorded frames go through the real
pipeline (camera.source = "replay", runtime/stages/replaysource.py) with the recording's model,
or another one (`--model`), and the recorder (mode "all") records the new run into a scratch
folder. The model's steering output per frame id is then compared with the recorded one.
Commands are not compared: control rate-limits on wall-clock time, so they legitimately
depend on the replay's pace; the model output does not.

Replay never drives a vehicle. A recording is data from elsewhere: its metadata must
authenticate with the vehicle key (runtime/fleet/export.py), and even then it gives only the
camera geometry, the model name and the decoder to compare with. Everything else is this
machine's config (`--config`, else configs/sim.toml): its trusted keys, market and caches;
and whatever either says, CAN output is off and the stages talk over ipc:// only.

With `verify_frames` the replay also records its input frames and checks each against the
recording byte for byte, which proves the path camera pool -> recorder -> MCAP -> replay
source -> camera pool is lossless for raw frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgert.runtime.config import (
    CAMERA_FORMATS,
    DEFAULT_CONFIG,
    YUV_FORMATS,
    ConfigError,
    PipelineConfig,
    from_dict,
    load,
)
from edgert.runtime.fleet import mcapio
from edgert.runtime.fleet.export import authenticated_metadata, open_clip
from edgert.runtime.manifest import load_manifest
from edgert.runtime.stages.replaysource import frame_topic, iter_frames
from edgert.runtime.topics import image_size

log = logging.getLogger("edgert.replay")

SETTLE_S = 0.5  # after the last frame: outputs unchanged this long = the pipeline is drained
SETTLE_MAX_S = 5.0
STALL_S = 15.0  # no new frame this long once running: the replay is stuck


@dataclass
class FrameDiff:
    frame_id: int
    recorded: float
    replayed: float

    @property
    def diff(self) -> float:
        return abs(self.replayed - self.recorded)


@dataclass
class ReplayReport:
    recording: str
    model: str
    speed: float
    tolerance: float
    truncated: str  # why the recording is incomplete ("" if whole): replayed up to where it is readable
    frames_recorded: int  # readable frames in the recording
    frames_replayed: int  # frames the replay source published
    recorded_only: int  # frames with a recorded output but none from the replay (dropped in the replay run)
    replay_only: int  # frames with a new output but no recorded one (dropped in the recorded run)
    rows: list[FrameDiff] = field(default_factory=list)  # every frame with both outputs, by frame id
    frames_checked: int = 0  # verify_frames: frames present in both recordings
    frames_bit_exact: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return len(self.rows)

    @property
    def beyond(self) -> list[FrameDiff]:
        """Frames whose outputs differ by more than the tolerance (NaN on either side counts, unless both)."""
        return [r for r in self.rows if not (r.diff <= self.tolerance
                                             or (math.isnan(r.recorded) and math.isnan(r.replayed)))]

    @property
    def max_abs_diff(self) -> float:
        d = [r.diff for r in self.rows if not math.isnan(r.diff)]
        return max(d) if d else math.nan

    @property
    def mean_abs_diff(self) -> float:
        d = [r.diff for r in self.rows if not math.isnan(r.diff)]
        return sum(d) / len(d) if d else math.nan

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not self.beyond and self.frames_checked == self.frames_bit_exact

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [{"frame_id": r.frame_id, "recorded": r.recorded, "replayed": r.replayed, "diff": r.diff}
                     for r in self.rows]
        d.update(compared=self.compared, beyond=[r.frame_id for r in self.beyond], max_abs_diff=self.max_abs_diff,
                 mean_abs_diff=self.mean_abs_diff, ok=self.ok)
        return d


def steering_outputs(paths: list[Path], index: int, scale: float) -> dict[int, float]:
    """frame id -> decoded steering output (NaN for a result that is not OK) from /results."""
    out: dict[int, float] = {}
    for p in paths:
        try:
            for _, msg in mcapio.iter_messages(p, {"/results"}):
                r = json.loads(msg.data)
                ok = r["status"] == 0 and index < r["n_values"]
                out[int(r["frame_id"])] = float(r["values"][index]) * scale if ok else math.nan
        except mcapio.TruncatedRecording as e:
            log.warning("%s", e)
    return out


def frame_digests(paths: list[Path]) -> dict[int, str]:
    """frame id -> blake2b of the raw pixel bytes (as in the camera slot), from /camera/raw or /camera/image."""
    out: dict[int, str] = {}
    for p in paths:
        try:
            for topic, msg in mcapio.iter_messages(p, {mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC}):
                fr = (mcapio.decode_raw_frame(msg.data) if topic == mcapio.RAW_TOPIC
                      else mcapio.decode_raw_image(msg.data))
                out[fr.frame_id] = hashlib.blake2b(fr.pixels.tobytes(), digest_size=16).hexdigest()
        except mcapio.TruncatedRecording as e:
            log.warning("%s", e)
    return out


# What a replay forces whatever any config says: nothing reaches a bus, nothing listens beyond this host.
NEVER_DRIVES: dict[str, dict[str, Any]] = {
    "control": {"can_interface": "", "can_channel": ""},
    "pipeline": {"transport": "ipc", "tcp_host": "127.0.0.1", "curve": False},
}


def recorded_model(meta: dict[str, str]) -> str | None:
    """The model the recording ran (a zoo name or the absolute folder it was loaded from), if it says.
    Only that key is read: the rest of the stored config is another machine's (or another
    version's, with keys this one refuses), and a replay uses none of it."""
    try:
        stored = json.loads(meta["config"])
        m, base = stored["config"]["infer"]["model"], stored["base_dir"]
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(m, str) or not m:
        return None
    return m if "/" not in m else str(from_dict({"infer": {"model": m}}, base_dir=base).model_dir())


def recorded_camera(meta: dict[str, str]) -> dict[str, str]:
    """camera.format / yuv_matrix / yuv_range of a recording's raw frames, from its metadata (a file
    recorded before formats were recorded holds BGR frames)."""
    fmt = meta.get("camera_format", "bgr")
    if fmt not in CAMERA_FORMATS:
        raise ConfigError(f"recording metadata: camera_format {fmt!r} is not a camera.format this edgert reads "
                          f"({', '.join(CAMERA_FORMATS)}); replay it with the edgert version that recorded it")
    yuv = fmt in YUV_FORMATS
    return {"format": fmt, "yuv_matrix": meta.get("yuv_matrix", "bt601") if yuv else "bt601",
            "yuv_range": meta.get("yuv_range", "limited") if yuv else "limited"}


def replay_config(path: Path, local: PipelineConfig, meta: dict[str, str], out_dir: Path, model: str | None,
                  speed: float, mode: str | None, verify_frames: bool, topic: str) -> PipelineConfig:
    """This machine's config LOCAL turned into a replay of `path`, recording everything to out_dir.

    From the recording (its authenticated metadata META) come only the frame geometry, the
    model (unless `model` is given) and the region label of the scratch recording.
    """
    _, _, first = next(iter_frames(str(path), topic))
    # raw frames go back in their recorded format; JPEG frames decode to BGR
    cam = recorded_camera(meta if topic in (mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC) else {})
    n_cameras, h, w = image_size(cam["format"], first.shape)
    model = model or recorded_model(meta)
    if model is None:
        raise ConfigError(f"{path}: the recording does not say which model it ran; pass one with --model")
    changes: dict[str, dict[str, Any]] = {
        "camera": {"source": "replay", "width": w, "height": h, "cameras": n_cameras, **cam},
        "replay": {"file": str(path.resolve()), "speed": speed},
        "record": {"enabled": True, "mode": "all", "frames": "raw" if verify_frames else "none",
                   "dir": str(out_dir), "region": meta.get("region") or "sim", "pre_s": 0.0, "ring_mb": 0,
                   "segment_s": 3600.0, "nice": 0, "policy": "off"},  # a scratch copy for the comparison, deleted after
        "pipeline": {"duration_s": 0.0, **NEVER_DRIVES["pipeline"]},
        "control": dict(NEVER_DRIVES["control"]),
        "infer": {"model": model},
    }
    if mode:
        changes["pipeline"]["mode"] = mode
    return local.replace(**changes)


def _drive(sup: Any, n_frames: int) -> dict[str, Any]:
    """Run the supervisor until every frame is out and the pipeline is drained; its summary."""
    sup.start()  # StageFailed/ConfigError go to the caller as they are
    try:
        last, last_change = -1, time.monotonic()
        next_check = 0.0
        while sup.poll():  # the supervisor's own turn, ~20 ms
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + 0.05
            c = sup.counters()
            sent = c["capture"]["frames"] + c["capture"]["rejected"]
            if sent != last:
                last, last_change = sent, time.monotonic()
            if sent >= n_frames:
                break
            if time.monotonic() - last_change > STALL_S:
                log.error("replay stalled: %d of %d frames out after %.0f s without progress", sent, n_frames, STALL_S)
                break
        settle_end = time.monotonic() + SETTLE_MAX_S
        seen = None
        stable_since = time.monotonic()
        while time.monotonic() < settle_end and sup.poll():
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + 0.05
            c = sup.counters()
            now = (c["infer"]["frames"], c.get("recorder", {}).get("frames", 0), c["control"]["frames"])
            if now != seen:
                seen, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= SETTLE_S:
                break
    finally:
        summary = sup.stop()
    return summary


def run_replay(path: str | Path, config: PipelineConfig | None = None, model: str | None = None,
               speed: float = 1.0, tolerance: float = 1e-4, mode: str | None = None,
               verify_frames: bool = False, work_dir: str | Path | None = None,
               keys_dir: str | Path | None = None) -> ReplayReport:
    """Replay `path` through the pipeline and compare the model's steering output per frame id.

    `config` is this machine's (default configs/sim.toml), never the recording's; `keys_dir`
    (default its record.keys_dir) holds the vehicle key that must authenticate the recording.
    """
    from edgert.runtime.supervisor import Supervisor

    path = Path(path)
    local = config if config is not None else load(DEFAULT_CONFIG)
    if path.name.endswith(".enc"):
        raise mcapio.RecordingError(f"{path}: encrypted; `edgert fleet decrypt` it with its region's key, "
                                    "then replay that")
    with open_clip(path) as f:  # refused (ValueError) unless the vehicle key authenticates its metadata
        meta, _ = authenticated_metadata(f, path, keys_dir or local.record_path("keys_dir"))  # type: ignore[arg-type]
    info = mcapio.inspect(path)
    topic = frame_topic(str(path), info)  # no frames: nothing to replay, whatever the config
    n_frames = info.topics[topic]
    with tempfile.TemporaryDirectory(prefix="edgert-replay.", dir=work_dir) as tmp:
        out_dir = Path(tmp)
        cfg = replay_config(path, local, meta, out_dir, model, speed, mode, verify_frames, topic)
        sup = Supervisor(cfg)
        summary = _drive(sup, n_frames)
        new_files = sorted(out_dir.glob("*.mcap")) + sorted(out_dir.glob(f"*{mcapio.TRUNCATED}"))
        new_dec = load_manifest(cfg.model_dir(), pin=sup.manifest_sha256).decoder  # the one the run used
        old_index = int(meta.get("decoder_index", new_dec.index))
        old_scale = float(meta.get("decoder_scale", new_dec.scale))
        recorded = steering_outputs([path], old_index, old_scale)
        replayed = steering_outputs(new_files, new_dec.index, new_dec.scale)
        report = ReplayReport(
            recording=str(path), model=cfg.infer.model, speed=speed, tolerance=tolerance,
            truncated="" if info.complete else info.error, frames_recorded=n_frames,
            frames_replayed=int(summary["stages"]["capture"]["frames"]),
            recorded_only=len(recorded.keys() - replayed.keys()), replay_only=len(replayed.keys() - recorded.keys()),
            rows=[FrameDiff(i, recorded[i], replayed[i]) for i in sorted(recorded.keys() & replayed.keys())])
        if topic == mcapio.JPEG_TOPIC:
            report.notes.append("frames were recorded as JPEG: the replay's input is close to, not identical "
                                "with, what the model saw; expect small differences")
        if verify_frames:
            if topic not in (mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC):
                report.notes.append("frames not verified: only raw frames can be compared bit for bit")
            else:
                old, new = frame_digests([path]), frame_digests(new_files)
                both = old.keys() & new.keys()
                report.frames_checked = len(both)
                report.frames_bit_exact = sum(old[i] == new[i] for i in both)
        rec = summary["stages"].get("recorder", {})
        if rec.get("dropped"):
            report.notes.append(f"the replay's recorder dropped {rec['dropped']} frame(s); those are not compared")
    return report


def format_report(r: ReplayReport, show: int = 20) -> str:
    """What `edgert replay` prints: the verdict, then the frames beyond tolerance (at most `show`)."""
    lines = [f"replay of {r.recording} with model {r.model} at "
             f"{'max' if r.speed == 0 else f'{r.speed:g}x'} speed"]
    if r.truncated:
        lines.append(f"  RECORDING TRUNCATED ({r.truncated}): replayed the {r.frames_recorded} readable frame(s)")
    lines.append(f"  frames: {r.frames_recorded} recorded, {r.frames_replayed} replayed; outputs compared for "
                 f"{r.compared} (recorded only {r.recorded_only}, replay only {r.replay_only})")
    if r.compared:
        lines.append(f"  steering output |new - recorded|: max {r.max_abs_diff:.3g} rad, mean {r.mean_abs_diff:.3g} "
                     f"rad; {len(r.beyond)} frame(s) beyond tolerance {r.tolerance:g} rad")
    if r.frames_checked or r.frames_bit_exact:
        lines.append(f"  input frames bit-exact: {r.frames_bit_exact} of {r.frames_checked}")
    for row in r.beyond[:show]:
        lines.append(f"    frame {row.frame_id}: recorded {row.recorded:+.6f}, new {row.replayed:+.6f} "
                     f"(diff {row.diff:.3g})")
    if len(r.beyond) > show:
        lines.append(f"    ... and {len(r.beyond) - show} more (--report FILE.json lists every frame)")
    lines += [f"  note: {n}" for n in r.notes]
    if r.compared == 0:
        lines.append("  FAILED: no frame has both a recorded and a new output; nothing was compared")
    else:
        lines.append("  OK: outputs within tolerance" if r.ok else "  DIFFERENT: see the frames above")
    return "\n".join(lines)
