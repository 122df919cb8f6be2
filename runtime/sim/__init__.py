"""The road-camera simulator: the embedded default camera source and the closed loop's car.

Attributes load lazily (PEP 562), so config validation can read the scenario table
(runtime.sim.scenarios) without importing Numba and compiling the renderer.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PinholeCamera": "runtime.sim.camera",
    "expert_steer": "runtime.sim.expert",
    "Renderer": "runtime.sim.render",
    "Road": "runtime.sim.road",
    "BicycleModel": "runtime.sim.vehicle",
    "VehicleState": "runtime.sim.vehicle",
    "initial_state": "runtime.sim.vehicle",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'runtime.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
