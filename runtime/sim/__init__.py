"""The road-camera simulator: the embedded default camera source and the closed loop's car."""

from runtime.sim.camera import PinholeCamera
from runtime.sim.expert import expert_steer
from runtime.sim.render import Renderer
from runtime.sim.road import Road
from runtime.sim.vehicle import BicycleModel, VehicleState, initial_state

__all__ = ["BicycleModel", "PinholeCamera", "Renderer", "Road", "VehicleState", "expert_steer", "initial_state"]
