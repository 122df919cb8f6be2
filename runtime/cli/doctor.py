"""`edgert doctor`: what this machine offers and what the provider policy would pick."""

from __future__ import annotations

import argparse
import sys

from edgert.runtime.errors import MissingExtra
from edgert.runtime.profiles import PROFILES


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine offers and what the provider policy would pick."""
    import numba
    import onnxruntime as ort

    from edgert.runtime.providers import PREFERENCE, plan

    p = plan(["auto"])
    chosen, skipped = p.chosen, p.skipped
    print(f"python {sys.version.split()[0]}, numba {numba.__version__}, onnxruntime {ort.__version__} "
          f"({ort.get_device()} build)")
    print(f"providers in this build: {', '.join(ort.get_available_providers())}")
    for name in PREFERENCE:
        mark = "try " if name in chosen else "skip"
        print(f"  {mark} {name}" + (f": {skipped[name]}" if name in skipped else ""))
    print(f"the policy would try, in order: {', '.join(chosen)}")
    if args.profile:
        from edgert.runtime.config import DEFAULT_CONFIG, load
        from edgert.runtime.profiles import resolve

        prof = resolve(args.profile, load(DEFAULT_CONFIG).cache_dir())
        tried = plan(list(prof.providers))
        print(f"profile {args.profile}: providers {', '.join(prof.providers)} -> here: {', '.join(tried.chosen)}")
        for name, opts in prof.provider_options.items():
            print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    _cameras()
    return 0


def _cameras() -> None:
    """The V4L2 cameras, one line each (`edgert cameras` lists them in full)."""
    from edgert.runtime import v4l2

    try:
        found = v4l2.scan()
    except MissingExtra as e:
        print(f"cameras: {e}")
        return
    if not found.devices:
        print(f"cameras: {found.why_none()}")
        return
    print("cameras (`edgert cameras` for sizes and rates):")
    for dev in found.devices:
        print(f"  {v4l2.brief(dev)}")
    for p in found.problems:
        print(f"  skipped {p}")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("doctor", help="show the accelerators and cameras present and what the provider policy picks")
    d.add_argument("--profile", choices=PROFILES, help="also show what this device profile would ask for, and get here")
    d.set_defaults(func=cmd_doctor)
