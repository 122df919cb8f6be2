"""Make pilotnet's float16 and INT8 variants and measure their steering error against float32.

    .venv/bin/python models/pilotnet/variants.py [--calib 200] [--eval 300]

writes models/pilotnet-fp16/ and models/pilotnet-int8/ (model.onnx, manifest.toml with its
sha256 and an [accuracy] table, MODEL_CARD.md) and prints the figures.

- float16: weights and activations in fp16 (onnxruntime.transformers.float16), graph inputs
  and outputs kept float32, so the variant is a drop-in for the same preprocessing and decoder.
- INT8: static quantisation with onnxruntime.quantization, QDQ format, per-channel weights,
  calibrated (MinMax) on `--calib` frames from the *training* roads (seeds 100-111), each
  rendered by runtime/sim and preprocessed by the runtime's own kernel, as in train.py.
- Accuracy: steering from each variant against float32 on `--eval` frames of the held-out
  demo road (seed 7), at the training pose distribution; RMSE and max in mrad. The stated
  tolerance (what tests/test_zoo.py checks) is the measured max with a 2x margin, at least
  0.25 mrad (half a float16 step at the 0.5 rad steering clamp).
- Driving: train.py's closed-loop check (60 s on the demo road, one frame of delay) for float32
  and each variant, so the card says what the error costs in lane keeping (skip: --no-closed-loop).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from train import CAMERA, DEMO_ROAD_SEED, SPEC, _pose, closed_loop, manifest_text  # type: ignore[import-not-found]  # noqa: E402

VARIANTS = ("fp16", "int8")
TRAIN_ROADS = tuple(range(100, 112))


def render_frames(seeds: tuple[int, ...], n: int, rng_seed: int) -> np.ndarray:
    """n model inputs (float32, 1x3x66x200 each) at random poses near the lane centre of the given roads."""
    from edgert.kernels import Preprocessor
    from edgert.runtime.sim import Renderer, Road

    rng = np.random.default_rng(rng_seed)
    roads = [Road(seed=s) for s in seeds]
    renderers = [Renderer(r, CAMERA) for r in roads]
    pre = Preprocessor(SPEC, (CAMERA.height, CAMERA.width, 3))
    frame = np.empty((CAMERA.height, CAMERA.width, 3), np.uint8)
    out = np.empty((n, 1, 3, 66, 200), np.float32)
    for i in range(n):
        k = int(rng.integers(len(roads)))
        s = float(rng.uniform(20.0, roads[k].s[-1] - 200.0))
        st = _pose(roads[k], s, float(rng.uniform(-1.2, 1.2)), float(np.clip(rng.normal(0, 0.06), -0.15, 0.15)))
        renderers[k].render(st.x, st.y, st.yaw, frame)
        pre(frame, out[i])
    return out


def held_out_frames(n: int, rng_seed: int = 7007) -> np.ndarray:
    """Frames of the demo road (seed 7), never used for training or calibration."""
    return render_frames((DEMO_ROAD_SEED,), n, rng_seed)


def steer(model_path: Path, frames: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.array([sess.run(None, {"image": f})[0][0, 0] for f in frames], np.float64)


def make_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def make_int8(src: Path, dst: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            f = next(self.it, None)
            return None if f is None else {"image": f}

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(src), str(prepped))  # shape inference + fusions the quantiser expects
        quantize_static(str(prepped), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


ACCURACY = """
# Steering error against pilotnet (float32) on {n_eval} held-out frames of the demo road (seed 7).
[accuracy]
reference = "pilotnet 1.0.0 (float32)"
frames = {n_eval}
rmse_mrad = {rmse:.4f}
max_mrad = {max:.4f}
tolerance_mrad = {tol}  # every frame within this of float32 (tests/test_zoo.py checks it)
"""


def variant_manifest(variant: str, sha: str, provenance: str, n_eval: int, rmse: float, max: float,  # noqa: A002
                     tol: float) -> str:
    return manifest_text(
        f"# pilotnet {variant} variant. Written by models/pilotnet/variants.py; the sha256 is checked before "
        "every load.", f"pilotnet-{variant}", sha, "as pilotnet: validated on the simulator only", provenance,
        io_note="  # graph I/O stays float32: same preprocessing and decoder as pilotnet",
        extra=ACCURACY.format(n_eval=n_eval, rmse=rmse, max=max, tol=tol))


CARD = """# pilotnet-{variant} 1.0.0: {title}

{how}
Made by `models/pilotnet/variants.py` from pilotnet 1.0.0 (see ../pilotnet/MODEL_CARD.md for the
training, interface, limits and licence, all unchanged). Same input (`image`, float32 1x3x66x200,
same preprocessing) and output (`steer`, float32 1x1, radians): a drop-in replacement.
Approved for the market `sim` only, as pilotnet.

## Accuracy change against float32 (measured {date} on the 2-core reference machine)
Steering angle from this variant minus pilotnet's, on {n_eval} frames of the held-out demo road
(seed 7, never trained or calibrated on), at the training pose distribution (lateral offset
uniform ±1.2 m, heading error N(0, 0.06) rad), ONNX Runtime {ort} CPU:

| metric | value |
|---|---|
| RMSE | {rmse:.4f} mrad |
| max \\|error\\| | {max:.4f} mrad |
| stated tolerance (every frame; 2x the max, at least 0.25 mrad) | {tol} mrad |
| for scale: steering label std | 32 mrad |
{loop}
## File
{size:.2f} MB (float32: {size32:.2f} MB).
"""


TOLERANCE_FLOOR_MRAD = 0.25  # half a float16 step at the 0.5 rad steering clamp: below it is rounding noise


def _tolerance(max_mrad: float) -> float:
    """The measured max with a 2x margin, rounded up to two significant digits, at least the floor.

    The floor keeps a test from failing on a machine whose fp16 kernels round one step differently.
    """
    x = max(2 * max_mrad, TOLERANCE_FLOOR_MRAD)
    e = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(f"{math.ceil(x / e) * e:.6g}")


def main() -> None:
    import datetime

    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib", type=int, default=200, help="calibration frames (training roads)")
    ap.add_argument("--eval", type=int, default=300, help="held-out frames (demo road) for the accuracy figures")
    ap.add_argument("--no-closed-loop", action="store_true", help="skip the 60 s closed-loop drives (about 1 min)")
    a = ap.parse_args()
    src = HERE / "model.onnx"
    calib = render_frames(TRAIN_ROADS, a.calib, rng_seed=4242)
    held = held_out_frames(a.eval)
    ref = steer(src, held)
    date = datetime.date.today().isoformat()
    loop32 = None if a.no_closed_loop else closed_loop(src, 60.0)
    for variant in VARIANTS:
        d = HERE.parent / f"pilotnet-{variant}"
        d.mkdir(exist_ok=True)
        path = d / "model.onnx"
        if variant == "fp16":
            make_fp16(src, path)
            prov = "pilotnet 1.0.0 converted by models/pilotnet/variants.py (onnxruntime float16, keep_io_types)"
            title, how = "float16 weights and activations", (
                "pilotnet with its weights and activations in float16 (`onnxruntime.transformers.float16`,\n"
                "graph inputs/outputs kept float32). Meant for GPUs with fast fp16; on a CPU without fp16\n"
                "kernels ONNX Runtime runs it through casts and it is not faster than float32.")
        else:
            make_int8(src, path, calib)
            prov = (f"pilotnet 1.0.0 statically quantised by models/pilotnet/variants.py (onnxruntime QDQ, "
                    f"per-channel int8, MinMax on {a.calib} frames of roads 100-111)")
            title, how = "INT8, static quantisation (QDQ)", (
                "pilotnet statically quantised with `onnxruntime.quantization.quantize_static`: QDQ format,\n"
                "int8 activations and per-channel int8 weights, MinMax calibration on "
                f"{a.calib} simulator frames\nof the training roads (seeds 100-111), rendered by runtime/sim "
                "and preprocessed by the runtime's\nown kernel, as in training.")
        err = (steer(path, held) - ref) * 1000.0
        rmse, mx = float(np.sqrt(np.mean(err ** 2))), float(np.max(np.abs(err)))
        tol = _tolerance(mx)
        loop = ""
        if loop32 is not None:
            r = closed_loop(path, 60.0)
            loop = (f"\nClosed loop (train.py's check: demo road, 60 s at 15 m/s, start centred, one frame of delay),\n"
                    f"lateral error: this variant mean {r['mean_abs_m']:.4f} m, rms {r['rms_m']:.4f} m, max "
                    f"{r['max_abs_m']:.4f} m;\nfloat32 mean {loop32['mean_abs_m']:.4f} m, rms {loop32['rms_m']:.4f} m, "
                    f"max {loop32['max_abs_m']:.4f} m.\n")
            print(f"pilotnet-{variant} closed loop: mean {r['mean_abs_m']:.4f} m, rms {r['rms_m']:.4f} m, "
                  f"max {r['max_abs_m']:.4f} m (float32: mean {loop32['mean_abs_m']:.4f}, rms {loop32['rms_m']:.4f}, "
                  f"max {loop32['max_abs_m']:.4f})", flush=True)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        fig = {"variant": variant, "n_eval": a.eval, "rmse": rmse, "max": mx, "tol": tol}
        (d / "manifest.toml").write_text(variant_manifest(variant, sha, prov, a.eval, rmse, mx, tol))
        (d / "MODEL_CARD.md").write_text(CARD.format(title=title, how=how, date=date, ort=ort.__version__, loop=loop,
                                                     size=path.stat().st_size / 1e6,
                                                     size32=src.stat().st_size / 1e6, **fig))
        print(f"pilotnet-{variant}: RMSE {rmse:.4f} mrad, max {mx:.4f} mrad vs float32 on {a.eval} held-out "
              f"frames; tolerance {tol} mrad; {path.stat().st_size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
