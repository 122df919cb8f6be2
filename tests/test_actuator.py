"""The simulated actuator never reports a negative command age, whatever stamp a command carries."""

from __future__ import annotations

from edgert.runtime.e2e import CLOCK_SKEW_NS
from edgert.runtime.sim.actuator import Actuator

MS = 1_000_000


def test_a_capture_stamp_within_the_allowed_skew_is_no_later_than_the_command_took_effect():
    """The end-to-end check accepts stamps up to CLOCK_SKEW_NS after its clock; the capture stage
    then reports act time - capture stamp as the command's age, in an unsigned field."""
    a = Actuator(timeout_ns=200 * MS, ramp_rate_rad_s=2.0)
    now = 10**12
    a.receive(0.1, 0.0, now + CLOCK_SKEW_NS, now)
    assert a.update(now, 1 / 30)
    assert a.capture_ns <= now and now - a.capture_ns >= 0
