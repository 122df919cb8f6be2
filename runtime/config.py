"""The pipeline config: one TOML file describes a whole deployment.

Parsing is strict: an unknown key, a wrong type or an out-of-range value raises
`ConfigError` naming the key (`camera.fps`), what was found and what is allowed, with
a did-you-mean for misspelled keys. A config that loads is a config that can run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.sources import CAPTURE_SOURCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = PROJECT_ROOT / "models"
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "sim.toml"
STAGES = ("capture", "preprocess", "infer", "control")


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
    log_level: str = "INFO"
    affinity: dict[str, list[int]] = field(default_factory=dict)  # stage -> CPU cores


@dataclass(frozen=True)
class CameraSection:
    source: str = "sim"
    width: int = 1920
    height: int = 1080
    fps: float = 30.0
    format: str = "bgr"
    pool_slots: int = 4


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
class PipelineConfig:
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    camera: CameraSection = field(default_factory=CameraSection)
    sim: SimSection = field(default_factory=SimSection)
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    infer: InferSection = field(default_factory=InferSection)
    control: ControlSection = field(default_factory=ControlSection)
    base_dir: str = str(PROJECT_ROOT)  # where relative paths in the file are resolved

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

    def model_dir(self) -> Path:
        m = self.infer.model
        if "/" not in m and os.sep not in m:
            return MODELS_DIR / m
        p = Path(m)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def replace(self, **sections: dict[str, Any]) -> "PipelineConfig":
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
    def from_json(cls, text: str) -> "PipelineConfig":
        obj = json.loads(text)
        return from_dict(obj["config"], base_dir=obj["base_dir"])


_CHOICES = {
    "pipeline.mode": ("processes", "threads"),
    "pipeline.transport": ("ipc", "tcp"),
    "pipeline.log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "camera.source": tuple(CAPTURE_SOURCES),
    "camera.format": ("bgr",),
    "infer.profile": ("auto", "cpu", "x86-nvidia", "jetson-orin"),
    "control.can_interface": ("", "socketcan", "virtual"),
}
_POSITIVE = {"camera.width", "camera.height", "camera.fps", "camera.pool_slots", "infer.pool_slots",
             "preprocess.threads", "control.max_steer_rad",
             "control.max_steer_rate_rad_s", "control.recover_after", "control.plausible_steer_rad", "pipeline.ready_timeout_s",
             "sim.hfov_deg", "sim.camera_height_m", "sim.wheelbase_m", "sim.lane_width_m",
             "sim.vehicle_width_m", "sim.road_length_m"}
_NON_NEGATIVE = {"infer.intra_op_threads", "pipeline.duration_s", "control.deadline_ms", "control.failsafe_decel_mps2",
                 "infer.warmup_runs", "sim.speed_mps", "sim.start_s_m"}


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
        if k not in hints:
            raise _unknown(key, list(hints))
        v = _check_type(key, v, types[k])
        if key in _CHOICES and v not in _CHOICES[key]:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(repr, _CHOICES[key]))}")
        if key in _POSITIVE and not v > 0:
            raise ConfigError(f"{key}: must be > 0, got {v!r}")
        if key in _NON_NEGATIVE and v < 0:
            raise ConfigError(f"{key}: must be >= 0, got {v!r}")
        values[k] = v
    return cls(**values)


def from_dict(raw: dict[str, Any], base_dir: str | Path = PROJECT_ROOT) -> PipelineConfig:
    classes = {"pipeline": PipelineSection, "camera": CameraSection, "sim": SimSection,
               "preprocess": PreprocessSection, "infer": InferSection, "control": ControlSection}
    for k in raw:
        if k not in classes:
            raise _unknown(k, list(classes))
    built = {name: _section(name, cls, raw.get(name, {})) for name, cls in classes.items()}
    cfg = PipelineConfig(**built, base_dir=str(base_dir))
    _cross_check(cfg)
    return cfg


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
    if cfg.camera.fps < 1:
        raise ConfigError(f"camera.fps: {cfg.camera.fps} is below 1 frame per second; the deadline and "
                          "heartbeats assume at least 1")
    if not 1024 <= cfg.pipeline.tcp_base_port <= 65535 - 16:
        raise ConfigError(f"pipeline.tcp_base_port: {cfg.pipeline.tcp_base_port} outside 1024..65519 "
                          "(each topic uses base + its index)")
    if cfg.control.plausible_steer_rad < cfg.control.max_steer_rad:
        raise ConfigError(f"control.plausible_steer_rad: {cfg.control.plausible_steer_rad} is below max_steer_rad "
                          f"{cfg.control.max_steer_rad}: every saturated command would be a takeover")
    if cfg.control.can_interface and not cfg.control.can_channel:
        raise ConfigError(f"control.can_channel: required with can_interface = {cfg.control.can_interface!r}")
    if not 0 <= cfg.control.can_id <= 0x7FF:
        raise ConfigError(f"control.can_id: {cfg.control.can_id:#x} is not a standard 11-bit CAN id (0..0x7ff)")
    if cfg.camera.pool_slots < 2:
        raise ConfigError(f"camera.pool_slots: need at least 2 so the camera never waits, got {cfg.camera.pool_slots}")
    if cfg.infer.pool_slots < 2:
        raise ConfigError(f"infer.pool_slots: need at least 2, got {cfg.infer.pool_slots}")
    if not cfg.infer.providers:
        raise ConfigError("infer.providers: empty; use [\"auto\"] or name providers, e.g. [\"CPUExecutionProvider\"]")
    if not (cfg.model_dir() / "manifest.toml").is_file():
        raise ConfigError(f"infer.model: no manifest.toml in {cfg.model_dir()}; name a model folder "
                          f"or one of the zoo's: {', '.join(sorted(p.name for p in MODELS_DIR.iterdir() if (p / 'manifest.toml').is_file()))}")


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
