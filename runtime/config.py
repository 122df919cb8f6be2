"""The pipeline config: one TOML file describes a whole deployment.

Parsing is strict: an unknown key, a wrong type or an out-of-range value raises
`ConfigError` naming the key (`camera.fps`), what was found and what is allowed, with
a did-you-mean for misspelled keys. A config that loads is a config that can run.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.runtime.sources import CAPTURE_SOURCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = PROJECT_ROOT / "models"
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "sim.toml"
STAGES = ("capture", "preprocess", "infer", "control", "recorder")  # the recorder runs only with record.enabled


class ConfigError(ValueError):
    """The config names a key that is unknown, mistyped or out of range."""


@dataclass(frozen=True)
class PipelineSection:
    name: str = "edgert"
    mode: str = "processes"  # processes | threads
    transport: str = "ipc"  # ipc | tcp (threads mode always uses inproc)
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = 5550
    curve: bool = False  # tcp only: encrypt and authenticate every socket with ZeroMQ CURVE
    duration_s: float = 0.0  # 0 = until SIGINT/SIGTERM
    ready_timeout_s: float = 180.0
    restart_timeout_s: float = 180.0  # a restarted stage not ready (or a stage stuck stopping) this long is killed
    log_level: str = "INFO"
    affinity: dict[str, list[int]] = field(default_factory=dict)  # stage -> CPU cores
    mailbox: bool = True  # one host: stages read their inputs from shared-memory mailboxes (runtime/mailbox.py)
    market: str = "sim"  # where the car is sold: only a model whose signed manifest approves it loads


@dataclass(frozen=True)
class CameraSection:
    source: str = "sim"
    width: int = 1920
    height: int = 1080
    fps: float = 30.0
    format: str = "bgr"
    pool_slots: int = 4
    # camera health, checked by preprocess on every frame (runtime/camhealth.py):
    dark_level: float = 12.0  # mean 8-bit level below which a frame is black -> CAMERA_BLACKOUT; 0 = off
    frozen_frames: int = 2  # frames in a row identical to the one before -> CAMERA_FROZEN; 0 = off
    # source "frames" only (benchmarks; runtime/stages/frames.py):
    # fixed (a camera) | poisson (arrivals at mean fps) | closed (next frame once the command is out)
    pacing: str = "fixed"
    cameras: int = 1  # cameras in lock-step, one (N, H, W, 3) slot per tick; the model's batch must be N
    frames: int = 8  # distinct images rendered at setup and cycled
    seed: int = 0  # poisson pacing's random gaps


@dataclass(frozen=True)
class SimSection:
    road_seed: int = 7
    road_length_m: float = 20000.0  # at the end the car is carried back to the start
    speed_mps: float = 15.0
    start_s_m: float = 0.0
    start_lateral_m: float = 0.0
    start_heading_rad: float = 0.0
    hfov_deg: float = 60.0
    camera_height_m: float = 1.3
    camera_pitch_deg: float = 4.0
    wheelbase_m: float = 2.7
    lane_width_m: float = 3.6
    vehicle_width_m: float = 1.8  # a departure is |lane error| > (lane_width - vehicle_width) / 2
    scenario: str = ""  # a named test scenario (runtime/sim/scenarios.py; `edgert sim list`); "" = the seeded road
    added_latency_ms: float = 0.0  # the actuator applies each command this much later (a slower loop, for sweeps)
    drop_rate: float = 0.0  # fraction of frames rendered but never published (a lossy camera link), 0..<1
    actuator_timeout_ms: float = 0.0  # no valid command this long: the actuator ramps to neutral; 0 = 6 frame periods


@dataclass(frozen=True)
class PreprocessSection:
    threads: int = 1


@dataclass(frozen=True)
class InferSection:
    model: str = "pilotnet"  # a zoo name (models/<name>) or a path to a model folder
    providers: list[str] = field(default_factory=lambda: ["auto"])
    intra_op_threads: int = 1  # 0 = as many as the cores this stage is pinned to
    profile: str = "auto"  # auto | cpu | x86-nvidia | jetson-orin (runtime/profiles.py)
    cache_dir: str = ""  # optimised graphs and TensorRT engines; "" = $XDG_CACHE_HOME/edgert, "off" = none
    pool_slots: int = 3
    warmup_runs: int = 5
    trusted_keys: str = ""  # folder of trusted publisher keys (<name>.pub); "" = models/publishers
    cuda_graph: bool = False  # on an NVIDIA GPU: capture the model once as a CUDA graph, replay it per frame


@dataclass(frozen=True)
class ControlSection:
    deadline_ms: float = 0.0  # 0 = two frame periods
    max_steer_rad: float = 0.5
    plausible_steer_rad: float = 1.0  # a model output beyond this is invalid (a takeover), not clamped
    max_steer_rate_rad_s: float = 2.0
    failsafe_decel_mps2: float = 2.0
    recover_after: int = 3  # consecutive good results before leaving fail-safe
    can_interface: str = ""  # "" = no CAN output; "socketcan" or "virtual" (python-can interfaces)
    can_channel: str = ""  # e.g. "can0", "vcan0"
    can_id: int = 0x2E4  # standard 11-bit id of the command frame


@dataclass(frozen=True)
class RecordSection:
    """The optional recorder stage (runtime/stages/recorder.py, docs/fleet.md)."""

    enabled: bool = False
    dir: str = ""  # where recordings go; "" = $XDG_DATA_HOME/edgert/recordings
    mode: str = "clips"  # clips (pre_s..post_s around each event) | all (everything, in segment_s files)
    pre_s: float = 5.0  # seconds before an event that its clip starts
    post_s: float = 5.0  # seconds after the (last) event that its clip ends
    ring_s: float = 10.0  # how far back the in-memory ring reaches (>= pre_s)
    ring_mb: int = 0  # bytes bound of the ring in MiB; 0 = sized for ring_s of frames at the camera's size and rate
    frames: str = "raw"  # raw (bit-exact, replayable) | jpeg (foxglove.CompressedImage, lossy) | none
    jpeg_quality: int = 90
    compression: str = "lz4"  # MCAP chunk compression: lz4 | zstd | none
    segment_s: float = 60.0  # a file never spans more than this: a crash loses at most the open one
    region: str = ""  # region of collection written into every recording (e.g. "eu"); required when enabled
    vehicle_id: str = ""  # "" = the host name
    nice: int = 10  # the recorder runs this much below the pipeline's priority (0..19)
    idle_class: bool = True  # Linux SCHED_IDLE: the recorder gets only CPU time no pipeline stage wants
    policy: str = ""  # residency policy (anonymise/encrypt per region); "" = configs/fleet-policy.toml;
    # "off" = no duties applied (replay's scratch recordings only: export refuses what they would need)
    keys_dir: str = ""  # per-region clip keys (`edgert fleet keygen`); "" = $XDG_DATA_HOME/edgert/fleet/keys
    face_model: str = ""  # YuNet ONNX file for faces; "" = OpenCV's bundled Haar cascade


@dataclass(frozen=True)
class ReplaySection:
    """camera.source = "replay": recorded frames fed through the pipeline (`edgert replay`)."""

    file: str = ""  # the .mcap recording (with /camera/raw or /camera/jpeg frames)
    speed: float = 1.0  # 1 = recorded pace, 2 = twice as fast, ...; 0 = as fast as the pipeline drains


@dataclass(frozen=True)
class PipelineConfig:
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    camera: CameraSection = field(default_factory=CameraSection)
    sim: SimSection = field(default_factory=SimSection)
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    infer: InferSection = field(default_factory=InferSection)
    control: ControlSection = field(default_factory=ControlSection)
    record: RecordSection = field(default_factory=RecordSection)
    replay: ReplaySection = field(default_factory=ReplaySection)
    base_dir: str = str(PROJECT_ROOT)  # where relative paths in the file are resolved

    def record_dir(self) -> Path:
        """Where the recorder writes: record.dir, relative to the config's folder, or the user's data folder."""
        d = self.record.dir
        if not d:
            return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "edgert" / "recordings"
        p = Path(d).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def record_path(self, key: str) -> Path | None:
        """record.policy / keys_dir / face_model resolved against the config's folder; their defaults for ""."""
        v = getattr(self.record, key)
        if not v:
            data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "edgert" / "fleet"
            return {"policy": PROJECT_ROOT / "configs" / "fleet-policy.toml", "keys_dir": data / "keys"}.get(key)
        if key == "policy" and v == "off":
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def replay_file(self) -> Path:
        p = Path(self.replay.file).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def deadline_ns(self) -> int:
        ms = self.control.deadline_ms or 2000.0 / self.camera.fps
        return int(ms * 1e6)

    def cache_dir(self) -> Path | None:
        c = self.infer.cache_dir
        if c == "off":
            return None
        if not c:
            return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgert"
        p = Path(c).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def trusted_keys_dir(self) -> Path:
        """Where the publishers' public keys are that model manifests must be signed with."""
        if not self.infer.trusted_keys:
            return MODELS_DIR / "publishers"
        p = Path(self.infer.trusted_keys).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def model_dir(self) -> Path:
        m = self.infer.model
        if "/" not in m and os.sep not in m:
            return MODELS_DIR / m
        p = Path(m)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def replace(self, **sections: dict[str, Any]) -> PipelineConfig:
        """A copy with some keys of some sections changed (validated like the file)."""
        raw = self.to_dict()
        for sec, values in sections.items():
            raw.setdefault(sec, {}).update(values)
        return from_dict(raw, base_dir=self.base_dir)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d

    def to_json(self) -> str:
        return json.dumps({"base_dir": self.base_dir, "config": self.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        obj = json.loads(text)
        return from_dict(obj["config"], base_dir=obj["base_dir"])


_CHOICES = {
    "pipeline.mode": ("processes", "threads"),
    "pipeline.transport": ("ipc", "tcp"),
    "pipeline.log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "camera.source": tuple(CAPTURE_SOURCES),
    "camera.format": ("bgr",),
    "camera.pacing": ("fixed", "poisson", "closed"),
    "infer.profile": ("auto", "cpu", "x86-nvidia", "jetson-orin"),
    "control.can_interface": ("", "socketcan", "virtual"),
    "record.mode": ("clips", "all"),
    "record.frames": ("raw", "jpeg", "none"),
    "record.compression": ("lz4", "zstd", "none"),
}
_POSITIVE = {"camera.width", "camera.height", "camera.fps", "camera.pool_slots", "infer.pool_slots",
             "camera.cameras", "camera.frames",
             "preprocess.threads", "control.max_steer_rad",
             "control.max_steer_rate_rad_s", "control.recover_after", "control.plausible_steer_rad",
             "pipeline.ready_timeout_s",
             "pipeline.restart_timeout_s",
             "sim.hfov_deg", "sim.camera_height_m", "sim.wheelbase_m", "sim.lane_width_m",
             "sim.vehicle_width_m", "sim.road_length_m", "record.ring_s", "record.segment_s"}
_NON_NEGATIVE = {"infer.intra_op_threads", "pipeline.duration_s", "control.deadline_ms", "control.failsafe_decel_mps2",
                 "infer.warmup_runs", "sim.speed_mps", "sim.start_s_m",
                 "camera.dark_level", "camera.frozen_frames", "sim.added_latency_ms", "sim.drop_rate",
                 "sim.actuator_timeout_ms",
                 "record.pre_s", "record.post_s", "record.ring_mb", "replay.speed"}
# The CAN command frame's age byte saturates here (runtime/canbus.AGE_SATURATED_MS; python-can is not
# imported to load a config): a deadline at or above it would make the actuator refuse fresh commands.
CAN_AGE_SATURATED_MS = 255

# Upper bounds (key: (largest value, unit, why)): what a safety review accepts, or what the machine can hold.
# A value above is refused with its whole range (the lower bound from _POSITIVE / _NON_NEGATIVE).
_MAX = {
    "control.deadline_ms": (500.0, "ms", "a command older than this still steers; 0 = two frame periods, "
                                         "which must be within the bound too"),
    "control.max_steer_rad": (0.6, "rad", "about a passenger car's full road-wheel lock (34 degrees)"),
    "control.plausible_steer_rad": (1.0, "rad", "beyond any road wheel's lock: larger outputs are faults"),
    "control.max_steer_rate_rad_s": (2.0, "rad/s", "road-wheel rate; faster than a driver can follow"),
    "control.failsafe_decel_mps2": (5.0, "m/s^2", "a fail-safe stop harder than ~0.5 g invites a rear-end collision"),
    "control.recover_after": (300, "results", "10 s at 30 fps"),
    "camera.fps": (240.0, "frames/s", "the watchdog deadline and heartbeats follow the frame period"),
    "camera.width": (7680, "px", "8K"),
    "camera.height": (4320, "px", "8K"),
    "camera.pool_slots": (64, "slots", "each holds a whole frame in shared memory"),
    "camera.cameras": (16, "cameras", "each tick's slot holds them all"),
    "camera.frames": (1024, "frames", "each is held in memory"),
    "infer.pool_slots": (64, "slots", "each holds a model input in shared memory"),
    "infer.warmup_runs": (1000, "runs", "start-up time"),
    "infer.intra_op_threads": (256, "threads", ""),
    "preprocess.threads": (256, "threads", ""),
    "pipeline.ready_timeout_s": (3600.0, "s", "a first start compiles kernels; an hour is a hang"),
    "pipeline.restart_timeout_s": (3600.0, "s",
                                   "as long as a first start may take (ready_timeout_s); longer is a hang"),
    "sim.speed_mps": (70.0, "m/s", "252 km/h"),
    "sim.added_latency_ms": (2000.0, "ms", ""),
    "sim.actuator_timeout_ms": (1000.0, "ms", "an actuator holding a stale command longer is unsafe"),
    "record.ring_s": (600.0, "s", "the ring is held in memory"),
    "record.pre_s": (300.0, "s", ""),
    "record.post_s": (300.0, "s", ""),
    "record.segment_s": (3600.0, "s", "a crash loses the open file"),
    "record.ring_mb": (65536, "MiB", "the ring is held in memory"),
    "replay.speed": (100.0, "x", ""),
}


def _range(key: str) -> str:
    """`key`'s allowed range, as the refusals say it: "0 <= deadline_ms <= 500 ms"."""
    hi, unit, why = _MAX[key]
    lo = "0 < " if key in _POSITIVE else "0 <= " if key in _NON_NEGATIVE else ""
    return f"{lo}{key.rsplit('.', 1)[-1]} <= {hi:g} {unit}" + (f" ({why})" if why else "")

# Latency knobs taken out because no full benchmark showed a gain (docs/decisions.md, "Latency knobs
# removed"): a config that still sets one is refused with what to do, not ignored.
_REMOVED = {"pipeline.spin_us": "busy-polling", "pipeline.warm_us": "the input warm-up",
            "infer.warm_run": "the model's warm run"}


def _check_type(key: str, value: Any, want: Any) -> Any:
    origin = getattr(want, "__origin__", None)
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if want is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = want.__args__
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _, item = want.__args__
        return {k: _check_type(f"{key}.{k}", v, item) for k, v in value.items()}
    raise TypeError(want)  # pragma: no cover - a field type this parser does not know


def _unknown(key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r}{hint}; allowed here: {', '.join(allowed)}")


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table, got {raw!r}")
    hints = {f.name: f for f in dataclasses.fields(cls)}
    types = typing.get_type_hints(cls)
    values = {}
    for k, v in raw.items():
        key = f"{name}.{k}"
        if key in _REMOVED:
            raise ConfigError(f"{key} was removed ({_REMOVED[key]} showed no gain in full benchmarks; "
                              "docs/decisions.md): delete the key from the config")
        if k not in hints:
            raise _unknown(key, list(hints))
        v = _check_type(key, v, types[k])
        if key in _CHOICES and v not in _CHOICES[key]:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(repr, _CHOICES[key]))}")
        if key in _POSITIVE and not v > 0:
            raise ConfigError(f"{key}: must be > 0, got {v!r}")
        if key in _NON_NEGATIVE and v < 0:
            raise ConfigError(f"{key}: must be >= 0, got {v!r}")
        if key in _MAX and v > _MAX[key][0]:
            raise ConfigError(f"{key}: {v!r} is outside its range {_range(key)}")
        values[k] = v
    return cls(**values)


def from_dict(raw: dict[str, Any], base_dir: str | Path = PROJECT_ROOT) -> PipelineConfig:
    classes = {"pipeline": PipelineSection, "camera": CameraSection, "sim": SimSection,
               "preprocess": PreprocessSection, "infer": InferSection, "control": ControlSection,
               "record": RecordSection, "replay": ReplaySection}
    for k in raw:
        if k not in classes:
            raise _unknown(k, list(classes))
    built = {name: _section(name, cls, raw.get(name, {})) for name, cls in classes.items()}
    cfg = PipelineConfig(**built, base_dir=str(base_dir))
    _cross_check(cfg)
    return cfg


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 or "localhost". Other
    names are not resolved (what they point to can change after the check), so they count as remote."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cross_check(cfg: PipelineConfig) -> None:
    for stage, cores in cfg.pipeline.affinity.items():
        if stage not in STAGES:
            raise _unknown(f"pipeline.affinity.{stage}", list(STAGES))
        ncpu = os.cpu_count() or 1
        bad = [c for c in cores if not 0 <= c < ncpu]
        if bad or not cores:
            raise ConfigError(f"pipeline.affinity.{stage}: cores {cores} invalid on this {ncpu}-core machine")
    if cfg.pipeline.curve and cfg.pipeline.transport != "tcp":
        raise ConfigError(f"pipeline.curve: CURVE secures tcp://; transport is {cfg.pipeline.transport!r} "
                          "(ipc:// sockets are protected by the run directory's 0700 permissions)")
    if cfg.pipeline.transport == "tcp" and ":" in cfg.pipeline.tcp_host:
        raise ConfigError(f"pipeline.tcp_host: {cfg.pipeline.tcp_host!r} is an IPv6 address; the tcp transport "
                          "binds IPv4 only: use an IPv4 address (127.0.0.1 on this host)")
    if cfg.pipeline.transport == "tcp" and not cfg.pipeline.curve and not is_loopback(cfg.pipeline.tcp_host):
        raise ConfigError(f"pipeline.tcp_host: {cfg.pipeline.tcp_host!r} is not a loopback address, and plain tcp:// "
                          "lets anyone who can reach it read the commands and feed forged results to control; "
                          "set pipeline.curve = true (encrypted, only this run's stages may connect) or "
                          "tcp_host = \"127.0.0.1\"")
    if cfg.camera.fps < 1:
        raise ConfigError(f"camera.fps: {cfg.camera.fps} is below 1 frame per second; the deadline and "
                          "heartbeats assume at least 1")
    if cfg.deadline_ns > _MAX["control.deadline_ms"][0] * 1e6:
        raise ConfigError(f"control.deadline_ms: 0 means two frame periods, {cfg.deadline_ns / 1e6:g} ms at "
                          f"camera.fps = {cfg.camera.fps:g}: outside its range {_range('control.deadline_ms')}; "
                          "set control.deadline_ms or a higher camera.fps")
    if not 1024 <= cfg.pipeline.tcp_base_port <= 65535 - 16:
        raise ConfigError(f"pipeline.tcp_base_port: {cfg.pipeline.tcp_base_port} outside 1024..65519 "
                          "(each topic uses base + its index)")
    if cfg.control.plausible_steer_rad < cfg.control.max_steer_rad:
        raise ConfigError(f"control.plausible_steer_rad: {cfg.control.plausible_steer_rad} is below max_steer_rad "
                          f"{cfg.control.max_steer_rad}: every saturated command would be a takeover")
    if cfg.control.can_interface and not cfg.control.can_channel:
        raise ConfigError(f"control.can_channel: required with can_interface = {cfg.control.can_interface!r}")
    if cfg.control.can_interface and cfg.deadline_ns >= CAN_AGE_SATURATED_MS * 1_000_000:
        raise ConfigError(f"control.deadline_ms: {cfg.deadline_ns / 1e6:g} ms (0 = two frame periods) with CAN "
                          f"output, whose frame carries the command's age in one byte of ms: an actuator reads "
                          f"{CAN_AGE_SATURATED_MS} as 'too old' and would refuse commands control still sends as "
                          f"fresh; set control.deadline_ms below {CAN_AGE_SATURATED_MS} (docs/wire.md, "
                          "\"CAN command frame\")")
    if not 0 <= cfg.control.can_id <= 0x7FF:
        raise ConfigError(f"control.can_id: {cfg.control.can_id:#x} is not a standard 11-bit CAN id (0..0x7ff)")
    if cfg.camera.source != "frames":
        for key, default in (("pacing", "fixed"), ("cameras", 1)):
            if getattr(cfg.camera, key) != default:
                raise ConfigError(f"camera.{key}: {getattr(cfg.camera, key)!r} needs camera.source = \"frames\" "
                                  f"(only that source has lock-step cameras and benchmark pacing); "
                                  f"remove the key or set the source")
    _check_sim(cfg)
    _check_record(cfg)
    if cfg.camera.pool_slots < 2:
        raise ConfigError(f"camera.pool_slots: need at least 2 so the camera never waits, got {cfg.camera.pool_slots}")
    if cfg.infer.pool_slots < 2:
        raise ConfigError(f"infer.pool_slots: need at least 2, got {cfg.infer.pool_slots}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", cfg.pipeline.market):
        raise ConfigError(f"pipeline.market: {cfg.pipeline.market!r} is not a market name; use lower-case "
                          "letters, digits, '-' or '_' as in a manifest's markets (e.g. \"sim\", \"eu\")")
    if not cfg.infer.providers:
        raise ConfigError("infer.providers: empty; use [\"auto\"] or name providers, e.g. [\"CPUExecutionProvider\"]")
    if not (cfg.model_dir() / "manifest.toml").is_file():
        zoo = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.toml").is_file())
        raise ConfigError(f"infer.model: no manifest.toml in {cfg.model_dir()}; name a model folder "
                          f"or one of the zoo's: {', '.join(zoo)}")


def ring_bytes(cfg: PipelineConfig) -> int:
    """The recorder ring's size: record.ring_mb, or (0) ring_s of frames at the camera's size and rate + 16 MiB."""
    rec, cam = cfg.record, cfg.camera
    if rec.ring_mb:
        return rec.ring_mb << 20
    frames = 0 if rec.frames == "none" else int(rec.ring_s * cam.fps * 1.1 + 2) * _frame_bytes(cfg)
    return frames + (16 << 20)  # the small topics need well under 1 MiB a minute


def _frame_bytes(cfg: PipelineConfig) -> int:
    cam = cfg.camera
    return cam.width * cam.height * 3 * getattr(cam, "cameras", 1)


def _check_record(cfg: PipelineConfig) -> None:
    """The recorder's and the replay source's keys (docs/fleet.md)."""
    rec = cfg.record
    region = re.compile(r"[a-z0-9][a-z0-9_-]*")
    if rec.enabled and not rec.region:
        raise ConfigError("record.region: required when record.enabled: every recording is tagged with the region "
                          "where it is collected (e.g. region = \"eu\"; the residency policy is looked up by it)")
    if rec.region and not region.fullmatch(rec.region):
        raise ConfigError(f"record.region: {rec.region!r} is not a region name; use lower-case letters, digits, "
                          "'-' or '_' as in configs/fleet-policy.toml (e.g. \"eu\", \"us\", \"sim\")")
    if not re.fullmatch(r"[A-Za-z0-9._-]*", rec.vehicle_id):
        raise ConfigError(f"record.vehicle_id: {rec.vehicle_id!r} may use only letters, digits, '.', '_' and '-' "
                          "(it is part of every recording's file name)")
    if rec.enabled and rec.policy != "off":  # the recorder's duties (anonymise, encrypt) come from it
        from edgert.runtime.fleet.policy import Policy, PolicyError

        policy = cfg.record_path("policy")
        assert policy is not None  # record.policy is not "off"
        try:
            Policy.load(policy).region(rec.region)
        except PolicyError as e:
            raise ConfigError(f"record.policy / record.region: {e}") from None
    if rec.pre_s > rec.ring_s:
        raise ConfigError(f"record.pre_s: {rec.pre_s} s reaches further back than the ring keeps (record.ring_s = "
                          f"{rec.ring_s}); raise ring_s to at least pre_s")
    if not 1 <= rec.jpeg_quality <= 100:
        raise ConfigError(f"record.jpeg_quality: {rec.jpeg_quality} outside 1..100")
    if not 0 <= rec.nice <= 19:
        raise ConfigError(f"record.nice: {rec.nice} outside 0..19 (how far below the pipeline the recorder runs)")
    if rec.ring_mb and rec.frames != "none":
        need = int(rec.pre_s * cfg.camera.fps + 1) * _frame_bytes(cfg)
        if ring_bytes(cfg) < need + (1 << 20):
            raise ConfigError(f"record.ring_mb: {rec.ring_mb} MiB cannot hold record.pre_s = {rec.pre_s} s of "
                              f"{cfg.camera.width}x{cfg.camera.height} frames at {cfg.camera.fps:g} fps "
                              f"({need / 2**20:.0f} MiB); raise ring_mb to {need // 2**20 + 2}, lower pre_s, "
                              "or use 0 to size it from ring_s")
    if cfg.camera.source == "replay":
        if not cfg.replay.file:
            raise ConfigError("replay.file: required with camera.source = \"replay\"; name an .mcap recording")
        if not cfg.replay_file().is_file():
            raise ConfigError(f"replay.file: {cfg.replay_file()} not found; `edgert record list DIR` lists recordings")
    elif cfg.replay.file:
        raise ConfigError(f"replay.file: set, but camera.source is {cfg.camera.source!r}; set camera.source = "
                          "\"replay\" to feed the recording through the pipeline, or remove the key")


def _check_sim(cfg: PipelineConfig) -> None:
    """The simulator's test-bench keys: scenario name, drop rate, actuator timeout, camera health."""
    from edgert.runtime.sim import scenarios  # a plain table: no Numba, no road built

    sim = cfg.sim
    if sim.scenario and sim.scenario not in scenarios.SCENARIOS:
        close = difflib.get_close_matches(sim.scenario, scenarios.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"sim.scenario: {sim.scenario!r} is not a scenario{hint}; valid: "
                          f"{', '.join(scenarios.names())}, or \"\" for the seeded demo road")
    if not sim.drop_rate < 1.0:
        raise ConfigError(f"sim.drop_rate: {sim.drop_rate} would drop every frame; use a fraction in [0, 1)")
    period_ms = 1000.0 / cfg.camera.fps
    if sim.actuator_timeout_ms and sim.actuator_timeout_ms < 2 * period_ms:
        raise ConfigError(f"sim.actuator_timeout_ms: {sim.actuator_timeout_ms} ms is under two frame periods "
                          f"({2 * period_ms:.1f} ms): commands come once a period, so it would time out between "
                          "them; use 0 (six periods) or a longer timeout")
    if cfg.camera.source == "frames" and cfg.camera.frames == 1 and cfg.camera.frozen_frames:
        raise ConfigError("camera.frozen_frames: the frames source with camera.frames = 1 repeats one image by "
                          "design, which the frozen-camera check flags; set camera.frozen_frames = 0 or frames >= 2")


def load(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline TOML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found; the default closed loop is {DEFAULT_CONFIG}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(raw, base_dir=path.resolve().parent)
