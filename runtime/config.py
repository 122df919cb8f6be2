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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.runtime import paths
from edgert.runtime.errors import EdgertError
from edgert.runtime.profiles import PROFILES
from edgert.runtime.sources import CAPTURE_SOURCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS_DIR = paths.bundled_zoo()  # the models shipped in the package; the user zoo is searched after it
DEFAULT_CONFIG = paths.default_config()  # the embedded default: the simulator closed loop


class ConfigError(EdgertError, ValueError):
    """The config names a key that is unknown, mistyped or out of range."""


# -- what each key allows, beside its field -------------------------------------------------------
# The CAN command frame's age byte saturates here (runtime/canbus.AGE_SATURATED_MS; python-can is not
# imported to load a config): a deadline at or above it would make the actuator refuse fresh commands.
CAN_AGE_SATURATED_MS = 255
CAMERA_FORMATS = ("bgr", "rgb", "nv12", "i420", "yuyv")  # camera.format; YUV_FORMATS decode in the fused kernel
YUV_FORMATS = ("nv12", "i420", "yuyv")
_NAME = r"[a-z0-9][a-z0-9_-]*"  # a market or region name, as manifests and the residency policy write them


@dataclass(frozen=True)
class Limits:
    """What one key allows, declared beside its field with `setting()`; `_check_limits` enforces it.

    Upper bounds are what a safety review accepts or what the machine can hold (`why` says which);
    `choices` is a registry's names, or a function returning them where the registry is not
    cheap to import when a config loads.
    """

    gt: float | None = None  # value > gt
    ge: float | None = None  # value >= ge
    lt: float | None = None  # value < lt
    le: float | None = None  # value <= le
    unit: str = ""
    why: str = ""
    choices: tuple[Any, ...] | Callable[[], Iterable[Any]] = ()
    pattern: str = ""  # a string's whole value must match
    fix: str = ""  # with pattern: what the refusal says after the value; with min_items: after "empty;"
    min_items: int = 0  # a list's least length

    def allowed(self) -> tuple[Any, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def describe(self, name: str) -> str:
        """The range as the refusals say it: "0 <= deadline_ms <= 500 ms (why)"."""
        lo = f"{self.gt:g} < " if self.gt is not None else f"{self.ge:g} <= " if self.ge is not None else ""
        hi = f" < {self.lt:g}" if self.lt is not None else f" <= {self.le:g}" if self.le is not None else ""
        return f"{lo}{name}{hi}" + (f" {self.unit}" if self.unit else "") + (f" ({self.why})" if self.why else "")


def setting(default: Any, **limits: Any) -> Any:
    """A config field with its default and its Limits (keyword arguments of `Limits`)."""
    return field(default=default, metadata={"limits": Limits(**limits)})


def _scenario_names() -> tuple[str, ...]:
    from edgert.runtime.sim import scenarios  # a plain table: no Numba, no road built

    return ("", *scenarios.names())  # "" = the seeded demo road


def _compressions() -> tuple[str, ...]:
    from edgert.runtime.fleet.mcapio import COMPRESSION

    return tuple(COMPRESSION)


@dataclass(frozen=True)
class PipelineSection:
    name: str = "edgert"
    mode: str = setting("processes", choices=("processes", "threads"))
    transport: str = setting("ipc", choices=("ipc", "tcp"))  # threads mode always uses inproc
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = setting(5550, ge=1024, le=65535 - 16, why="each topic uses base + its index")
    curve: bool = False  # tcp only: encrypt and authenticate every socket with ZeroMQ CURVE
    duration_s: float = setting(0.0, ge=0)  # 0 = until SIGINT/SIGTERM
    ready_timeout_s: float = setting(180.0, gt=0, le=3600.0, unit="s",
                                     why="a first start compiles kernels; an hour is a hang")
    # a restarted stage not ready (or a stage stuck stopping) this long is killed
    restart_timeout_s: float = setting(180.0, gt=0, le=3600.0, unit="s",
                                       why="as long as a first start may take (ready_timeout_s); longer is a hang")
    log_level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    affinity: dict[str, list[int]] = field(default_factory=dict)  # stage -> CPU cores
    mailbox: bool = True  # one host: stages read their inputs from shared-memory mailboxes (runtime/mailbox.py)
    # where the car is sold: only a model whose signed manifest approves it loads
    market: str = setting("sim", pattern=_NAME, fix="is not a market name; use lower-case letters, digits, '-' or '_' "
                          "as in a manifest's markets (e.g. \"sim\", \"eu\")")


@dataclass(frozen=True)
class CameraSection:
    source: str = setting("sim", choices=tuple(CAPTURE_SOURCES))
    width: int = setting(1920, gt=0, le=7680, unit="px", why="8K")
    height: int = setting(1080, gt=0, le=4320, unit="px", why="8K")
    fps: float = setting(30.0, ge=1, le=240.0, unit="frames/s",
                         why="the watchdog deadline and heartbeats follow the frame period")
    # the pixel format of the camera stream's slots, as the camera delivers it (runtime/topics.layout):
    # bgr | rgb (H, W, 3); nv12 | i420 (H * 3 // 2, W), YUV 4:2:0; yuyv (H, W, 2), YUV 4:2:2 (YUY2)
    format: str = setting("bgr", choices=CAMERA_FORMATS)
    # how a YUV format decodes to RGB (kernels/formats.py); only for nv12 / i420 / yuyv
    yuv_matrix: str = setting("bt601", choices=("bt601", "bt709"))
    yuv_range: str = setting("limited", choices=("limited", "full"))  # Y 16-235 (video) | 0-255 (JPEG-style)
    pool_slots: int = setting(4, ge=2, le=64, unit="slots",
                              why="2 so the camera never waits; each holds a whole frame in shared memory")
    # camera health, checked by preprocess on every frame (runtime/camhealth.py):
    dark_level: float = setting(12.0, ge=0)  # mean 8-bit level below which a frame is black -> CAMERA_BLACKOUT; 0 = off
    frozen_frames: int = setting(2, ge=0)  # frames in a row identical to the one before -> CAMERA_FROZEN; 0 = off
    # sources "frames" (benchmarks; runtime/stages/frames.py) and "video": "" = the source's own (frames: fixed,
    # video: stream); fixed (a camera at fps) | poisson (frames: arrivals at mean fps) | closed (next frame once
    # the command is out) | stream (video: the video's own rate)
    pacing: str = setting("", choices=("fixed", "poisson", "closed", "stream", ""))
    # cameras in lock-step, one (N, H, W, 3) slot per tick; the model's batch must be N
    cameras: int = setting(1, gt=0, le=16, unit="cameras", why="each tick's slot holds them all")
    frames: int = setting(8, gt=0, le=1024, unit="frames", why="each is held in memory")  # distinct images, cycled
    seed: int = 0  # poisson pacing's random gaps
    # source "video" only (runtime/stages/videosource.py): a video file (relative: to the config's folder) or a
    # stream URL (rtsp://, http(s)://), and whether a file starts over at its end (bench runs) or ends the run
    uri: str = ""
    loop: bool = False
    # source "v4l2" only (runtime/stages/v4l2source.py, docs/cameras.md): the device, e.g. "/dev/video0" or a
    # stable /dev/v4l/by-id/... path; and what to ask of it: "" = camera.format's own pixel format, "mjpeg" =
    # MJPEG, decoded into a bgr/rgb slot (USB 2 cameras give large sizes at full rate only as MJPEG)
    device: str = setting("", pattern=r"(/.*)?", fix="is not a device path; name it from /dev, e.g. \"/dev/video0\" "
                          "(`edgert cameras` lists them)")
    device_format: str = setting("", choices=("", "mjpeg"))


@dataclass(frozen=True)
class SimSection:
    road_seed: int = 7
    road_length_m: float = setting(20000.0, gt=0)  # at the end the car is carried back to the start
    speed_mps: float = setting(15.0, ge=0, le=70.0, unit="m/s", why="252 km/h")
    start_s_m: float = setting(0.0, ge=0)
    start_lateral_m: float = 0.0
    start_heading_rad: float = 0.0
    hfov_deg: float = setting(60.0, gt=0)
    camera_height_m: float = setting(1.3, gt=0)
    camera_pitch_deg: float = 4.0
    wheelbase_m: float = setting(2.7, gt=0)
    lane_width_m: float = setting(3.6, gt=0)
    # a departure is |lane error| > (lane_width - vehicle_width) / 2
    vehicle_width_m: float = setting(1.8, gt=0)
    # a named test scenario (runtime/sim/scenarios.py; `edgert sim list`); "" = the seeded road
    scenario: str = setting("", choices=_scenario_names)
    # the actuator applies each command this much later (a slower loop, for sweeps)
    added_latency_ms: float = setting(0.0, ge=0, le=2000.0, unit="ms")
    # fraction of frames rendered but never published (a lossy camera link)
    drop_rate: float = setting(0.0, ge=0, lt=1, why="1 would drop every frame")
    # no valid command this long: the actuator ramps to neutral; 0 = 6 frame periods
    actuator_timeout_ms: float = setting(0.0, ge=0, le=1000.0, unit="ms",
                                         why="an actuator holding a stale command longer is unsafe")


@dataclass(frozen=True)
class PreprocessSection:
    threads: int = setting(1, gt=0, le=256, unit="threads")


@dataclass(frozen=True)
class InferSection:
    model: str = "pilotnet"  # a zoo name (bundled models/<name>, then the user zoo) or a path to a model folder
    providers: list[str] = field(default_factory=lambda: ["auto"], metadata={"limits": Limits(
        min_items=1, fix="use [\"auto\"] or name providers, e.g. [\"CPUExecutionProvider\"]")})
    # 0 = as many as the cores this stage is pinned to
    intra_op_threads: int = setting(1, ge=0, le=256, unit="threads")
    profile: str = setting("auto", choices=PROFILES)  # runtime/profiles.py
    cache_dir: str = ""  # optimised graphs and TensorRT engines; "" = $XDG_CACHE_HOME/edgert, "off" = none
    pool_slots: int = setting(3, ge=2, le=64, unit="slots", why="each holds a model input in shared memory")
    warmup_runs: int = setting(5, ge=0, le=1000, unit="runs", why="start-up time")
    trusted_keys: str = ""  # folder of trusted publisher keys (<name>.pub); "" = the bundled models/publishers
    zoo: str = ""  # the user zoo, searched after the bundled one; "" = $XDG_DATA_HOME/edgert/models
    cuda_graph: bool = False  # on an NVIDIA GPU: capture the model once as a CUDA graph, replay it per frame


@dataclass(frozen=True)
class ControlSection:
    deadline_ms: float = setting(0.0, ge=0, le=500.0, unit="ms",  # 0 = two frame periods
                                 why="a command older than this still steers; 0 = two frame periods, "
                                     "which must be within the bound too")
    max_steer_rad: float = setting(0.5, gt=0, le=0.6, unit="rad",
                                   why="about a passenger car's full road-wheel lock (34 degrees)")
    # a model output beyond this is invalid (a takeover), not clamped
    plausible_steer_rad: float = setting(1.0, gt=0, le=1.0, unit="rad",
                                         why="beyond any road wheel's lock: larger outputs are faults")
    max_steer_rate_rad_s: float = setting(2.0, gt=0, le=2.0, unit="rad/s",
                                          why="road-wheel rate; faster than a driver can follow")
    failsafe_decel_mps2: float = setting(2.0, ge=0, le=5.0, unit="m/s^2",
                                         why="a fail-safe stop harder than ~0.5 g invites a rear-end collision")
    # consecutive good results before leaving fail-safe
    recover_after: int = setting(3, gt=0, le=300, unit="results", why="10 s at 30 fps")
    # "" = no CAN output; "socketcan" or "virtual" (python-can interfaces)
    can_interface: str = setting("", choices=("", "socketcan", "virtual"))
    can_channel: str = ""  # e.g. "can0", "vcan0"
    # standard 11-bit id of the command frame
    can_id: int = setting(0x2E4, ge=0, le=0x7FF, why="an id above 2047 is not a standard 11-bit CAN id")


@dataclass(frozen=True)
class RecordSection:
    """The optional recorder stage (runtime/stages/recorder.py, docs/fleet.md)."""

    enabled: bool = False
    dir: str = ""  # where recordings go; "" = $XDG_DATA_HOME/edgert/recordings
    # clips (pre_s..post_s around each event) | all (everything, in segment_s files)
    mode: str = setting("clips", choices=("clips", "all"))
    pre_s: float = setting(5.0, ge=0, le=300.0, unit="s")  # seconds before an event that its clip starts
    post_s: float = setting(5.0, ge=0, le=300.0, unit="s")  # seconds after the (last) event that its clip ends
    # how far back the in-memory ring reaches (>= pre_s)
    ring_s: float = setting(10.0, gt=0, le=600.0, unit="s", why="the ring is held in memory")
    # bytes bound of the ring in MiB; 0 = sized for ring_s of frames at the camera's size and rate
    ring_mb: int = setting(0, ge=0, le=65536, unit="MiB", why="the ring is held in memory")
    # raw (bit-exact, replayable) | image (foxglove.RawImage in camera.format, bit-exact, viewable in
    # Foxglove) | jpeg (foxglove.CompressedImage, lossy) | none
    frames: str = setting("raw", choices=("raw", "image", "jpeg", "none"))
    jpeg_quality: int = setting(90, ge=1, le=100)
    compression: str = setting("lz4", choices=_compressions)  # MCAP chunk compression (runtime/fleet/mcapio.py)
    # a file never spans more than this: a crash loses at most the open one
    segment_s: float = setting(60.0, gt=0, le=3600.0, unit="s", why="a crash loses the open file")
    # region of collection written into every recording (e.g. "eu"); required when enabled
    region: str = setting("", pattern=f"({_NAME})?", fix="is not a region name; use lower-case letters, digits, "
                          "'-' or '_' as in configs/fleet-policy.toml (e.g. \"eu\", \"us\", \"sim\")")
    vehicle_id: str = setting("", pattern=r"[A-Za-z0-9._-]*", fix="may use only letters, digits, '.', '_' and '-' "
                              "(it is part of every recording's file name)")  # "" = the host name
    # the recorder runs this much below the pipeline's priority
    nice: int = setting(10, ge=0, le=19, why="how far below the pipeline the recorder runs")
    idle_class: bool = True  # Linux SCHED_IDLE: the recorder gets only CPU time no pipeline stage wants
    policy: str = ""  # residency policy (anonymise/encrypt per region); "" = configs/fleet-policy.toml;
    # "off" = no duties applied (replay's scratch recordings only: export refuses what they would need)
    keys_dir: str = ""  # per-region clip keys (`edgert fleet keygen`); "" = $XDG_DATA_HOME/edgert/fleet/keys
    face_model: str = ""  # YuNet ONNX file for faces; "" = OpenCV's bundled Haar cascade


@dataclass(frozen=True)
class ReplaySection:
    """camera.source = "replay": recorded frames fed through the pipeline (`edgert replay`)."""

    file: str = ""  # the .mcap recording (with /camera/raw or /camera/jpeg frames)
    # 1 = recorded pace, 2 = twice as fast, ...; 0 = as fast as the pipeline drains
    speed: float = setting(1.0, ge=0, le=100.0, unit="x")


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
    nodes: tuple[NodeSpec, ...] = ()  # the user's own stages, [[nodes]] (runtime/node.py, docs/nodes.md)
    base_dir: str = str(DEFAULT_CONFIG.parent)  # where relative paths in the file are resolved (paths.resolve)

    def record_dir(self) -> Path:
        """Where the recorder writes: record.dir, relative to the config's folder, or the user's data folder."""
        d = self.record.dir
        return paths.resolve(d, self.base_dir) if d else paths.recordings()

    def record_path(self, key: str) -> Path | None:
        """record.policy / keys_dir / face_model resolved against the config's folder; their defaults for ""."""
        v = getattr(self.record, key)
        if not v:
            return {"policy": paths.fleet_policy(), "keys_dir": paths.fleet_home() / "keys"}.get(key)
        if key == "policy" and v == "off":
            return None
        return paths.resolve(v, self.base_dir)

    def replay_file(self) -> Path:
        return paths.resolve(self.replay.file, self.base_dir)

    def video_uri(self) -> str:
        """camera.uri: a stream URL as written, a file path resolved against the config's folder."""
        from edgert.runtime.video import is_stream

        u = self.camera.uri
        return u if is_stream(u) else str(paths.resolve(u, self.base_dir))

    @property
    def deadline_ns(self) -> int:
        ms = self.control.deadline_ms or 2000.0 / self.camera.fps
        return int(ms * 1e6)

    def cache_dir(self) -> Path | None:
        c = self.infer.cache_dir
        if c == "off":
            return None
        return paths.resolve(c, self.base_dir) if c else paths.cache_home()

    def trusted_keys_dir(self) -> Path:
        """Where the publishers' public keys are that model manifests must be signed with."""
        k = self.infer.trusted_keys
        return paths.resolve(k, self.base_dir) if k else paths.publishers()

    def zoos(self) -> list[Path]:
        """Where a model named by its zoo name is looked for, in order: the bundled zoo, the user zoo."""
        return [MODELS_DIR, paths.resolve(self.infer.zoo, self.base_dir) if self.infer.zoo else paths.user_zoo()]

    def model_dir(self) -> Path:
        """infer.model as a folder: a zoo name found in the first zoo that has it, or a path."""
        m = self.infer.model
        if "/" not in m and os.sep not in m:
            found = [z / m for z in self.zoos() if (z / m / "manifest.toml").is_file()]
            return found[0] if found else MODELS_DIR / m
        return paths.resolve(m, self.base_dir)

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


_SECTIONS: dict[str, type] = {"pipeline": PipelineSection, "camera": CameraSection, "sim": SimSection,
                              "preprocess": PreprocessSection, "infer": InferSection, "control": ControlSection,
                              "record": RecordSection, "replay": ReplaySection}


def _check_limits(key: str, v: Any, lim: Limits) -> None:
    """Refuse `v` unless it is within the Limits declared beside its field; the message names the
    key, the value and what is allowed."""
    name = key.rsplit(".", 1)[-1]
    allowed = lim.allowed()
    if allowed and v not in allowed:
        close = difflib.get_close_matches(str(v), [str(a) for a in allowed if a], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(repr, allowed))}{hint}")
    if lim.pattern and not re.fullmatch(lim.pattern, v):
        raise ConfigError(f"{key}: {v!r} {lim.fix}")
    if isinstance(v, list) and len(v) < lim.min_items:
        raise ConfigError(f"{key}: empty; {lim.fix}")
    if (lim.gt is not None and not v > lim.gt) or (lim.ge is not None and not v >= lim.ge):
        op, bound = (">", lim.gt) if lim.gt is not None else (">=", lim.ge)
        more = lim.lt is not None or lim.le is not None or lim.why
        raise ConfigError(f"{key}: must be {op} {bound:g}, got {v!r}" + (f"; its range is {lim.describe(name)}"
                                                                           if more else ""))
    if (lim.lt is not None and not v < lim.lt) or (lim.le is not None and not v <= lim.le):
        raise ConfigError(f"{key}: {v!r} is outside its range {lim.describe(name)}")


def limits(key: str) -> Limits:
    """The Limits declared beside config key "section.name" (no limits where it declares none)."""
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])} if section in _SECTIONS else {}
    if name not in fields:
        raise KeyError(f"no config key {key!r}")
    return fields[name].metadata.get("limits", Limits())


def choices(key: str) -> tuple[Any, ...]:
    """What config key "section.name" may be set to, from its registry (the CLI's `choices=` too)."""
    return limits(key).allowed()


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
        if "limits" in hints[k].metadata:
            _check_limits(key, v, hints[k].metadata["limits"])
        values[k] = v
    return cls(**values)


def from_dict(raw: dict[str, Any], base_dir: str | Path = DEFAULT_CONFIG.parent) -> PipelineConfig:
    for k in raw:
        if k not in _SECTIONS and k != "nodes":
            raise _unknown(k, [*_SECTIONS, "nodes"])
    built = {name: _section(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()}
    cfg = PipelineConfig(**built, nodes=_nodes(raw.get("nodes", [])), base_dir=str(base_dir))
    _cross_check(cfg)
    return cfg


def _stage_names() -> tuple[str, ...]:
    """The built-in stages, from the stage registry (runtime/stages), imported only where a config
    names a stage (pipeline.affinity, [[nodes]]): it loads the stage base class and its imports."""
    from edgert.runtime.stages import _CLASSES

    return tuple(_CLASSES)


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
        if stage not in _stage_names() and stage not in [n.name for n in cfg.nodes]:
            raise _unknown(f"pipeline.affinity.{stage}", [*_stage_names(), *(n.name for n in cfg.nodes)])
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
    deadline = limits("control.deadline_ms")
    if deadline.le is not None and cfg.deadline_ns > deadline.le * 1e6:
        raise ConfigError(f"control.deadline_ms: 0 means two frame periods, {cfg.deadline_ns / 1e6:g} ms at "
                          f"camera.fps = {cfg.camera.fps:g}: outside its range {deadline.describe('deadline_ms')}; "
                          "set control.deadline_ms or a higher camera.fps")
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
    if cfg.camera.source != "frames" and cfg.camera.cameras != 1:
        raise ConfigError(f"camera.cameras: {cfg.camera.cameras!r} needs camera.source = \"frames\" (only that "
                          "source has lock-step cameras); remove the key or set the source")
    _check_pacing(cfg)
    _check_video(cfg)
    _check_sim(cfg)
    _check_format(cfg)
    _check_record(cfg)
    _check_v4l2(cfg)
    if not (cfg.model_dir() / "manifest.toml").is_file():
        names = sorted({p.name for z in cfg.zoos() if z.is_dir()
                        for p in z.iterdir() if (p / "manifest.toml").is_file()})
        raise ConfigError(f"infer.model: no manifest.toml in {cfg.model_dir()}; name a model folder "
                          f"or one of the zoo's: {', '.join(names)} (searched: {', '.join(map(str, cfg.zoos()))})")


def ring_bytes(cfg: PipelineConfig) -> int:
    """The recorder ring's size: record.ring_mb, or (0) ring_s of frames at the camera's size and rate + 16 MiB."""
    rec, cam = cfg.record, cfg.camera
    if rec.ring_mb:
        return rec.ring_mb << 20
    frames = 0 if rec.frames == "none" else int(rec.ring_s * cam.fps * 1.1 + 2) * _frame_bytes(cfg)
    return frames + (16 << 20)  # the small topics need well under 1 MiB a minute


def _frame_bytes(cfg: PipelineConfig) -> int:
    from edgert.runtime.topics import CAMERA_STREAM, layout  # a plain table: topics imports no stage

    return layout(CAMERA_STREAM, cfg).slot_bytes


def _check_record(cfg: PipelineConfig) -> None:
    """The recorder's and the replay source's keys (docs/fleet.md)."""
    rec = cfg.record
    if rec.enabled and not rec.region:
        raise ConfigError("record.region: required when record.enabled: every recording is tagged with the region "
                          "where it is collected (e.g. region = \"eu\"; the residency policy is looked up by it)")
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


_PACINGS = {"frames": ("fixed", "poisson", "closed"), "video": ("stream", "fixed", "closed")}


def _check_pacing(cfg: PipelineConfig) -> None:
    """camera.pacing: each source that paces takes its own set; the others none."""
    pacing, source = cfg.camera.pacing, cfg.camera.source
    if pacing and pacing not in _PACINGS.get(source, ()):
        takes = " or ".join(f'"{s}"' for s, ps in _PACINGS.items() if pacing in ps)
        own = f"; source {source!r} takes {', '.join(_PACINGS[source])}" if source in _PACINGS else ""
        raise ConfigError(f"camera.pacing: {pacing!r} needs camera.source = {takes} (the sources with benchmark "
                          f"pacing{own}); remove the key or set the source")


def _check_video(cfg: PipelineConfig) -> None:
    """camera.uri / camera.loop: the video source's keys, required there and refused elsewhere."""
    cam = cfg.camera
    if cam.source != "video":
        for key, default in (("uri", ""), ("loop", False)):
            if getattr(cam, key) != default:
                raise ConfigError(f"camera.{key}: set, but camera.source is {cam.source!r}; set camera.source = "
                                  "\"video\" to read a video file or stream, or remove the key")
        return
    if not cam.uri:
        raise ConfigError("camera.uri: required with camera.source = \"video\"; name a video file (relative to the "
                          "config's folder; `edgert sim clip road.mp4` makes one) or a stream URL (rtsp://, http://)")
    import importlib.util

    from edgert.runtime.video import is_stream

    if cam.format not in ("bgr", "rgb", "nv12", "i420"):
        raise ConfigError(f"camera.format: {cam.format!r}: the video source writes decoded frames as 'bgr', 'rgb', "
                          "'nv12' or 'i420' (H.264/H.265 decode to 4:2:0: 'i420' and 'nv12' copy it unconverted)")
    if importlib.util.find_spec("av") is None:  # not imported here: a config loads in every stage process
        raise ConfigError("camera.source = \"video\" decodes with FFmpeg through PyAV, which is not installed: "
                          "pip install 'edgert[camera]'")
    if not is_stream(cam.uri):
        if "://" in cam.uri:
            raise ConfigError(f"camera.uri: {cam.uri!r}: not a scheme the video source reads; use a file path or "
                              "an rtsp://, rtsps://, rtmp://, http(s)://, udp://, tcp:// or srt:// URL")
        if not Path(cfg.video_uri()).is_file():
            raise ConfigError(f"camera.uri: {cfg.video_uri()} not found (a relative path resolves against the "
                              f"config's folder); make one with `edgert sim clip {cfg.video_uri()}` or name an "
                              "existing file")


def _check_v4l2(cfg: PipelineConfig) -> None:
    """camera.device and device_format belong to the v4l2 source (docs/cameras.md)."""
    cam = cfg.camera
    if cam.source == "v4l2":
        if not cam.device:
            raise ConfigError("camera.device: required with camera.source = \"v4l2\"; name the camera, e.g. "
                              "device = \"/dev/video0\" (`edgert cameras` lists what is plugged in)")
        if cam.device_format == "mjpeg" and cam.format not in ("bgr", "rgb"):
            raise ConfigError(f"camera.device_format: \"mjpeg\" is decoded to BGR, and camera.format is "
                              f"{cam.format!r}; set camera.format = \"bgr\" (or \"rgb\"), or device_format = \"\" "
                              "to take the camera's own format")
        return
    for key in ("device", "device_format"):
        if getattr(cam, key):
            raise ConfigError(f"camera.{key}: set, but camera.source is {cam.source!r}; only camera.source = "
                              "\"v4l2\" reads a device: set the source or remove the key")


def _check_sim(cfg: PipelineConfig) -> None:
    """The simulator's test-bench keys that depend on others: actuator timeout, camera health."""
    sim = cfg.sim
    period_ms = 1000.0 / cfg.camera.fps
    if sim.actuator_timeout_ms and sim.actuator_timeout_ms < 2 * period_ms:
        raise ConfigError(f"sim.actuator_timeout_ms: {sim.actuator_timeout_ms} ms is under two frame periods "
                          f"({2 * period_ms:.1f} ms): commands come once a period, so it would time out between "
                          "them; use 0 (six periods) or a longer timeout")
    if cfg.camera.source == "frames" and cfg.camera.frames == 1 and cfg.camera.frozen_frames:
        raise ConfigError("camera.frozen_frames: the frames source with camera.frames = 1 repeats one image by "
                          "design, which the frozen-camera check flags; set camera.frozen_frames = 0 or frames >= 2")


def _check_format(cfg: PipelineConfig) -> None:
    """camera.format against the frame size, and the YUV keys against the format (kernels/formats.py)."""
    cam = cfg.camera
    if cam.format in ("nv12", "i420") and (cam.width % 2 or cam.height % 2):
        raise ConfigError(f"camera.format: {cam.format!r} is YUV 4:2:0 (one chroma sample per 2x2 pixels) and needs "
                          f"an even width and height, got {cam.width}x{cam.height}; set camera.width/height to even "
                          "sizes (crop the camera)")
    if cam.format == "yuyv" and cam.width % 2:
        raise ConfigError(f"camera.format: 'yuyv' is YUV 4:2:2 (one chroma pair per 2 pixels) and needs an even "
                          f"width, got {cam.width}; set camera.width to an even size (crop the camera)")
    if cam.format not in YUV_FORMATS:
        for key, default in (("yuv_matrix", "bt601"), ("yuv_range", "limited")):
            if getattr(cam, key) != default:
                raise ConfigError(f"camera.{key}: {getattr(cam, key)!r} says how YUV decodes, but camera.format is "
                                  f"{cam.format!r}; remove the key or set camera.format to one of "
                                  f"{', '.join(repr(f) for f in YUV_FORMATS)}")


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


# -- [[nodes]]: the user's own stages (runtime/node.py, docs/nodes.md) -----------------------------
NODE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,15}")  # fits a heartbeat's 16-byte stage field
NODE_ENTRY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_PARAM_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class NodeSpec:
    """One [[nodes]] table: a user node the supervisor starts beside the built-in stages."""

    name: str  # its stage name: logs, heartbeats, the run summary, pipeline.affinity
    entry: str  # "package.module:Class", a subclass of edgert.Node importable in this environment
    inputs: list[str] = field(default_factory=list)  # topics it reads; [] = the class's own `inputs`
    params: dict[str, Any] = field(default_factory=dict)  # the node's `self.params`: strings, numbers, booleans, lists


def _node(i: int, raw: Any, seen: set[str]) -> NodeSpec:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table ([[nodes]] with name = ..., entry = ...), got {raw!r}")
    allowed = [f.name for f in dataclasses.fields(NodeSpec)]
    for k in raw:
        if k not in allowed:
            raise _unknown(f"{where}.{k}", allowed)
    for k in ("name", "entry"):
        if k not in raw:
            raise ConfigError(f"{where}.{k}: required (e.g. name = \"steer_monitor\", "
                              "entry = \"mypackage.nodes:SteerMonitor\")")
    name = _check_type(f"{where}.name", raw["name"], str)
    where = f"[[nodes]] {name!r}"
    if not NODE_NAME.fullmatch(name):
        raise ConfigError(f"{where}: a node name is 1 to 16 lower-case letters, digits, '_' or '-', starting with a "
                          "letter")
    if name in _stage_names() or name == "supervisor":
        raise ConfigError(f"{where}: the name of a built-in stage; give the node another name")
    if name in seen:
        raise ConfigError(f"{where}: two nodes with this name; give each node its own")
    seen.add(name)
    entry = _check_type(f"{where}.entry", raw["entry"], str)
    if not NODE_ENTRY.fullmatch(entry):
        raise ConfigError(f"{where}.entry: {entry!r} is not 'package.module:Class'")
    inputs = _check_type(f"{where}.inputs", raw.get("inputs", []), list[str])
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params: expected a table, e.g. params = {{ window = 30 }}, got {params!r}")
    for k, v in params.items():
        items = v if isinstance(v, list) else [v]
        if not all(isinstance(x, _PARAM_TYPES) for x in items):
            raise ConfigError(f"{where}.params.{k}: {v!r}; a parameter is a string, number, boolean or a list "
                              "of them")
    return NodeSpec(name, entry, inputs, params)


def _nodes(raw: Any) -> tuple[NodeSpec, ...]:
    """The [[nodes]] tables, checked here as far as the file alone allows; whether each entry point
    imports, is a Node, and reads existing topics is checked when a run starts (runtime/node.py)."""
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"nodes: expected [[nodes]] tables, got {raw!r}")
    seen: set[str] = set()
    return tuple(_node(i, n, seen) for i, n in enumerate(raw))
