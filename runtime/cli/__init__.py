"""`edgert`: the command line.

    edgert run [CONFIG.toml] [--duration S] [--mode processes|threads] [--report FILE]
    edgert echo TOPIC [--run RUN_ID] [--count N]
    edgert doctor
    edgert cameras [--json]
    edgert bench NAME|all [--quick] [--out DIR]
    edgert bench pipeline [--scenario single-stream|multi-stream|server] [--cameras N] [--fps F]
                          [--arrival poisson|fixed] [--min-count N] [--min-duration S] [--video FILE]
    edgert models list | info NAME | verify [NAME] | add PATH.onnx [--name N] | keygen | sign NAME --key K
    edgert infer --model PATH.onnx|MODEL_DIR --input IN.npz|IN.npy --output OUT.npz
    edgert sim --scenario NAME [--added-latency-ms X] [--drop-rate P] | sim list | sim sweep --out DIR
    edgert sim clip OUT.mp4 [--seconds N] [--fps F] [--codec h264|mpeg4] [--size WxH]
    edgert replay FILE.mcap [--speed 1|max]      edgert record list [DIR] | trigger
    edgert fleet export CLIP... --to REGION | prune | audit verify | keygen REGION | encrypt | decrypt

One module per command group (COMMANDS, in the order `edgert --help` lists them), each with
`add_parser(sub)` that adds its subparser(s) and sets `func` to its handler. A handler returns
the exit status; bad input raises an `EdgertError`, which main() prints as `edgert: error: ...`
with exit status 2. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgert.runtime.errors import EdgertError
from edgert.runtime.logs import setup_logging

COMMANDS = ("run", "echo", "doctor", "cameras", "models", "infer", "sim", "fleet", "replay", "record", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the top-level parser with every command group's subparsers."""
    ap = argparse.ArgumentParser(prog="edgert", description="Edge inference runtime for in-vehicle computers.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (2: bad input or usage, named on stderr)."""
    args = build_parser().parse_args(argv)
    setup_logging("INFO")
    try:
        return args.func(args)
    except EdgertError as e:  # the user's input, not a bug: the message says what to fix
        print(f"edgert: error: {e}", file=sys.stderr)
        return 2
