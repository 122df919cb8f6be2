"""Export and prune of recorded clips under the residency policy; every decision is audited.

A clip is an MCAP file (`*.mcap`) whose metadata record "edgert" holds at least `region`
(the vehicle's region of collection) and `run_id`, plus `recorded_ns` (UNIX-epoch ns of the
recording's start; else the first message's log time, which the recorder stamps on the wall
clock) and `anonymised` ("true"/"false"); or the same encrypted (`*.mcap.enc`,
runtime/fleet/crypto.py), whose cleartext header carries that metadata so no key is needed.

Export refuses (fail closed): a clip whose region or metadata cannot be read, a destination
the policy does not allow, a clip not marked anonymised from a region that requires it, and a
plaintext clip from a region that requires encryption. Prune deletes clips older than their
region's retention; a clip whose age or region is unknown is kept and reported, never guessed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from runtime.fleet import crypto
from runtime.fleet.audit import AuditLog
from runtime.fleet.policy import Decision, Policy

META_NAME = "edgert"
NS_PER_DAY = 86_400 * 10**9


class ClipError(ValueError):
    """A clip cannot be read, or lacks the metadata the policy needs."""


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    region: str
    recorded_ns: int | None
    run_id: str
    encrypted: bool
    anonymised: bool | None  # None: the recording does not say


def is_clip(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".mcap") or path.name.endswith(".mcap" + crypto.SUFFIX))


def _mcap_metadata(path: Path) -> dict[str, str]:
    """The "edgert" metadata, plus `recorded_ns` from the first message's log time if it lacks one.

    The indexed summary is used when the file has one; a file cut off by a crash (no summary)
    is read record by record, as far as it goes.
    """
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    from mcap.records import Message, Metadata
    from mcap.stream_reader import StreamReader

    errors = (McapError, ValueError, EOFError, OSError, struct.error)
    meta: dict[str, str] | None = None
    first_ns: int | None = None
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            for m in reader.iter_metadata():
                if m.name == META_NAME:
                    meta = dict(m.metadata)
                    break
            summary = reader.get_summary()
            if summary is not None and summary.statistics is not None and summary.statistics.message_count:
                first_ns = summary.statistics.message_start_time
    except errors:
        meta = None
        try:
            with open(path, "rb") as f:
                for rec in StreamReader(f).records:
                    if isinstance(rec, Metadata) and rec.name == META_NAME and meta is None:
                        meta = dict(rec.metadata)
                    elif isinstance(rec, Message) and first_ns is None:
                        first_ns = rec.log_time
                    if meta is not None and first_ns is not None:
                        break
        except errors as e:
            if meta is None:
                raise ClipError(f"{path}: not a readable MCAP file ({type(e).__name__}: {e})") from None
    if meta is None:
        raise ClipError(f"{path}: no {META_NAME!r} metadata record, so its region of collection is unknown; "
                        "only clips written by the edgert recorder can be exported or pruned")
    if "recorded_ns" not in meta and first_ns:
        meta["recorded_ns"] = str(first_ns)  # the recorder's log_time is wall-clock ns (mcapio.py)
    return meta


def read_clip_info(path: str | Path) -> ClipInfo:
    """Region, start time, run id and flags of a clip, plain or encrypted, without any key."""
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"{path}: no such clip")
    encrypted = path.name.endswith(crypto.SUFFIX)
    if encrypted:
        try:
            h = crypto.read_header(path)
        except crypto.CryptoError as e:
            raise ClipError(str(e)) from None
        meta = {str(k): str(v) for k, v in dict(h.get("meta") or {}).items()}
        meta.setdefault("region", h["region"])
        if meta["region"] != h["region"]:
            raise ClipError(f"{path}: header region {h['region']!r} and metadata region {meta['region']!r} differ")
    else:
        meta = _mcap_metadata(path)
    region = meta.get("region", "")
    if not region:
        raise ClipError(f"{path}: its {META_NAME!r} metadata has no 'region'; the recorder must tag every clip")
    rec = meta.get("recorded_ns")
    try:
        recorded_ns = int(rec) if rec is not None else None
    except ValueError:
        raise ClipError(f"{path}: metadata recorded_ns {rec!r} is not an integer (UNIX-epoch ns)") from None
    anon = meta.get("anonymised")
    return ClipInfo(path, region, recorded_ns, meta.get("run_id", ""), encrypted,
                    None if anon is None else anon.lower() == "true")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def decide_export(info: ClipInfo, to_region: str, policy: Policy) -> Decision:
    """The policy's answer for one clip, including the anonymisation and encryption duties."""
    d = policy.check_transfer(info.region, to_region)
    if not d.allowed:
        return d
    rp = policy.region(info.region)
    if rp.anonymise and info.anonymised is not True:
        return Decision(False, f"{info.region} requires anonymised frames and this clip is "
                               f"{'not anonymised' if info.anonymised is False else 'not marked anonymised'}; "
                               "it must not leave the vehicle's store (record it with anonymisation on)")
    if rp.encrypt and not info.encrypted:
        return Decision(False, f"{info.region} requires clips encrypted at rest and this one is plaintext; "
                               f"encrypt it first (`edgert fleet encrypt {info.path}`)")
    return d


@dataclass(frozen=True)
class ExportResult:
    clip: Path
    decision: Decision
    dest: Path | None = None


def export(clips: Iterable[str | Path], to_region: str, dest: str | Path, policy: Policy,
           audit: AuditLog) -> list[ExportResult]:
    """Copy each clip the policy allows into DEST; refuse the others. Every decision is audited."""
    out_dir = Path(dest)
    results = []
    for clip in map(Path, clips):
        try:
            info = read_clip_info(clip)
        except ClipError as e:
            d = Decision(False, str(e))
            audit.append("export_refused", clip=str(clip), to=to_region, reason=d.reason)
            results.append(ExportResult(clip, d))
            continue
        d = decide_export(info, to_region, policy)
        fields = {"clip": str(clip), "run_id": info.run_id, "from": info.region, "to": to_region}
        if not d.allowed:
            audit.append("export_refused", **fields, reason=d.reason)
            results.append(ExportResult(clip, d))
            continue
        target = out_dir / clip.name
        if target.exists():
            d = Decision(False, f"{target} already exists; export to an empty folder or remove it first")
            audit.append("export_refused", **fields, reason=d.reason)
            results.append(ExportResult(clip, d))
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(clip, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        audit.append("export", **fields, sha256=_sha256(target), dest=str(target), reason=d.reason,
                     approval=d.approval)
        results.append(ExportResult(clip, d, target))
    return results


@dataclass(frozen=True)
class PruneResult:
    deleted: list[Path]
    kept: list[Path]
    errors: list[str]


def prune(root: str | Path, policy: Policy, audit: AuditLog, now_ns: int) -> PruneResult:
    """Delete clips under ROOT older than their region's retention_days (as of `now_ns`)."""
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"{root}: no such folder of recordings")
    deleted, kept, errors = [], [], []
    for clip in sorted(p for p in root.rglob("*") if is_clip(p)):
        try:
            info = read_clip_info(clip)
            rp = policy.region(info.region)
            if info.recorded_ns is None:
                raise ClipError(f"{clip}: no recorded_ns in its metadata, so its age is unknown; kept, decide by hand")
        except (ClipError, ValueError) as e:
            errors.append(str(e))
            kept.append(clip)
            audit.append("prune_error", clip=str(clip), reason=str(e))
            continue
        age_days = (now_ns - info.recorded_ns) / NS_PER_DAY
        if age_days > rp.retention_days:
            clip.unlink()
            deleted.append(clip)
            audit.append("prune_delete", clip=str(clip), run_id=info.run_id, region=info.region,
                         age_days=round(age_days, 3), retention_days=rp.retention_days,
                         reason=f"older than regions.{info.region}.retention_days")
        else:
            kept.append(clip)
    audit.append("prune", root=str(root), now_ns=now_ns, deleted=len(deleted), kept=len(kept), errors=len(errors))
    return PruneResult(deleted, kept, errors)


def encrypt_clip(clip: str | Path, keys_dir: str | Path, keep: bool = False) -> Path:
    """Encrypt a plain clip with its region's key (CLIP -> CLIP.enc), carrying its metadata in the header.

    Removes the plaintext unless `keep`. Fits the recorder's `on_clip_closed(path) -> path` hook.
    """
    clip = Path(clip)
    info = read_clip_info(clip)
    if info.encrypted:
        raise ClipError(f"{clip} is already encrypted")
    meta = {"region": info.region, "run_id": info.run_id}
    if info.recorded_ns is not None:
        meta["recorded_ns"] = str(info.recorded_ns)
    if info.anonymised is not None:
        meta["anonymised"] = str(info.anonymised).lower()
    out = crypto.encrypt_file(clip, crypto.load_key(keys_dir, info.region), info.region, meta)
    if not keep:
        clip.unlink()
    return out


def recorder_hooks(policy: Policy, region: str, frame_shape: tuple[int, int, int], keys_dir: str | Path,
                   face_model: str | Path | None = None
                   ) -> tuple[Callable[[np.ndarray], int] | None, Callable[[Path], Path] | None]:
    """(frame_filter, on_clip_closed) for the recorder, as the region's policy demands.

    Raises (AnonymiseError, CryptoError) at start-up when a duty cannot be met, e.g. no face
    detector or no key: the recorder must then not record, rather than record in the clear.
    """
    from runtime.fleet.anonymise import Anonymiser

    rp = policy.region(region)
    frame_filter = Anonymiser(frame_shape, faces=True, plates=True, face_model=face_model) if rp.anonymise else None
    if not rp.encrypt:
        return frame_filter, None
    crypto.load_key(keys_dir, region)  # fail now, not at the first clip

    def on_closed(path: Path) -> Path:
        return encrypt_clip(path, keys_dir)
    return frame_filter, on_closed
