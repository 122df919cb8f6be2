"""The closed loop as a test bench: named driving scenarios and what each must end in.

A scenario is data: the road (explicit curvature holds, see Road's `segments`), stretches
without lane markings, camera conditions over time windows (light gain, noise, blackout,
frozen frames), a duration, and the EXPECTED outcome: the car stays in its lane with no
takeover request, or the system hands over with a given reason within a bounded number of
frames of the fault. `judge` checks a run's summary against it. Importing this module is
cheap (no Numba, no road is built), so config validation can list the names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

IN_LANE = "in_lane"
EFFECT_KINDS = ("gain", "noise", "blackout", "frozen")
ROAD_MARGIN_M = 300.0  # road beyond the distance driven: the camera sees 150 m ahead, capture wraps 50 m before


@dataclass(frozen=True)
class Effect:
    """A camera condition between t0_s and t1_s of sim time (from the first frame).

    gain: light level ramps linearly from gain_from to gain_to over the window;
    noise: gaussian sigma (8-bit steps) and a salt-and-pepper fraction;
    blackout: black frames; frozen: the last image before the window, repeated.
    outside_odd: ground truth that the window's light is outside the range the shipped model is
    validated for (its manifest's [odd]): the run must hand over with LIGHT_OUTSIDE_ODD.
    """

    kind: str
    t0_s: float
    t1_s: float
    gain_from: float = 1.0
    gain_to: float = 1.0
    sigma: float = 0.0
    salt: float = 0.0
    outside_odd: bool = False

    def __post_init__(self) -> None:
        if self.kind not in EFFECT_KINDS:
            raise ValueError(f"effect kind {self.kind!r} unknown; kinds: {', '.join(EFFECT_KINDS)}")
        if not 0 <= self.t0_s < self.t1_s:
            raise ValueError(f"effect {self.kind}: window ({self.t0_s}, {self.t1_s}) needs 0 <= t0_s < t1_s")
        if min(self.gain_from, self.gain_to) < 0 or self.sigma < 0 or not 0 <= self.salt < 0.5:
            raise ValueError(f"effect {self.kind}: gains and sigma must be >= 0 and salt in [0, 0.5)")


@dataclass
class CameraCondition:
    """What the camera does on one frame; one instance is updated in place per frame."""

    blackout: bool = False
    frozen: bool = False
    gain: float = 1.0
    sigma: float = 0.0
    salt: float = 0.0
    outside_odd: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    segments: tuple[tuple[float, float], ...]  # (length m, curvature 1/m, left positive) holds
    duration_s: float
    effects: tuple[Effect, ...] = ()
    unmarked: tuple[tuple[float, float], ...] = ()  # (s0, s1) metres of road without markings
    expect: str = IN_LANE  # IN_LANE, or the TakeoverReason name the run must hand over with
    react_frames: int = 0  # for a takeover: at most this many frame periods after the fault starts

    def road_length(self, speed_mps: float, start_s_m: float = 0.0) -> float:
        """Long enough for the whole run at `speed_mps`, plus what the camera sees beyond."""
        return start_s_m + speed_mps * self.duration_s + ROAD_MARGIN_M

    def condition_at(self, t_s: float, out: CameraCondition) -> CameraCondition:
        """The camera condition at sim time t_s, written into `out` (no allocation per frame)."""
        out.blackout = out.frozen = out.outside_odd = False
        out.gain, out.sigma, out.salt = 1.0, 0.0, 0.0
        for e in self.effects:
            if not e.t0_s <= t_s < e.t1_s:
                continue
            out.outside_odd |= e.outside_odd
            if e.kind == "blackout":
                out.blackout = True
            elif e.kind == "frozen":
                out.frozen = True
            elif e.kind == "gain":
                f = (t_s - e.t0_s) / (e.t1_s - e.t0_s)
                out.gain *= e.gain_from + f * (e.gain_to - e.gain_from)
            else:
                out.sigma, out.salt = max(out.sigma, e.sigma), max(out.salt, e.salt)
        return out


def _light() -> tuple[Effect, ...]:
    """Dusk, then low sun: the light drops to 80 % over 1.5 s, holds, then rises to 120 %.
    The shipped model's steering has a brightness bias: at 75 % it ran 0.64 m off centre, at
    45 % it drifted out of the lane with no takeover request (docs/demo.md)."""
    return (Effect("gain", 1.0, 2.5, gain_from=1.0, gain_to=0.8), Effect("gain", 2.5, 3.5, 0.8, 0.8),
            Effect("gain", 3.5, 5.0, gain_from=0.8, gain_to=1.2), Effect("gain", 5.0, 6.0, 1.2, 1.2))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("straight", "a straight road", ((200.0, 0.0),), 4.0),
    Scenario("gentle_curve", "a 500 m-radius left curve after 30 m of straight",
             ((30.0, 0.0), (400.0, 1 / 500)), 5.0),
    Scenario("sharp_curve", "a 150 m-radius right curve (the tightest of the training roads)",
             ((30.0, 0.0), (400.0, -1 / 150)), 5.0),
    Scenario("s_bend", "left then right then left, 200 m radius, with 30-60 m clothoids between",
             ((30.0, 0.0), (30.0, 1 / 200), (30.0, -1 / 200), (60.0, 1 / 200)), 7.0),
    Scenario("changing_light", "a gentle curve while the light drops to 80 % and rises to 120 %",
             ((30.0, 0.0), (400.0, 1 / 500)), 6.0, effects=_light()),
    Scenario("tunnel", "an underpass on a straight: for 1 s the light drops to 45 %, below the range the model is "
             "validated for (at 45 % it drove out of the lane on the gentle curve with no takeover request)",
             ((200.0, 0.0),), 4.0, effects=(Effect("gain", 1.5, 2.5, 0.45, 0.45, outside_odd=True),),
             expect="LIGHT_OUTSIDE_ODD", react_frames=3),
    Scenario("blackout", "the camera delivers black frames for 1 s on a straight",
             ((200.0, 0.0),), 4.0, effects=(Effect("blackout", 1.5, 2.5),),
             expect="CAMERA_BLACKOUT", react_frames=3),
    Scenario("frozen", "the camera repeats the same image for 1 s on a straight",
             ((200.0, 0.0),), 4.0, effects=(Effect("frozen", 1.5, 2.5),),
             expect="CAMERA_FROZEN", react_frames=4),
    Scenario("sensor_noise", "a gentle curve seen through gaussian noise (sigma 12) and 0.3 % dead/hot pixels",
             ((30.0, 0.0), (400.0, 1 / 500)), 4.0, effects=(Effect("noise", 0.0, 1e9, sigma=12.0, salt=0.003),)),
    Scenario("no_markings", "a 400 m-radius curve with no lane markings from 40 m to 140 m",
             ((30.0, 0.0), (400.0, 1 / 400)), 5.0, unmarked=((40.0, 140.0),)),
)}


def names() -> list[str]:
    return list(SCENARIOS)


def get(name: str) -> Scenario:
    """The scenario called `name`; a ValueError lists the valid names."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)} "
                         "(`edgert sim list` describes them)") from None


@dataclass
class Outcome:
    ok: bool
    expected: str
    happened: str
    reaction_frames: float | None = None  # fault start -> takeover request, in frame periods


def judge(scn: Scenario, summary: dict[str, Any], fps: float) -> Outcome:
    """Did the run end as the scenario expects? `summary` is Supervisor.run()'s."""
    lane = summary.get("lane", {})
    departures = int(lane.get("departures", 0))
    takeovers = [t for t in summary.get("takeovers", []) if t["reason"] != "SHUTDOWN"]
    reasons = [t["reason"] for t in takeovers]
    if departures:
        first_dep = (lane.get("departure_t_ns") or [0])[0]
        before = not takeovers or first_dep < takeovers[0]["t_ns"]
        what = f"left the lane {departures} time(s){' before any takeover request' if before else ''}"
    else:
        what = "stayed in lane"
    happened = what + (f"; takeover request(s): {', '.join(reasons)}" if reasons else "; no takeover request")
    if scn.expect == IN_LANE:
        return Outcome(departures == 0 and not takeovers, "stays in lane, no takeover request", happened)
    expected = f"hands over with {scn.expect} within {scn.react_frames} frames of the fault, in lane until then"
    fault = summary.get("injected_faults", {}).get(scn.expect)
    if not takeovers or reasons[0] != scn.expect or fault is None:
        return Outcome(False, expected, happened + ("" if fault else f"; no {scn.expect} fault was injected"))
    reaction = (takeovers[0]["t_ns"] - fault["first_t_ns"]) * fps / 1e9
    in_lane_until = not departures or (lane.get("departure_t_ns") or [0])[0] > takeovers[0]["t_ns"]
    ok = 0 <= reaction <= scn.react_frames and in_lane_until
    return Outcome(ok, expected, happened + f"; {scn.expect} after {reaction:.1f} frame periods", reaction)


def check_table() -> None:
    """Every scenario is well formed (run by the tests; cheap)."""
    for s in SCENARIOS.values():
        if s.duration_s <= 0 or not all(math.isfinite(v) for seg in s.segments for v in seg):
            raise ValueError(f"scenario {s.name}: bad duration or segments")
        if s.expect != IN_LANE and s.react_frames <= 0:
            raise ValueError(f"scenario {s.name}: a takeover scenario needs react_frames > 0")
