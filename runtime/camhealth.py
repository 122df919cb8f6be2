"""Camera health: is the image black, the same image again, or lit outside the model's domain?

A model fed a black or a stuck image still outputs a steering angle, and it looks valid.
So preprocess, which reads every frame anyway, checks a strided sample of each camera's
image (~16 k bytes, ~20 µs for a 1080p frame: each sampled byte is a cache miss): the
sample's mean says *dark* (a blackout, a covered lens, a dead sensor), and a 64-bit hash of
the sample equal to the previous frames' says *frozen* (a stuck camera or link re-sending its
last image). The same mean, held against the range the model's manifest says it was
validated in (`[odd] mean_level`), says *outside the operating domain*: a tunnel or night
darker than anything the model was shown, or glare brighter. The verdict travels as
FrameFlags in the tensor descriptor; infer turns it into the result's status (`status_for`)
and control into a takeover request with its own reason.

The level is luma's where the camera delivers YUV (camera.format nv12/i420/yuyv): only the Y
bytes are summed (the Y plane of a 4:2:0 frame, every other byte of YUYV), since chroma sits
near 128 whatever the light and would lift a black frame's mean above any dark level. Limited-
range luma (black at 16, white at 235) is held against the thresholds mapped to that scale
(level 0 -> 16, 255 -> 235). A BGR/RGB level is the mean of every channel byte, not luma: the
two agree on grey scenes (a road: 135.6 in BGR, 135.9 as NV12 luma) but not on saturated colour
(a blue-heavy frame: 126.7 against 110.6), so a model's [odd] mean_level, measured on the format
it was validated with, is only as exact as that in another format. The frozen check hashes the
same strided sample of the whole buffer in every format.

A real sensor's noise makes consecutive frames differ in their low bits, so bit-identical
samples mean a repeated image; a stationary simulated car renders identical frames too,
which this check would flag (the simulator's scenarios always move).
"""

from __future__ import annotations

import numpy as np

from edgert.kernels.jitcache import njit  # cached under the user cache, never beside the installed sources
from edgert.runtime.wire import FrameFlags, ResultStatus

SAMPLE_BYTES = 16384
# Once a camera's light has left the model's range it counts as back only this many 8-bit
# levels inside it, so a scene hovering at a bound (dusk) does not hand over and resume by turns.
LIGHT_HYSTERESIS = 4.0


@njit(cache=True, nogil=True)
def _sample(flat, start, end, stride, luma_end, luma_every, out):
    """out[0] = sum of the sampled luma bytes of flat[start:end] (those before luma_end whose offset
    from start is a multiple of luma_every), out[1] = FNV-1a hash of all the sampled bytes."""
    total = np.uint64(0)
    h = np.uint64(14695981039346656037)
    prime = np.uint64(1099511628211)
    for i in range(start, end, stride):
        v = np.uint64(flat[i])
        if i < luma_end and (i - start) % luma_every == 0:
            total += v
        h = (h ^ v) * prime
    out[0] = total
    out[1] = h


def _luma(fmt: str, nbytes: int) -> tuple[int, int]:
    """(bytes of one image from its start that hold luma, every how many bytes a luma byte is)."""
    if fmt in ("nv12", "i420"):
        return nbytes * 2 // 3, 1  # the Y plane: H * W of the (H * 3 / 2) * W bytes
    if fmt == "yuyv":
        return nbytes, 2  # Y0 U Y1 V: the even bytes
    return nbytes, 1  # bgr / rgb: every channel, as an 8-bit mean level


def status_for(flags: int) -> ResultStatus:
    """The result status for a frame the camera check flagged (flags != 0): the most specific fault."""
    if flags & FrameFlags.CAMERA_DARK:
        return ResultStatus.CAMERA_BLACKOUT
    if flags & FrameFlags.CAMERA_FROZEN:
        return ResultStatus.CAMERA_FROZEN
    return ResultStatus.LIGHT_OUTSIDE_ODD


class CameraHealth:
    """Per-frame camera check of every camera in a slot, allocating no arrays per frame."""

    def __init__(self, nbytes: int, dark_level: float, frozen_frames: int,
                 light_range: tuple[float, float] | None = None, cameras: int = 1, fmt: str = "bgr",
                 yuv_range: str = "limited") -> None:
        """nbytes: one camera's image; dark_level: mean 8-bit level below which an image is black
        (0 = no check); frozen_frames: images in a row identical to the one before them that make
        a frozen camera (0 = no check); light_range: the mean levels the model was validated for
        (its manifest's `[odd] mean_level`; None = no check); cameras: images in one slot
        (N, ...), each checked on its own, so one dark camera is not averaged away; fmt: camera.format
        (a YUV format's level is its luma's, in yuv_range: see the module docstring)."""
        stride = max(1, nbytes // SAMPLE_BYTES) | 1  # odd, so the sample walks through all channels...
        if stride % 3 == 0:  # ...and not a multiple of 3 (BGR), so it is not one channel only
            stride += 2
        self.stride = stride
        self.nbytes = nbytes
        self.luma_bytes, self.luma_every = _luma(fmt, nbytes)
        # how many sampled bytes are summed: the same for every image of the slot (offsets from its start)
        self.n = sum(1 for i in range(0, nbytes, stride) if i < self.luma_bytes and i % self.luma_every == 0)
        # an 8-bit level as the summed bytes read it: limited-range luma puts black at 16, white at 235
        off, scale = (16.0, 219.0 / 255.0) if fmt in ("nv12", "i420", "yuyv") and yuv_range == "limited" else (0.0, 1.0)

        def level_sum(level: float) -> int:
            return int((off + level * scale) * self.n)  # ints: the comparisons below make no floats

        self.dark_sum = level_sum(dark_level) if dark_level else 0
        if light_range is None:
            self.light_sums = None
        else:
            lo, hi = light_range
            h = min(LIGHT_HYSTERESIS, (hi - lo) / 4)
            # inside: flag below lo or above hi; once outside: back only within [lo + h, hi - h]
            self.light_sums = (level_sum(lo), level_sum(hi), level_sum(lo + h), level_sum(hi - h))
        self.frozen_frames = frozen_frames
        self.cameras = cameras
        self.repeats = [0] * cameras
        self.last_hash = [-1] * cameras
        self.outside = [False] * cameras
        self._out = np.zeros(2, np.uint64)
        _sample(np.zeros(8, np.uint8), 0, 8, 1, 8, 1, self._out)  # compile (or load from the cache) before any frame

    def check(self, frame: np.ndarray) -> int:
        """FrameFlags for this frame (0 = healthy): the union over its cameras."""
        flat = frame.reshape(-1)
        if flat.shape[0] != self.nbytes * self.cameras:
            raise ValueError(f"camera check: a frame of {flat.shape[0]} bytes, expected {self.cameras} x "
                             f"{self.nbytes}")
        out = self._out
        flags = 0
        for c in range(self.cameras):
            start = c * self.nbytes
            _sample(flat, start, start + self.nbytes, self.stride, start + self.luma_bytes, self.luma_every, out)
            total, digest = int(out[0]), int(out[1])
            if total < self.dark_sum:
                flags |= FrameFlags.CAMERA_DARK  # black says more than "too dark": no light check then
            elif self.light_sums is not None:
                lo, hi, back_lo, back_hi = self.light_sums
                self.outside[c] = (not back_lo <= total <= back_hi) if self.outside[c] else not lo <= total <= hi
                if self.outside[c]:
                    flags |= FrameFlags.LIGHT_OUTSIDE_ODD
            if digest == self.last_hash[c]:
                self.repeats[c] += 1
            else:
                self.repeats[c] = 0
                self.last_hash[c] = digest
            if self.frozen_frames and self.repeats[c] >= self.frozen_frames:
                flags |= FrameFlags.CAMERA_FROZEN
        return int(flags)
