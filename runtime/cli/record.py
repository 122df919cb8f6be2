"""`edgert record ...`: the recordings on this machine, and a clip on demand from a running recorder.

    edgert record list [DIR] [--config C.toml]
    edgert record trigger [--run RUN_ID]

The recorder is runtime/stages/recorder.py; recordings are read with runtime/fleet/.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from edgert.runtime.config import DEFAULT_CONFIG, load


def cmd_list(args: argparse.Namespace) -> int:
    from edgert.runtime.fleet import mcapio

    d = Path(args.dir) if args.dir else load(args.config or DEFAULT_CONFIG).record_dir()
    from edgert.runtime.fleet import crypto

    files = sorted(p for p in d.glob("*") if p.name.endswith((".mcap", ".mcap" + mcapio.PARTIAL,
                                                                ".mcap" + crypto.SUFFIX)))
    if not files:
        print(f"no recordings in {d}")
        return 0
    bad = 0
    for p in files:
        if p.name.endswith(crypto.SUFFIX):  # encrypted at rest: what its cleartext header says, no key needed
            try:
                meta = crypto.read_header(p).get("meta") or {}
            except crypto.CryptoError as e:
                bad += 1
                print(f"{'DAMAGED':<9} {p.name}  ({e})")
                continue
            print(f"{'encrypted':<9} {p.name}  region={meta.get('region', '?')} anonymised="
                  f"{meta.get('anonymised', '?')}; {p.stat().st_size / 2**20:.1f} MiB "
                  "(`edgert fleet decrypt` with the region's key to inspect or replay it)")
            continue
        info = mcapio.inspect(p)
        meta = info.metadata.get("edgert", {})
        status = "ok" if info.complete else "TRUNCATED"
        bad += not info.complete
        what = f"{meta.get('event_kind', 'all')} {meta.get('event_reason', '')}".strip()
        frames = sum(info.topics.get(t, 0) for t in (mcapio.RAW_TOPIC, mcapio.IMAGE_TOPIC, mcapio.JPEG_TOPIC))
        print(f"{status:<9} {p.name}  region={meta.get('region', '?')} {what}; {info.duration_s:.1f} s, "
              f"{frames} frames, {info.messages} messages" + ("" if info.complete else f" ({info.error})"))
    if bad:
        print(f"edgert: {bad} of {len(files)} recording(s) truncated (cut off by a crash or still being written); "
              "their readable part replays", file=sys.stderr)
    return 1 if bad else 0


def _recorder_pid(run: str | None) -> tuple[int | None, str]:
    from edgert.runtime import shm

    runs = [(d, rid) for d, rid, alive in shm.run_dirs() if alive and (run is None or rid == run or f".{run}" in rid)]
    if not runs:
        return None, "no running pipeline found; start one with `edgert run`"
    _, run_id = runs[-1]  # this user's own run directories only (shm.run_dirs)
    sup_pid = run_id.split(".")[0]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if p.stat().st_uid != os.geteuid():  # another user's process: never ours to signal
                continue
            comm = (p / "comm").read_text().strip()
            ppid = next(line.split()[1] for line in (p / "status").read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if comm == "edgert-recorder" and ppid == sup_pid:
            return int(p.name), run_id
    return None, (f"run {run_id} has no recorder process: set record.enabled = true (a threads-mode run "
                  "is triggered from its own process, RecorderStage.trigger)")


def cmd_trigger(args: argparse.Namespace) -> int:
    pid, run_id = _recorder_pid(args.run)
    if pid is None:
        print(f"edgert: error: {run_id}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError) as e:  # it ended (or changed hands) since we looked
        print(f"edgert: error: cannot signal the recorder of run {run_id} (pid {pid}): {e.strerror}; "
              "is the run still going? `edgert record trigger` again", file=sys.stderr)
        return 1
    print(f"clip requested from the recorder of run {run_id} (pid {pid})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rec = sub.add_parser("record", help="recordings: list them with their status, ask a running recorder for a clip")
    rsub = rec.add_subparsers(dest="record_command", required=True)
    p = rsub.add_parser("list", help="every recording in a folder, whole or truncated (exit 1 if any is truncated)")
    p.add_argument("dir", nargs="?", default=None, help="folder (default: record.dir of --config)")
    p.add_argument("--config", default=None, help=f"pipeline config (default: {DEFAULT_CONFIG.name})")
    p.set_defaults(func=cmd_list)
    p = rsub.add_parser("trigger", help="ask the running pipeline's recorder for a clip around now (operator trigger)")
    p.add_argument("--run", help="run id (default: the newest running pipeline)")
    p.set_defaults(func=cmd_trigger)
