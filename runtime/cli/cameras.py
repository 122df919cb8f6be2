"""`edgert cameras`: the V4L2 capture devices present, with their formats, sizes and rates.

Like `v4l2-ctl --list-formats-ext`, for picking camera.device, camera.format (or
camera.device_format = "mjpeg") and a size and rate the camera really offers (docs/cameras.md).
No device is not an error: it says why none shows (no /dev/video*, or no permission) and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from edgert.runtime import v4l2


def cmd_cameras(args: argparse.Namespace) -> int:
    found = v4l2.scan(args.dev)
    if args.json:
        print(json.dumps({"devices": [dataclasses.asdict(d) for d in found.devices], "problems": found.problems,
                          "why_none": "" if found.devices else found.why_none()}, indent=2))
        return 0
    if not found.devices:
        print(found.why_none())
        return 0
    for i, dev in enumerate(found.devices):
        if i:
            print()
        print(v4l2.describe(dev))
    for p in found.problems:
        print(f"skipped {p}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("cameras", help="list the V4L2 cameras present with their formats, sizes and rates")
    c.add_argument("--json", action="store_true", help="print the list as JSON, for scripts")
    c.add_argument("--dev", default="/dev", help=argparse.SUPPRESS)  # where video* nodes are looked for (tests)
    c.set_defaults(func=cmd_cameras)
