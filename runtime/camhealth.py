"""Camera health: is the image black, the same image again, or lit outside the model's domain?

A model fed a black or a stuck image still outputs a steering angle, and it looks valid.
So preprocess, which reads every frame anyway, checks a strided sample of it (~16 k bytes,
~20 µs for a 1080p frame: each sampled byte is a cache miss): the sample's mean says *dark*
(a blackout, a covered lens, a dead sensor), and a 64-bit hash of the sample equal to the
previous frames' says *frozen* (a stuck camera or link re-sending its last image). The verdict travels as FrameFlags in the
tensor descriptor; infer turns it into the result's status and control into a takeover
request with its own reason. The same mean, held against the range the model's manifest
says it was validated in (`[odd] mean_level`), says *outside the operating domain*: a tunnel
or night darker than anything the model was shown, or glare brighter. A real sensor's noise makes consecutive frames differ in
their low bits, so bit-identical samples mean a repeated image; a stationary simulated
car renders identical frames too, which this check would flag (the simulator's scenarios
always move).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from runtime.wire import FrameFlags

SAMPLE_BYTES = 16384


@njit(cache=True, nogil=True)
def _sample(flat, stride, out):
    """out[0] = sum of the sampled bytes, out[1] = FNV-1a hash of them (uint64 arithmetic)."""
    total = np.uint64(0)
    h = np.uint64(14695981039346656037)
    prime = np.uint64(1099511628211)
    for i in range(0, flat.shape[0], stride):
        v = np.uint64(flat[i])
        total += v
        h = (h ^ v) * prime
    out[0] = total
    out[1] = h


class CameraHealth:
    """Per-frame camera check, allocating nothing per frame; one instance per camera stream."""

    def __init__(self, nbytes: int, dark_level: float, frozen_frames: int,
                 light_range: tuple[float, float] | None = None) -> None:
        """dark_level: mean 8-bit level below which a frame is black (0 = no check);
        frozen_frames: frames in a row identical to the one before them that make a frozen
        camera (0 = no check); light_range: the mean levels the model was validated for
        (its manifest's `[odd] mean_level`; None = no check)."""
        stride = max(1, nbytes // SAMPLE_BYTES) | 1  # odd, so the sample walks through all channels...
        if stride % 3 == 0:  # ...and not a multiple of 3 (BGR), so it is not one channel only
            stride += 2
        self.stride = stride
        self.n = (nbytes + stride - 1) // stride
        self.dark_sum = dark_level * self.n
        self.light_sums = None if light_range is None else (light_range[0] * self.n, light_range[1] * self.n)
        self.frozen_frames = frozen_frames
        self.repeats = 0
        self.last_hash = np.uint64(0)
        self._out = np.zeros(2, np.uint64)
        _sample(np.zeros(8, np.uint8), 1, self._out)  # compile (or load from Numba's cache) before any frame

    def check(self, frame: np.ndarray) -> int:
        """FrameFlags for this frame (0 = healthy)."""
        out = self._out
        _sample(frame.reshape(-1), self.stride, out)
        flags = 0
        if out[0] < self.dark_sum:
            flags |= FrameFlags.CAMERA_DARK  # black says more than "too dark": no light check then
        elif self.light_sums is not None and not self.light_sums[0] <= out[0] <= self.light_sums[1]:
            flags |= FrameFlags.LIGHT_OUTSIDE_ODD
        if out[1] == self.last_hash:
            self.repeats += 1
        else:
            self.repeats = 0
            self.last_hash = out[1]
        if self.frozen_frames and self.repeats >= self.frozen_frames:
            flags |= FrameFlags.CAMERA_FROZEN
        return int(flags)
