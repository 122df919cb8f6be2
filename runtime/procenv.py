"""The environment a stage process starts with: the supervisor's, plus defaults for libraries
that would otherwise take cores the other stages need.

OpenCV's thread pool busy-waits after each parallel call (2,000 rounds per worker, 10,000 for
the caller) before it sleeps. A stage that calls cv2 (the recorder's JPEG encoding, a user's
own stage) would hold cores that preprocess and infer need for the next frame. In `edgert
bench`, with the cv2 baselines beside our kernel on the 2-core VM, turning the spinning off
took the kernel's p99 on fresh frames from 1.18 to 0.36 ms and made blobFromImage itself
faster (docs/kernels.md, "YUV sources, and OpenCV's spinning pool"). OpenCV reads these
variables once, when it loads, so they must be in the environment the process starts with.
A value already in the supervisor's environment is kept: a deployment with spare cores can
turn the spinning back on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OPENCV_NO_SPIN = {"OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "0", "OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "0"}


def stage_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) with the stage defaults added where unset."""
    return {**OPENCV_NO_SPIN, **(os.environ if environ is None else environ)}
