"""`edgert models ...` and `edgert infer`: argparse wiring only; the logic is in runtime/zoo.py.

    edgert models list [--zoo DIR]
    edgert models info NAME [--zoo DIR]
    edgert models verify [NAME] [--zoo DIR]
    edgert models add PATH.onnx [--name N] [--zoo DIR]
    edgert models keygen --out DIR [--name PUBLISHER]
    edgert models sign NAME --key PUBLISHER.pem [--zoo DIR]
    edgert infer --model PATH.onnx|MODEL_DIR --input IN.npz|IN.npy --output OUT.npz [--providers P,...]

The lead's cli.main() calls `add_commands(sub)`; errors are ModelError, which main() prints
as `edgert: error: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from edgert.runtime import signing, zoo
from edgert.runtime.config import MODELS_DIR
from edgert.runtime.manifest import ModelError


def cmd_list(args: argparse.Namespace) -> int:
    rows = zoo.list_models(args.zoo)
    if not rows:
        print(f"no models in {zoo.zoo_dir(args.zoo)}")
        return 0
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{w}}  {r['version']:<8} {r['input']:<26} markets={r['markets']:<6} {r['status']}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_info(args: argparse.Namespace) -> int:
    print(zoo.describe_model(args.name, args.zoo))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else zoo.model_names(args.zoo)
    failed = 0
    for name in names:
        try:
            m = zoo.verify(name, args.zoo)
            sig = signing.signature_status(zoo.model_dir(name, args.zoo), args.trusted_keys)
            print(f"ok      {name}: sha256 {m.sha256[:16]}…, inputs/outputs match the graph, runs on CPU; {sig}")
        except ModelError as e:
            failed += 1
            print(f"FAILED  {name}: {e}", file=sys.stderr)
    if failed:
        print(f"edgert: error: {failed} of {len(names)} model(s) failed verification", file=sys.stderr)
        return 1
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    dest = zoo.add_model(args.path, args.name, args.zoo)
    print(f"added {dest / 'model.onnx'}\n"
          f"wrote {dest / 'manifest.toml'}: a skeleton with the graph's inputs, outputs and sha256.\n"
          "The preprocessing, decoder, markets and licence are marked TODO: fill them in; until then "
          "the manifest is rejected when loaded (`edgert models verify " + dest.name + "` says what is left).")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    priv, pub = signing.keygen(args.out, args.name)
    print(f"wrote {priv} (PRIVATE, mode 0600: keep it with the release owner, never in the repository)\n"
          f"wrote {pub} (public: trusted publishers live in {MODELS_DIR / 'publishers'})")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    sig = signing.sign(zoo.model_dir(args.name, args.zoo), args.key)
    print(f"wrote {sig}")
    return 0


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


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `models` and `infer` to the CLI's subparsers."""
    m = sub.add_parser("models", help="the model zoo: list, info, verify, add")
    msub = m.add_subparsers(dest="models_command", required=True)
    zoo_help = f"zoo folder (default: {zoo.ZOO})"
    p = msub.add_parser("list", help="list the zoo's models and whether their manifests load")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_list)
    p = msub.add_parser("info", help="show a model's manifest")
    p.add_argument("name")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_info)
    p = msub.add_parser("verify",
                        help="check sha256, graph inputs/outputs, a CPU run and the signature; one model or all")
    p.add_argument("name", nargs="?", default=None, help="a model (default: all)")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.add_argument("--trusted-keys", default=str(MODELS_DIR / "publishers"),
                   help="folder of trusted publisher keys (default: %(default)s)")
    p.set_defaults(func=cmd_verify)
    p = msub.add_parser("keygen", help="make a publisher's ed25519 key pair (NAME.pem private, NAME.pub public)")
    p.add_argument("--out", required=True, help="folder for the key pair (keep the .pem out of the repository)")
    p.add_argument("--name", default="publisher", help="publisher name (default: %(default)s)")
    p.set_defaults(func=cmd_keygen)
    p = msub.add_parser("sign",
                        help="sign a model's manifest.toml with a publisher's private key (writes manifest.sig)")
    p.add_argument("name")
    p.add_argument("--key", required=True, help="the publisher's private key (PEM)")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_sign)
    p = msub.add_parser("add", help="copy an ONNX file into the zoo and write a manifest skeleton")
    p.add_argument("path", help="the .onnx file")
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_add)
    i = sub.add_parser("infer", help="one-shot inference of an ONNX file or zoo model through the engine")
    i.add_argument("--model", required=True, help="PATH.onnx or a zoo model folder")
    i.add_argument("--input", required=True, help="IN.npz (keys = input names) or IN.npy (single input)")
    i.add_argument("--output", required=True, help="OUT.npz (keys = output names)")
    i.add_argument("--providers", default="auto", help="comma-separated provider order (default: auto)")
    i.set_defaults(func=cmd_infer)
