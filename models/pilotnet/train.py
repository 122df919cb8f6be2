"""Train the default steering model (PilotNet-style) on the simulator's own frames.

Reproducible from a seed: `.venv/bin/pip install -e '.[train]'` (torch==2.13.0, CPU) then
    .venv/bin/python models/pilotnet/train.py --seed 0
writes model.onnx and manifest.toml (with its sha256) beside this file and prints the
closed-loop check that goes into MODEL_CARD.md.

1. Samples: poses near the lane centre (random lateral offset and heading error, so the
   model sees how to recover) on *training* roads, seeds disjoint from the demo road;
   label = the pure-pursuit expert's steering angle at that pose.
2. Each frame is rendered at the camera's full 1920x1080 and turned into the model input
   by the runtime's own preprocessing kernel, so training sees the exact bytes the
   pipeline feeds the model.
3. PilotNet (Bojarski et al. 2016): 5 conv + 4 dense layers, 66x200 YUV input.
4. Export to ONNX (opset 17), then a closed-loop drive on the held-out demo road with
   ONNX Runtime and one frame of actuation delay, as the pipeline has.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from edgert.kernels import Preprocessor, PreprocessSpec  # noqa: E402
from edgert.runtime.sim import BicycleModel, PinholeCamera, Renderer, Road, VehicleState, expert_steer  # noqa: E402

SPEC = PreprocessSpec(src_format="bgr", out_width=200, out_height=66, roi=(0, 460, 1920, 620), resize="area",
                      color="yuv601", scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                      layout="nchw", dtype="float32")
CAMERA = PinholeCamera(width=1920, height=1080, hfov_deg=60.0, height_m=1.3, pitch_deg=4.0)
SPEED = 15.0
DEMO_ROAD_SEED = 7  # held out: never trained on
WHEELBASE = 2.7
MAX_STEER = 0.5
TARGET_SCALE = 0.05  # train on steer / 0.05 rad (unit-scale targets); folded back into the last layer


def _pose(road: Road, s: float, lateral: float, heading_err: float) -> VehicleState:
    x, y, h = road.pose_at(s)
    return VehicleState(x - lateral * np.sin(h), y + lateral * np.cos(h), h + heading_err, SPEED)


def _make_chunk(args: tuple[list[int], int, int]) -> tuple[np.ndarray, np.ndarray]:
    seeds, n, rng_seed = args
    rng = np.random.default_rng(rng_seed)
    roads = [Road(seed=s) for s in seeds]
    renderers = [Renderer(r, CAMERA) for r in roads]
    pre = Preprocessor(SPEC, (CAMERA.height, CAMERA.width, 3))
    frame = np.empty((CAMERA.height, CAMERA.width, 3), np.uint8)
    x = np.empty((n, 3, 66, 200), np.float16)
    y = np.empty(n, np.float32)
    tensor = np.empty((1, 3, 66, 200), np.float32)
    for i in range(n):
        k = int(rng.integers(len(roads)))
        road = roads[k]
        s = float(rng.uniform(20.0, road.s[-1] - 200.0))
        st = _pose(road, s, float(rng.uniform(-1.2, 1.2)), float(np.clip(rng.normal(0, 0.06), -0.15, 0.15)))
        renderers[k].render(st.x, st.y, st.yaw, frame)
        pre(frame, tensor)
        x[i] = tensor[0]
        y[i] = expert_steer(road, st, wheelbase_m=WHEELBASE)
    return x, y


def make_dataset(n: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    train_seeds = [s for s in range(100, 112)]
    per = n // workers
    jobs = [(train_seeds, per, seed * 1000 + w) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_make_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build_model():  # type: ignore[no-untyped-def]
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 24, 5, stride=2), nn.ELU(),
        nn.Conv2d(24, 36, 5, stride=2), nn.ELU(),
        nn.Conv2d(36, 48, 5, stride=2), nn.ELU(),
        nn.Conv2d(48, 64, 3), nn.ELU(),
        nn.Conv2d(64, 64, 3), nn.ELU(),
        nn.Flatten(),
        nn.Linear(64 * 1 * 18, 100), nn.ELU(),
        nn.Linear(100, 50), nn.ELU(),
        nn.Linear(50, 10), nn.ELU(),
        nn.Linear(10, 1),
    )


def train(x: np.ndarray, y: np.ndarray, seed: int, epochs: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model = build_model()
    n_val = len(x) // 10
    xt, yt = torch.from_numpy(x[n_val:]), torch.from_numpy(y[n_val:] / TARGET_SCALE)
    xv, yv = torch.from_numpy(x[:n_val]).float(), torch.from_numpy(y[:n_val] / TARGET_SCALE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        t0, total = time.time(), 0.0
        for i in range(0, len(perm), 128):
            idx = perm[i:i + 128]
            pred = model(xt[idx].float()).squeeze(1)
            loss = torch.mean((pred - yt[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        model.eval()
        with torch.no_grad():
            val = torch.sqrt(torch.mean((model(xv).squeeze(1) - yv) ** 2)).item() * TARGET_SCALE
        print(f"epoch {ep + 1}/{epochs}: train loss {total / len(perm):.4f}, "
              f"val steer RMSE {val * 1000:.2f} mrad ({time.time() - t0:.0f} s)", flush=True)
    with torch.no_grad():  # the exported model outputs radians
        model[-1].weight.mul_(TARGET_SCALE)
        model[-1].bias.mul_(TARGET_SCALE)
    return model, val


def export(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 66, 200),), str(path), dynamo=False, input_names=["image"],
                      output_names=["steer"], opset_version=17)


def closed_loop(model_path: Path, seconds: float, start_lateral: float = 0.0) -> dict[str, float]:
    """Drive the held-out demo road with the exported model, one frame of actuation delay."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    road = Road(seed=DEMO_ROAD_SEED)
    renderer = Renderer(road, CAMERA)
    pre = Preprocessor(SPEC, (CAMERA.height, CAMERA.width, 3))
    car = BicycleModel(wheelbase_m=WHEELBASE, max_steer_rad=MAX_STEER)
    st = _pose(road, 0.0, start_lateral, 0.0)
    frame = np.empty((CAMERA.height, CAMERA.width, 3), np.uint8)
    tensor = np.empty((1, 3, 66, 200), np.float32)
    steer, s_hint, lat = 0.0, 0.0, []
    for _ in range(int(seconds * 30)):
        st = car.step(st, steer, 1 / 30)  # the command computed from the previous frame
        renderer.render(st.x, st.y, st.yaw, frame)
        pre(frame, tensor)
        steer = float(np.clip(sess.run(None, {"image": tensor})[0][0, 0], -MAX_STEER, MAX_STEER))
        s_hint, lateral, _ = road.project(st.x, st.y, s_hint)
        lat.append(lateral)
    a = np.abs(np.array(lat))
    return {"seconds": seconds, "mean_abs_m": float(a.mean()), "max_abs_m": float(a.max()),
            "rms_m": float(np.sqrt((a ** 2).mean()))}


ODD = """
# The operating domain it was validated in: outside it preprocess flags the frame and control hands over
# (runtime/camhealth.py). Mean 8-bit level of the camera image: 135 as rendered. The scenarios passed
# from 0.8x to 1.2x that light (means 108 to 162); 105..165 is that with 3 levels to spare (0.78x to
# 1.22x). At 0.75x the model ran 0.64 m off centre, at 0.45x it left the lane.
[odd]
mean_level = [105, 165]
"""  # the same for every variant: one spec, one domain

PUBLISHER = "edgert-sim"  # its public key: models/publishers/edgert-sim.pub; the private key is not in the repo


def manifest_text(header: str, name: str, sha: str, markets_note: str, provenance: str, io_note: str = "",
                  pre_note: str = "", decoder_note: str = "", extra: str = "") -> str:
    """The manifest of pilotnet or one of its variants (variants.py): one interface, one spec.

    The publisher must sign the result (`edgert models sign models/NAME --key PUBLISHER.pem`) before the
    runtime loads it; the private key is kept outside the repository."""
    pre = "\n".join(f"{k} = {_toml_value(v)}" for k, v in SPEC.to_dict().items())
    return f"""{header}
[model]
name = "{name}"
version = "1.0.0"
file = "model.onnx"
sha256 = "{sha}"
markets = ["sim"]  # {markets_note}
publisher = "{PUBLISHER}"  # signed: manifest.sig, key models/publishers/{PUBLISHER}.pub
license = "Apache-2.0"
provenance = "{provenance}"

[[inputs]]
name = "image"
shape = [1, 3, 66, 200]
dtype = "float32"{io_note}

[[outputs]]
name = "steer"
shape = [1, 1]
dtype = "float32"
{pre_note}
[preprocess]
{pre}

[decoder]
kind = "steering"{decoder_note}
output = "steer"
index = 0
scale = 1.0
{ODD}{extra}"""


def pilotnet_manifest(sha: str, seed: int) -> str:
    return manifest_text(
        "# The default steering model. Written by train.py; the sha256 is checked before every load.",
        "pilotnet", sha, "trained and validated on the simulator only: approved for no real market",
        f"trained by models/pilotnet/train.py --seed {seed} on edgert simulator frames (roads 100-111)",
        pre_note="\n# Shared with kernels/: the fused pass that turns a 1920x1080 BGR frame into the input above.",
        decoder_note="   # steering angle in radians, positive = left")


def _toml_value(v: object) -> str:
    """A TOML literal for the manifest's simple values (bool before int: True is an int in Python)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    return repr(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--cache", type=Path, default=None, help="save/load the rendered dataset here (.npz)")
    a = ap.parse_args()
    t0 = time.time()
    if a.cache and a.cache.is_file():
        with np.load(a.cache) as z:
            x, y = z["x"], z["y"]
    else:
        x, y = make_dataset(a.samples, a.seed, a.workers)
        if a.cache:
            np.savez(a.cache, x=x, y=y)
    print(f"{len(x)} samples in {time.time() - t0:.0f} s; steer label std {y.std():.3f} rad", flush=True)
    model, val = train(x, y, a.seed, a.epochs)
    onnx_path = a.out / "model.onnx"
    export(model, onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (a.out / "manifest.toml").write_text(pilotnet_manifest(sha, a.seed))
    print(f"wrote {onnx_path} (sha256 {sha[:16]}…), validation RMSE {val * 1000:.2f} mrad; sign it: "
          f"edgert models sign models/pilotnet --key {PUBLISHER}.pem")
    for lat0 in (0.0, 1.0):
        r = closed_loop(onnx_path, 60.0, start_lateral=lat0)
        print(f"closed loop, demo road seed {DEMO_ROAD_SEED}, 60 s at {SPEED} m/s, start offset {lat0} m: "
              f"mean |error| {r['mean_abs_m']:.3f} m, rms {r['rms_m']:.3f} m, max {r['max_abs_m']:.3f} m")


if __name__ == "__main__":
    main()
