"""`edgert models ...`: argparse wiring only; the logic is in runtime/zoo.py.

    edgert models list [--zoo DIR]
    edgert models info NAME [--zoo DIR]
    edgert models verify [NAME] [--zoo DIR]
    edgert models add PATH.onnx [--name N] [--zoo DIR]
    edgert models keygen --out DIR [--name PUBLISHER]
    edgert models sign NAME|DIR --key PUBLISHER.pem [--zoo DIR]

Errors are ModelError, which cli.main() prints as `edgert: error: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgert.runtime import paths, signing, zoo
from edgert.runtime.manifest import ModelError


def cmd_list(args: argparse.Namespace) -> int:
    rows = zoo.list_models(args.zoo)
    if not rows:
        print(f"no models in the bundled zoo or {zoo.user_zoo(args.zoo)}")
        return 0
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{w}}  {r['zoo']:<7}  {r['version']:<8} {r['input']:<26} markets={r['markets']:<6} "
              f"{r['status']}")
    print(f"bundled zoo: {zoo.ZOO}\nuser zoo:    {zoo.user_zoo(args.zoo)} (`edgert models add` writes here)")
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
          f"wrote {pub} (public: the trusted publishers shipped with edgert are in {paths.publishers()}; "
          "a vehicle trusts another folder with infer.trusted_keys)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    d = Path(args.name) if "/" in args.name else zoo.model_dir(args.name, args.zoo)
    if d.parent == zoo.ZOO and "/" not in args.name:
        raise ModelError(f"{args.name!r} is a bundled model, in the installed package, which edgert never writes; "
                         f"sign a folder by its path (in a source checkout: `edgert models sign models/{args.name} "
                         "--key ...`)")
    sig = signing.sign(d, args.key)
    print(f"wrote {sig}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    m = sub.add_parser("models", help="the model zoo: list, info, verify, add")
    msub = m.add_subparsers(dest="models_command", required=True)
    zoo_help = ("the user zoo, searched after the bundled one, where `add` writes "
                f"(default: {paths.user_zoo()})")
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
    p.add_argument("--trusted-keys", default=str(paths.publishers()),
                   help="folder of trusted publisher keys (default: %(default)s)")
    p.set_defaults(func=cmd_verify)
    p = msub.add_parser("keygen", help="make a publisher's ed25519 key pair (NAME.pem private, NAME.pub public)")
    p.add_argument("--out", required=True, help="folder for the key pair (keep the .pem out of the repository)")
    p.add_argument("--name", default="publisher", help="publisher name (default: %(default)s)")
    p.set_defaults(func=cmd_keygen)
    p = msub.add_parser("sign",
                        help="sign a model's manifest.toml with a publisher's private key (writes manifest.sig)")
    p.add_argument("name", help="a user zoo model, or a model folder's path (with a /)")
    p.add_argument("--key", required=True, help="the publisher's private key (PEM)")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_sign)
    p = msub.add_parser("add", help="copy an ONNX file into the user zoo and write a manifest skeleton")
    p.add_argument("path", help="the .onnx file")
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--zoo", default=None, help=zoo_help)
    p.set_defaults(func=cmd_add)
