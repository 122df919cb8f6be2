"""The shipped PilotNet manifest must keep producing bit-identical input tensors.

The model was trained on the output of this exact preprocessing; any change to the kernel's
arithmetic (order of sums, rounding, coefficients) that moves a single bit for this spec
would silently shift the model's inputs. The hash below was computed with the kernel as it
was before the formats/batches/letterbox work (commit 97df287), on a fixed seeded frame.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from edgert.kernels import Preprocessor, PreprocessSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = Path(__file__).resolve().parents[1] / "models" / "pilotnet" / "manifest.toml"
PINNED_SHA256 = "863b98caf9b964e2d8e3fe85e6cd754fcd7d4ff09c3c42b848a46e16f1338be6"


def _seeded_frame() -> np.ndarray:
    return np.random.default_rng(20261125).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


@pytest.mark.parametrize("threads, pad", [(1, 0), (2, 0), (1, 64)])
def test_pilotnet_manifest_output_is_bit_identical(threads: int, pad: int) -> None:
    spec = PreprocessSpec.from_dict(tomllib.loads(MANIFEST.read_text())["preprocess"])
    src = _seeded_frame()
    if pad:  # a row-padded frame-pool slot view must give the same bytes
        base = np.zeros((1080, 1920 * 3 + pad), np.uint8)
        view = base[:, : 1920 * 3].reshape(1080, 1920, 3)
        view[...] = src
        src = view
    pre = Preprocessor(spec, src.shape, threads=threads)
    out = np.empty(pre.out_shape, pre.out_dtype)
    pre(src, out)
    assert hashlib.sha256(out.tobytes()).hexdigest() == PINNED_SHA256
