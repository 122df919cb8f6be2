"""Reconnect back-off for a camera or stream that went away: quick first retries, then at most
every `max_s`, reset once frames flow again.

Why: a USB camera that re-enumerates comes back within a second, an RTSP camera after a reboot
in tens of seconds; retrying in a tight loop would burn the CPU the rest of the pipeline needs, and
a fixed long wait would keep the car in takeover longer than the camera was gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    first_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    attempts: int = field(default=0, init=False)
    _next_ns: int = field(default=0, init=False)

    def due(self, now_ns: int) -> bool:
        """Whether the next attempt may run now."""
        return now_ns >= self._next_ns

    def failed(self, now_ns: int) -> float:
        """Record a failed attempt at `now_ns`; return the wait (s) before the next one."""
        wait = min(self.max_s, self.first_s * self.factor ** self.attempts)
        self.attempts += 1
        self._next_ns = now_ns + int(wait * 1e9)
        return wait

    def reset(self) -> None:
        """Frames flow again: the next loss starts from the first, short wait."""
        self.attempts = 0
        self._next_ns = 0
