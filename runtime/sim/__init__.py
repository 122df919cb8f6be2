"""The road-camera simulator: the embedded default camera source and the closed loop's car.

Attributes load lazily (PEP 562), so config validation can read the scenario table
(runtime.sim.scenarios) without importing Numba and compiling the renderer.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PinholeCamera": "edgert.runtime.sim.camera",
    "expert_steer": "edgert.runtime.sim.expert",
    "Renderer": "edgert.runtime.sim.render",
    "Road": "edgert.runtime.sim.road",
    "BicycleModel": "edgert.runtime.sim.vehicle",
    "VehicleState": "edgert.runtime.sim.vehicle",
    "initial_state": "edgert.runtime.sim.vehicle",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgert.runtime.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
