"""`edgert fleet ...`: argparse wiring for residency policy, audit, keys and encryption of clips.

    edgert fleet export CLIP... --to REGION [--dest DIR] [--policy FILE]
    edgert fleet prune [DIR] [--policy FILE] [--now WHEN]
    edgert fleet audit verify [LOG] [--key FILE]
    edgert fleet keygen REGION | --audit | --vehicle [--keys DIR]
    edgert fleet encrypt CLIP... [--keys DIR] [--keep]
    edgert fleet decrypt CLIP.enc --out FILE [--keys DIR]

Every command that moves, deletes, encrypts or decrypts a clip writes its decision to the
audit log (default `$XDG_DATA_HOME/edgert/fleet/audit.jsonl`, HMAC'd when `keys/audit.key`
exists). The logic is in runtime/fleet/; its errors (PolicyError, ClipError, CryptoError, AuditError,
KeyFileError) are EdgertErrors, which cli.main() prints as `edgert: error: ...`, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from edgert.runtime import paths
from edgert.runtime.fleet import audit as audit_mod
from edgert.runtime.fleet import crypto
from edgert.runtime.fleet.export import ClipError, encrypt_clip, export, prune, read_clip_info
from edgert.runtime.fleet.policy import Policy, PolicyError

DEFAULT_POLICY = paths.fleet_policy()
AUDIT_KEY = "audit"  # keys/audit.key: the vehicle's HMAC key for the audit chain


def data_dir() -> Path:
    """Where a vehicle keeps its fleet data by default: $XDG_DATA_HOME/edgert/fleet."""
    return paths.fleet_home()


def _audit(args: argparse.Namespace) -> audit_mod.AuditLog:
    key_path = Path(args.keys) / f"{AUDIT_KEY}.key"
    key = audit_mod.load_key(key_path) if os.path.lexists(key_path) else None  # a link there is refused, not skipped
    return audit_mod.AuditLog(args.audit, key)


def parse_when(text: str) -> int:
    """UNIX-epoch ns from `@SECONDS` or an ISO-8601 date/time (UTC unless it says otherwise)."""
    try:
        if text.startswith("@"):
            return int(float(text[1:]) * 1e9)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise PolicyError(f"--now {text!r}: give an ISO date/time (2026-01-31 or 2026-01-31T12:00:00Z) "
                          "or @EPOCH_SECONDS") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1e9)


def cmd_export(args: argparse.Namespace) -> int:
    policy = Policy.load(args.policy)
    log = _audit(args)
    dest = Path(args.dest) if args.dest else Path(f"export-{args.to}")
    results = export(args.clips, args.to, dest, policy, log, args.keys)
    refused = 0
    for r in results:
        if r.decision.allowed:
            print(f"exported {r.clip} -> {r.dest}: {r.decision.reason}")
        else:
            refused += 1
            print(f"REFUSED  {r.clip}: {r.decision.reason}", file=sys.stderr)
    print(f"{len(results) - refused} exported, {refused} refused; decisions in {log.path}")
    return 1 if refused else 0


def cmd_prune(args: argparse.Namespace) -> int:
    policy = Policy.load(args.policy)
    log = _audit(args)
    now = parse_when(args.now) if args.now else audit_mod.now_ns()
    res = prune(args.dir or paths.recordings(), policy, log, now, args.keys)
    for p in res.deleted:
        print(f"deleted {p}")
    for e in res.errors:
        print(f"KEPT    {e}", file=sys.stderr)
    print(f"{len(res.deleted)} deleted, {len(res.kept)} kept ({len(res.errors)} undecided); decisions in {log.path}")
    return 1 if res.errors else 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    key = audit_mod.load_key(args.key) if args.key else None
    r = audit_mod.verify(args.log, key)
    if r.ok:
        print(f"ok: {r.entries} entries, chain intact; head seq {r.entries - 1} hash {r.head} "
              "(compare with a copy kept off the vehicle: cutting the tail is not visible in the chain)")
        return 0
    print(f"edgert: error: {args.log}: chain broken at {r.reason} ({r.entries} entries before it verify)",
          file=sys.stderr)
    return 1


def cmd_keygen(args: argparse.Namespace) -> int:
    if bool(args.region) + bool(args.audit) + bool(args.vehicle) != 1:
        print("edgert: error: give a REGION, --audit or --vehicle (one of them)", file=sys.stderr)
        return 2
    path = crypto.keygen(args.keys, AUDIT_KEY if args.audit else crypto.VEHICLE if args.vehicle else args.region)
    why = ("keep a copy off the vehicle to verify its log: without the key the chain proves order, not authorship"
           if args.audit else "it authenticates the metadata of this vehicle's plain clips; copy it to where "
           "they are exported, pruned or replayed" if args.vehicle else "back it up where the region's data may "
           "be read: a lost key makes its recordings unreadable")
    print(f"wrote {path} (32 random bytes, mode 0600); {why}")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    log = _audit(args)
    for clip in map(Path, args.clips):
        out = encrypt_clip(clip, args.keys, keep=args.keep)
        log.append("encrypt", clip=str(clip), out=str(out), region=crypto.read_header(out)["region"],
                   kept_plaintext=args.keep)
        print(f"encrypted {clip} -> {out}" + ("" if args.keep else " (plaintext removed)"))
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    log = _audit(args)
    region = crypto.read_header(args.clip)["region"]
    crypto.decrypt_file(args.clip, crypto.load_key(args.keys, region), args.out)
    try:  # the plaintext must be the clip the vehicle sealed, as export and replay will require
        read_clip_info(args.out, args.keys)
    except ClipError as e:
        Path(args.out).unlink(missing_ok=True)
        log.append("decrypt_refused", clip=str(args.clip), out=str(args.out), region=region, reason=str(e))
        raise ClipError(f"{args.clip} decrypted, but {e}; the plaintext was removed") from None
    log.append("decrypt", clip=str(args.clip), out=str(args.out), region=region)
    print(f"decrypted {args.clip} -> {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`fleet` and its subcommands."""
    f = sub.add_parser("fleet", help="recorded data: residency policy, export, prune, audit log, keys")
    fsub = f.add_subparsers(dest="fleet_command", required=True)
    d = data_dir()

    def common(p: argparse.ArgumentParser, policy: bool = True) -> None:
        if policy:
            p.add_argument("--policy", default=str(DEFAULT_POLICY), help="residency policy (default: %(default)s)")
        p.add_argument("--audit", default=str(d / "audit.jsonl"), help="audit log (default: %(default)s)")
        p.add_argument("--keys", default=str(d / "keys"), help="key folder (default: %(default)s)")

    p = fsub.add_parser("export", help="copy clips to a region if the policy allows; refuse (exit 1) if not")
    p.add_argument("clips", nargs="+", metavar="CLIP")
    p.add_argument("--to", required=True, metavar="REGION", help="destination region")
    p.add_argument("--dest", default=None, help="destination folder (default: ./export-REGION)")
    common(p)
    p.set_defaults(func=cmd_export)
    p = fsub.add_parser("prune", help="delete clips older than their region's retention_days")
    p.add_argument("dir", nargs="?", default=None, help=f"recordings folder (default: {paths.recordings()})")
    p.add_argument("--now", default=None, help="as of this time (ISO date/time or @EPOCH; default: now)")
    common(p)
    p.set_defaults(func=cmd_prune)
    a = fsub.add_parser("audit", help="the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="check the hash chain; name the first broken entry")
    p.add_argument("log", nargs="?", default=str(d / "audit.jsonl"), help="audit log (default: %(default)s)")
    p.add_argument("--key", default=None, help="the vehicle's audit HMAC key, if the log uses one")
    p.set_defaults(func=cmd_audit_verify)
    p = fsub.add_parser("keygen", help="a new 32-byte key: REGION (clip encryption), --audit (log HMAC) or "
                        "--vehicle (clip metadata HMAC)")
    p.add_argument("region", nargs="?", default=None)
    p.add_argument("--audit", action="store_true", help="make the audit log's HMAC key instead")
    p.add_argument("--vehicle", action="store_true", help="make the vehicle key (the recorder makes one at its "
                   "first start) that authenticates plain clips' metadata")
    p.add_argument("--keys", default=str(d / "keys"), help="key folder (default: %(default)s)")
    p.set_defaults(func=cmd_keygen)
    p = fsub.add_parser("encrypt", help="encrypt clips at rest with their region's key (CLIP -> CLIP.enc)")
    p.add_argument("clips", nargs="+", metavar="CLIP")
    p.add_argument("--keep", action="store_true", help="keep the plaintext file")
    common(p, policy=False)
    p.set_defaults(func=cmd_encrypt)
    p = fsub.add_parser("decrypt", help="decrypt a clip with its region's key")
    p.add_argument("clip")
    p.add_argument("--out", required=True, help="plaintext output file (written 0600)")
    common(p, policy=False)
    p.set_defaults(func=cmd_decrypt)
