"""A batch-N copy of a zoo model, for the multi-stream benchmark (N cameras in lock-step).

The shipped models take one image ([1, 3, 66, 200]). PilotNet's graph is batch-safe (Conv,
Elu, Flatten(axis=1), Gemm), so a batch-N variant is the same graph with the first dimension
of its input and output set to N. It is made at benchmark time for whatever `--cameras` asks,
in a temporary folder, and checked before use: every row of its output must equal the
single-image model's output for that image. Its manifest (new sha256, the new shapes) is
signed with a throwaway key made for the run, and only that run trusts the key
(`infer.trusted_keys`), so the pipeline loads it through the same signature check as any model;
the shipped zoo and its trusted publishers are untouched.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from edgert.runtime.manifest import ModelError

IR_VERSION = 10  # onnx >= 1.18 writes newer IR versions than some onnxruntime releases read
BENCH_PUBLISHER = "edgert-bench"


def _sub_once(pattern: str, repl: str, text: str, what: str) -> str:
    out, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        raise ModelError(f"cannot make a batch variant: the manifest has no {what} line to rewrite")
    return out


def batch_variant(src_dir: str | Path, batch: int, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `out_dir/<name>-x<batch>/` (model, manifest, signature); return (model_dir, trusted_keys_dir)."""
    import onnx
    import onnxruntime as ort

    from edgert.runtime import signing
    from edgert.runtime.manifest import load_manifest

    if batch < 1:
        raise ValueError(f"batch: expected >= 1, got {batch}")
    src = load_manifest(src_dir)
    if src.inputs[0].shape[0] != 1 or len(src.inputs) != 1:
        raise ModelError(f"{src_dir}: a batch variant needs one input with batch 1, got "
                         f"{[(t.name, t.shape) for t in src.inputs]}")
    data = src.read_verified()
    model = onnx.load_from_string(data)
    for v in list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims[0].dim_value != 1:
            raise ModelError(f"{src_dir}: {v.name} has batch dimension {dims[0]}, expected 1")
        dims[0].dim_value = batch
    del model.graph.value_info[:]  # intermediate shapes are re-inferred by onnxruntime
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.checker.check_model(model)
    out = Path(out_dir) / f"{src.name}-x{batch}"
    out.mkdir(parents=True, exist_ok=True)
    blob = model.SerializeToString()
    (out / "model.onnx").write_bytes(blob)

    # Same answers as the single-image model, row by row, or the benchmark would time another model.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *src.inputs[0].shape[1:])).astype(src.inputs[0].dtype)
    one = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    want = np.concatenate([one.run(None, {src.inputs[0].name: x[i:i + 1]})[0] for i in range(batch)])
    got = many.run(None, {src.inputs[0].name: x})[0]
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise ModelError(f"{src_dir}: the batch-{batch} graph does not reproduce the model row by row "
                         f"(max diff {np.abs(got - want).max():.3g}); its graph is not batch-safe")

    text = (Path(src_dir) / "manifest.toml").read_text()
    text = _sub_once(r'^name = "[^"]*"', f'name = "{src.name}-x{batch}"', text, "[model] name")
    text = _sub_once(r'^sha256 = "[0-9a-f]*"', f'sha256 = "{hashlib.sha256(blob).hexdigest()}"', text, "sha256")
    text = _sub_once(r"^shape = \[1,", f"shape = [{batch},", text, "input shape")
    text = _sub_once(r"^shape = \[1,", f"shape = [{batch},", text, "output shape")
    if re.search(r"^publisher = ", text, flags=re.M):
        text = _sub_once(r'^publisher = .*$', f'publisher = "{BENCH_PUBLISHER}"', text, "publisher")
    else:
        text = _sub_once(r"^(markets = .*)$", f'\\1\npublisher = "{BENCH_PUBLISHER}"', text, "markets")
    text = (f"# {src.name} with batch {batch}: made by bench/_batchmodel.py for the multi-stream benchmark, "
            f"signed by a key of this run only.\n" + text)
    (out / "manifest.toml").write_text(text)
    keys = Path(out_dir) / "keys"
    if not (keys / f"{BENCH_PUBLISHER}.pem").exists():
        signing.keygen(keys, BENCH_PUBLISHER)
    signing.sign(out, keys / f"{BENCH_PUBLISHER}.pem")
    return out, keys
