"""The simulated car's steering actuator (EPS ECU): command delay line and command timeout.

A real actuator ECU does not hold the last command forever: if no valid command arrives
within its timeout (the control stage crashed, the link broke), it ramps the steering to
neutral by itself, releases any deceleration request, and flags it, until a fresh valid
command re-engages it. Before the first command it is not engaged, so there is nothing to
time out. `delay_ns` adds a lag between receiving a command (where the end-to-end check is
made) and applying it: the knob of `edgert sim --added-latency-ms` and of the latency sweep.
Commands wait in a preallocated ring; nothing is allocated per command.
"""

from __future__ import annotations

import numpy as np


class Actuator:
    def __init__(self, timeout_ns: int, ramp_rate_rad_s: float, delay_ns: int = 0, period_ns: int = 33_333_333) -> None:
        if timeout_ns <= 0 or ramp_rate_rad_s <= 0 or delay_ns < 0:
            raise ValueError("Actuator: timeout_ns and ramp_rate_rad_s must be > 0, delay_ns >= 0")
        self.timeout_ns, self.rate, self.delay_ns = int(timeout_ns), float(ramp_rate_rad_s), int(delay_ns)
        n = int(delay_ns // max(period_ns, 1)) + 16  # commands in flight over the delay, with room to spare
        self._due = np.zeros(n, np.int64)
        self._capture = np.zeros(n, np.int64)
        self._cmd = np.zeros((n, 2), np.float64)  # steer, accel
        self._head = self._tail = 0  # ring: head = oldest pending, tail = next free
        self.steer = 0.0
        self.accel = 0.0
        self.capture_ns = 0  # capture stamp of the frame behind the command in effect
        self.engaged = False
        self.timed_out = False
        self.timeouts = 0  # times the timeout fired
        self.last_rx_ns = 0

    def receive(self, steer: float, accel: float, capture_ns: int, now_ns: int) -> None:
        """A command that passed the end-to-end check, received at now_ns. Its frame counts as captured
        no later than that: the check allows a little clock skew, an age must never go negative."""
        n = len(self._due)
        if (self._tail + 1) % n == self._head:  # full (commands faster than periods): the oldest goes
            self._head = (self._head + 1) % n
        t = self._tail
        self._due[t] = now_ns + self.delay_ns
        self._capture[t] = min(capture_ns, now_ns)
        self._cmd[t, 0], self._cmd[t, 1] = steer, accel
        self._tail = (t + 1) % n
        self.last_rx_ns = now_ns

    def update(self, now_ns: int, dt_s: float) -> bool:
        """Apply the newest command now due, or time out; True if a new command took effect."""
        new = False
        n = len(self._due)
        while self._head != self._tail and self._due[self._head] <= now_ns:
            h = self._head
            self.steer, self.accel = float(self._cmd[h, 0]), float(self._cmd[h, 1])
            self.capture_ns = int(self._capture[h])
            self._head = (h + 1) % n
            new = True
        if new:
            self.engaged = True
            self.timed_out = False
        elif self.engaged and now_ns - self.last_rx_ns > self.timeout_ns:
            if not self.timed_out:
                self.timed_out = True
                self.timeouts += 1
                self._head = self._tail  # whatever was still in the delay line is too old now
            step = self.rate * dt_s
            self.steer = min(max(0.0, self.steer - step), self.steer + step)
            self.accel = 0.0
        return new
