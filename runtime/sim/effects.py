"""Camera faults and conditions the simulator puts on a rendered frame, in place.

Light (a gain), sensor noise (gaussian, and salt-and-pepper as dead/hot pixels), a blackout
(black frames) and a frozen camera (the previous image repeated). They are applied to the
frame-pool slot after rendering, by one Numba pass that allocates nothing: the noise comes
from a fixed table of standard normals read from a new random offset each frame, so
consecutive frames' noise differs as a real sensor's does.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np

from edgert.kernels.jitcache import njit  # cached under the user cache, never beside the installed sources

NOISE_TABLE_BITS = 20  # 1 Mi float32 normals (4 MiB), shared by every frame


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    t = np.random.default_rng(1234).standard_normal(1 << NOISE_TABLE_BITS).astype(np.float32)
    t.flags.writeable = False
    return t


@njit(cache=True, nogil=True)
def _gain_noise(flat, gain, sigma, z_salt, table, offset):
    """flat[i] = clamp(gain * flat[i] + sigma * n_i); where |n_i| > z_salt the byte saturates
    (hot pixel 255 / dead pixel 0) instead. z_salt <= 0 = no salt-and-pepper."""
    mask = table.shape[0] - 1
    for i in range(flat.shape[0]):
        n = table[(offset + i) & mask]
        if z_salt > 0.0 and n > z_salt:
            flat[i] = 255
        elif z_salt > 0.0 and n < -z_salt:
            flat[i] = 0
        else:
            v = gain * flat[i] + sigma * n + 0.5
            flat[i] = np.uint8(min(max(v, 0.0), 255.0))


@functools.lru_cache(maxsize=16)
def salt_threshold(fraction: float) -> float:
    """The |n| beyond which a standard normal falls with probability `fraction` (two-sided)."""
    if fraction <= 0.0:
        return 0.0
    return math.sqrt(2.0) * _erfinv(1.0 - fraction)


def _erfinv(y: float) -> float:
    lo, hi = 0.0, 10.0  # bisection: called once per scenario effect, not per frame
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return 0.5 * (lo + hi)


class FrameEffects:
    """Applies gain and noise to uint8 frames in place; `seed` makes runs repeatable."""

    def __init__(self, seed: int = 0) -> None:
        self.table = _noise_table()
        self.rng = random.Random(seed)
        warm = np.zeros(64, np.uint8)
        _gain_noise(warm, 1.0, 1.0, 3.0, self.table, 0)  # compile (or load from cache) now, not on a frame

    def apply(self, frame: np.ndarray, gain: float = 1.0, sigma: float = 0.0, salt: float = 0.0) -> None:
        """gain: light level (1 = as rendered); sigma: gaussian noise in 8-bit steps; salt:
        fraction of bytes stuck at 0 or 255."""
        if gain == 1.0 and sigma == 0.0 and salt == 0.0:
            return
        offset = self.rng.getrandbits(NOISE_TABLE_BITS)
        _gain_noise(frame.reshape(-1), float(gain), float(sigma), salt_threshold(salt), self.table, offset)
