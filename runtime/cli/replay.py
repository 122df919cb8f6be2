"""`edgert replay`: argparse wiring; the logic is in runtime/replay.py.

    edgert replay FILE.mcap [--config C.toml] [--keys DIR] [--model NAME] [--speed 1|max|X] [--tolerance RAD]
                  [--mode processes|threads] [--verify-frames] [--report OUT.json]

A recording that is not one, is encrypted, whose metadata does not authenticate or that holds no
frames is refused with a ClipError/RecordingError (EdgertErrors: cli.main() prints them, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgert.runtime.config import DEFAULT_CONFIG, choices, load


def _speed(text: str) -> float:
    if text == "max":
        return 0.0
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"--speed {text!r}: use 'max' or a positive factor (1 = as recorded)")
    return v


def cmd_replay(args: argparse.Namespace) -> int:
    from edgert.runtime.replay import format_report, run_replay

    path = Path(args.file)
    if not path.is_file():
        print(f"edgert: error: {path} not found; `edgert record list DIR` lists recordings", file=sys.stderr)
        return 2
    cfg = load(args.config) if args.config else None
    report = run_replay(path, cfg, model=args.model, speed=args.speed, tolerance=args.tolerance,
                        mode=args.mode, verify_frames=args.verify_frames, keys_dir=args.keys)
    print(format_report(report), flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1, default=float))
        print(f"  report: {args.report}")
    return 0 if report.ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("replay", help="feed a recording through the pipeline; report where the outputs differ")
    r.add_argument("file", help="an .mcap recording with frames (record.frames = raw for a bit-exact replay)")
    r.add_argument("--config", help=f"this machine's pipeline config to replay with (default: {DEFAULT_CONFIG.name}); "
                   "the recording gives only frame size and model, and CAN output is always off, transport ipc")
    r.add_argument("--keys", help="folder with the vehicle key (vehicle.key) that must authenticate the recording's "
                   "metadata (default: record.keys_dir of --config)")
    r.add_argument("--model", help="model to replay with (zoo name or folder; default: the one the recording ran)")
    r.add_argument("--speed", type=_speed, default=1.0,
                   help="1 = recorded pace (default), 'max' = next frame once the last one's command is out")
    r.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest |new - recorded| steering output in rad that counts as equal (default 1e-4)")
    r.add_argument("--mode", choices=choices("pipeline.mode"), default=None, help="override pipeline.mode")
    r.add_argument("--verify-frames", action="store_true",
                   help="also record the replayed input and check every frame against the recording, byte for byte")
    r.add_argument("--report", help="write every compared frame as JSON to this file")
    r.set_defaults(func=cmd_replay)
