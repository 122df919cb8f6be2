"""`edgert infer`: one-shot inference of an ONNX file or zoo model through the engine (runtime/zoo.py).

    edgert infer --model PATH.onnx|MODEL_DIR --input IN.npz|IN.npy --output OUT.npz [--providers P,...]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from edgert.runtime import zoo


def cmd_infer(args: argparse.Namespace) -> int:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    result, note = zoo.infer(args.model, args.input, args.output, providers)
    print(f"{note}; wrote {args.output}")
    bad = 0
    for name, arr in result.items():
        finite = bool(np.all(np.isfinite(arr)))
        bad += not finite
        flat = arr.reshape(-1)
        head = np.array2string(flat[:6], precision=6) + (" …" if flat.size > 6 else "")
        print(f"  {name}: {arr.dtype} {list(arr.shape)} {head}" + ("" if finite else "  (contains NaN/Inf)"))
    if bad:
        print("edgert: error: output contains NaN or Inf", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    i = sub.add_parser("infer", help="one-shot inference of an ONNX file or zoo model through the engine")
    i.add_argument("--model", required=True, help="PATH.onnx or a zoo model folder")
    i.add_argument("--input", required=True, help="IN.npz (keys = input names) or IN.npy (single input)")
    i.add_argument("--output", required=True, help="OUT.npz (keys = output names)")
    i.add_argument("--providers", default="auto", help="comma-separated provider order (default: auto)")
    i.set_defaults(func=cmd_infer)
