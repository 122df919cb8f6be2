"""Export and prune of recorded clips under the residency policy; every decision is audited.

A clip is an MCAP file (`*.mcap`) whose metadata record "edgert" holds at least `region`
(the vehicle's region of collection) and `run_id`, plus `recorded_ns` (UNIX-epoch ns of the
recording's start; else the first message's log time, which the recorder stamps on the wall
clock) and `anonymised` ("true"/"false"); or the same encrypted (`*.mcap.enc`,
runtime/fleet/crypto.py), whose cleartext header carries that metadata so no key is needed.

A plain clip counts only if its metadata authenticates with the vehicle key (`edgert.auth`)
and its messages match the seal that key put on them with that metadata (`edgert.seal`,
runtime/fleet/seal.py): so a clip is read whole before any decision on it.

Export refuses (fail closed): a clip whose region or metadata cannot be read, a destination
the policy does not allow, a clip not marked anonymised from a region that requires it, and a
plaintext clip from a region that requires encryption. Prune deletes clips older than their
region's retention; a clip whose age or region is unknown is kept and reported, never guessed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgert.runtime.errors import EdgertError
from edgert.runtime.fleet import crypto, mcapio, seal
from edgert.runtime.fleet.audit import AuditLog
from edgert.runtime.fleet.policy import Decision, Policy

META_NAME = "edgert"
NS_PER_DAY = 86_400 * 10**9
log = logging.getLogger("edgert.fleet")


class ClipError(EdgertError, ValueError):
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


def open_clip(path: str | Path) -> BinaryIO:
    """PATH opened for reading, never through a symlink (whose target someone else may choose)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ClipError(f"{path}: no such clip") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ClipError(f"{path}: is a symlink; refused (decide on the clip itself, not a link to it)") from None
        raise ClipError(f"{path}: cannot be opened ({e.strerror})") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise ClipError(f"{path}: not a regular file")
    return f


def _mcap_metadata(f: BinaryIO, path: Path) -> tuple[dict[str, str], dict[str, str] | None, seal.ClipRead]:
    """The "edgert" metadata record, its "edgert.auth" record (None if it has none) and the one pass
    over the whole file that found them, with its messages' hash for the seal.

    A file cut off by a crash is read as far as it goes (the metadata records are written first).
    """
    found = seal.read_clip(f)
    if META_NAME not in found.records:
        if found.error:
            raise ClipError(f"{path}: not a readable MCAP file ({found.error})")
        raise ClipError(f"{path}: no {META_NAME!r} metadata record, so its region of collection is unknown; "
                        "only clips written by the edgert recorder can be exported, pruned or replayed")
    if found.duplicate:
        raise ClipError(f"{path}: holds the {found.duplicate!r} record twice, so which one counts is ambiguous; "
                        "the recorder writes each once; refused")
    return found.records[META_NAME], found.records.get(mcapio.AUTH_RECORD), found


def check_content(path: Path, meta: dict[str, str], found: seal.ClipRead, key: bytes) -> None:
    """Refuse a plain clip whose messages are not the ones its vehicle key sealed with META.

    The metadata MAC alone would let a genuine `edgert` + `edgert.auth` pair be moved onto
    another clip's messages (an anonymised `sim` clip's labels on raw `cn` frames).
    """
    sealed = found.records.get(seal.SEAL_RECORD)
    if sealed is None:
        if found.error:
            raise ClipError(f"{path}: cut off ({found.error}) before its content was sealed; the recorder seals "
                            f"a cut-off clip's readable part when it next starts (as *{mcapio.TRUNCATED}). Unsealed, "
                            "its messages could be any file's; refused")
        raise ClipError(f"{path}: its content is not sealed (no {seal.SEAL_RECORD!r} record: not closed by an "
                        "edgert recorder with a vehicle key, or the record was stripped); refused, since its "
                        "authenticated metadata could have been moved onto other messages")
    why = seal.check_seal(key, meta, sealed, found.content)
    if why and found.error:
        why += f" (the file breaks off after {found.content.messages} message(s): {found.error})"
    if why:
        raise ClipError(f"{path}: {why}; refused: the metadata must describe the messages it came with")


def check_metadata(path: Path, meta: dict[str, str], auth: dict[str, str] | None, keys_dir: str | Path) -> bytes:
    """Refuse a plain clip whose `edgert` metadata is not the one its vehicle key authenticated.

    Region, age and the anonymised flag decide where a clip may go and when it is deleted, and
    a replay builds its run from the metadata: an edit must make the clip refused, not re-labelled.
    Returns the vehicle key, which then checks the seal (`check_content`).
    """
    if auth is None:
        raise ClipError(f"{path}: its metadata is not authenticated (no {mcapio.AUTH_RECORD!r} record: not "
                        "written by an edgert recorder with a vehicle key, or the record was stripped); refused, "
                        "since its region, age and flags could have been edited")
    if auth.get("key") != crypto.VEHICLE or auth.get("alg") != "hmac-sha256":
        raise ClipError(f"{path}: its metadata is authenticated with {auth.get('alg')!r} by key "
                        f"{auth.get('key')!r}, not hmac-sha256 by the vehicle key; refused")
    try:
        key = crypto.load_key(keys_dir, crypto.VEHICLE)
    except crypto.CryptoError as e:
        raise ClipError(f"{path}: cannot authenticate its metadata: {e}") from None
    if auth.get("key_id") != crypto.key_id(key):
        raise ClipError(f"{path}: its metadata is authenticated by vehicle key {auth.get('key_id')}, not by this "
                        f"machine's ({crypto.key_id(key)}): recorded by another vehicle. Decide on it where that "
                        "vehicle's key is (--keys DIR with it as vehicle.key); refused")
    if not crypto.check_meta_mac(key, meta, auth.get("mac", "")):
        raise ClipError(f"{path}: its metadata was edited after recording (the vehicle key's MAC over its "
                        f"{META_NAME!r} record does not match); refused, not re-labelled")
    return key


def authenticated_metadata(f: BinaryIO, path: str | Path, keys_dir: str | Path) -> tuple[dict[str, str], bool]:
    """(metadata, encrypted) of the clip open as F, authenticated with a key from KEYS_DIR or ClipError.

    A plain clip is read whole: its metadata must authenticate and its messages match its seal.
    An encrypted one is decided on its header, which AES-GCM binds to every chunk of the content.
    """
    path = Path(path)
    if path.name.endswith(crypto.SUFFIX):
        try:
            h = crypto.authenticated_header(f, path, keys_dir)
        except crypto.CryptoError as e:
            raise ClipError(f"{e}; refused") from None
        meta = {str(k): str(v) for k, v in dict(h.get("meta") or {}).items()}
        meta.setdefault("region", h["region"])
        if meta["region"] != h["region"]:
            raise ClipError(f"{path}: header region {h['region']!r} and metadata region {meta['region']!r} differ")
        return meta, True
    meta, auth, found = _mcap_metadata(f, path)
    key = check_metadata(path, meta, auth, keys_dir)  # first: an edited label is named as such
    check_content(path, meta, found, key)
    return meta, False


def clip_info(f: BinaryIO, path: str | Path, keys_dir: str | Path) -> ClipInfo:
    """Region, start time, run id and flags of the clip open as F, from authenticated metadata only."""
    path = Path(path)
    meta, encrypted = authenticated_metadata(f, path, keys_dir)
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


def read_clip_info(path: str | Path, keys_dir: str | Path) -> ClipInfo:
    """Region, start time, run id and flags of a clip, plain or encrypted, authenticated with KEYS_DIR's keys."""
    with open_clip(path) as f:
        return clip_info(f, path, keys_dir)


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


def _open_dest(out_dir: Path) -> int:
    """DEST as a directory fd, made 0700 if new; a symlink there is refused, never followed."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(out_dir, 0o700)
    except FileExistsError:
        pass
    try:
        return os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        why = "is a symlink" if e.errno in (errno.ELOOP, errno.ENOTDIR) and out_dir.is_symlink() else e.strerror
        raise ClipError(f"export destination {out_dir} {why}; give a real folder (links are not followed)") from None


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # a dangling symlink exists too
        return True
    except FileNotFoundError:
        return False


def _copy_to_temp(src: BinaryIO, name: str, dir_fd: int) -> tuple[str, str]:
    """Copy SRC into a new 0600 file with an unpredictable name in DIR_FD; (temp name, sha256)."""
    while True:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as w:
            src.seek(0)
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                w.write(block)
            w.flush()
            os.fsync(w.fileno())
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    return tmp, h.hexdigest()


def export(clips: Iterable[str | Path], to_region: str, dest: str | Path, policy: Policy,
           audit: AuditLog, keys_dir: str | Path) -> list[ExportResult]:
    """Copy each clip the policy allows into DEST; refuse the others. Every decision is audited.

    The decision is made on the clip's authenticated metadata (keys from KEYS_DIR), read from the
    same open file that is then copied; the copy goes to a private temp file in DEST, is checked
    again, and gets its name (a hard link: never over an existing file or through a symlink)
    only after its audit entry is on disk.
    """
    out_dir = Path(dest)
    results: list[ExportResult] = []
    dir_fd: int | None = None

    def refuse(clip: Path, reason: str, fields: dict[str, str] | None = None) -> None:
        audit.append("export_refused", **(fields or {"clip": str(clip), "to": to_region}), reason=reason)
        results.append(ExportResult(clip, Decision(False, reason)))
    try:
        for clip in map(Path, clips):
            try:
                with open_clip(clip) as f:
                    info = clip_info(f, clip, keys_dir)
                    d = decide_export(info, to_region, policy)
                    fields = {"clip": str(clip), "run_id": info.run_id, "from": info.region, "to": to_region}
                    if not d.allowed:
                        refuse(clip, d.reason, fields)
                        continue
                    if dir_fd is None:
                        dir_fd = _open_dest(out_dir)
                    if _exists(clip.name, dir_fd):
                        refuse(clip, f"{out_dir / clip.name} already exists; export to an empty folder or remove "
                                     "it first", fields)
                        continue
                    tmp, sha = _copy_to_temp(f, clip.name, dir_fd)
            except ClipError as e:
                refuse(clip, str(e))
                continue
            try:  # the temp copy goes whatever happens: refused, audited and linked, or failed
                with os.fdopen(os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd), "rb") as copy:
                    if clip_info(copy, clip, keys_dir) != info:  # changed while it was copied
                        raise ClipError(f"{clip}: its metadata changed while it was copied; refused")
                target = out_dir / clip.name
                audit.append("export", **fields, sha256=sha, dest=str(target), reason=d.reason, approval=d.approval)
                os.link(tmp, clip.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except ClipError as e:
                refuse(clip, str(e), fields)
                continue
            except FileExistsError:  # appeared since it was checked: never overwritten
                audit.append("export_failed", **fields, dest=str(target), reason="a file of that name appeared "
                             "meanwhile; nothing exported")
                results.append(ExportResult(clip, Decision(False, f"{target} appeared meanwhile; nothing exported")))
                continue
            finally:
                os.unlink(tmp, dir_fd=dir_fd)
            os.fsync(dir_fd)
            results.append(ExportResult(clip, d, target))
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return results


@dataclass(frozen=True)
class PruneResult:
    deleted: list[Path]
    kept: list[Path]
    errors: list[str]


def prune(root: str | Path, policy: Policy, audit: AuditLog, now_ns: int, keys_dir: str | Path) -> PruneResult:
    """Delete clips under ROOT older than their region's retention_days (as of `now_ns`).

    Age and region come from authenticated metadata (keys from KEYS_DIR); a clip that does not
    authenticate is kept and reported, never deleted or kept on what an edit says.
    """
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"{root}: no such folder of recordings")
    deleted, kept, errors = [], [], []
    for clip in sorted(p for p in root.rglob("*") if is_clip(p)):
        try:
            with open_clip(clip) as f:
                info = clip_info(f, clip, keys_dir)
                ident = os.fstat(f.fileno())
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
            now = os.lstat(clip)
            if (now.st_dev, now.st_ino) != (ident.st_dev, ident.st_ino):  # replaced since it was decided on
                errors.append(f"{clip}: replaced while it was being decided on; kept, run prune again")
                kept.append(clip)
                audit.append("prune_error", clip=str(clip), reason=errors[-1])
                continue
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
    info = read_clip_info(clip, keys_dir)
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


ENCRYPT_TRIES = 3
QUARANTINE = "quarantine"


class Quarantined(ClipError):
    """A finished clip could not be encrypted and was locked away (mode 0) with the reason beside it."""


def quarantine(clip: Path, reason: str) -> Path:
    """Lock a plaintext CLIP away: mode 0 first (unreadable even if the move fails), then into
    CLIP's folder/quarantine/ (0700) with NAME.reason beside it. Returns its new path."""
    os.chmod(clip, 0)
    qdir = clip.parent / QUARANTINE
    qdir.mkdir(mode=0o700, exist_ok=True)
    dest = qdir / clip.name
    os.rename(clip, dest)
    fd = os.open(qdir / f"{clip.name}.reason", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as w:
        w.write(reason + "\n")
    log.error("%s quarantined as %s (mode 0, plaintext): %s. Fix the cause, then `chmod 600` it and "
              "`edgert fleet encrypt` it", clip.name, dest, reason)
    return dest


def encrypt_or_quarantine(clip: str | Path, keys_dir: str | Path, tries: int = ENCRYPT_TRIES,
                          wait_s: float = 0.2) -> Path:
    """encrypt_clip; if it fails, the plaintext is quarantined (never left readable).

    Only an OSError (a full or failing disk, a key store that did not answer) is retried, up to
    `tries` times: it may pass on the next try. Any other error (no key for the region, a clip
    without authenticated metadata, a damaged file) would fail again the same way, so the clip
    is quarantined at once, with that reason. Returns the encrypted clip; raises Quarantined
    (naming where and why) if it was quarantined.
    """
    clip, tries, reason = Path(clip), max(tries, 1), ""
    for attempt in range(1, tries + 1):
        try:
            return encrypt_clip(clip, keys_dir)
        except OSError as e:
            why = f"{type(e).__name__}: {e}"
            log.warning("encrypting %s failed (try %d of %d): %s", clip.name, attempt, tries, why)
            if attempt == tries:
                reason = f"encryption failed {tries} times; last error {why}"
                break
            time.sleep(wait_s * attempt)
        except Exception as e:  # noqa: BLE001 - whatever it is, the plaintext must not stay readable
            why = f"{type(e).__name__}: {e}"
            reason = f"encryption failed and would fail again (not retried): {why}"
            break
    dest = quarantine(clip, reason)
    raise Quarantined(f"{clip}: {reason}; quarantined as {dest}, mode 0")


def recorder_hooks(policy: Policy, region: str, frame_shape: tuple[int, int, int], keys_dir: str | Path,
                   face_model: str | Path | None = None
                   ) -> tuple[Callable[[np.ndarray], int] | None, Callable[[Path], Path] | None]:
    """(frame_filter, on_clip_closed) for the recorder, as the region's policy demands.

    Raises (AnonymiseError, CryptoError) at start-up when a duty cannot be met, e.g. no face
    detector or no key: the recorder must then not record, rather than record in the clear.
    """
    from edgert.runtime.fleet.anonymise import Anonymiser

    rp = policy.region(region)
    frame_filter = Anonymiser(frame_shape, faces=True, plates=True, face_model=face_model) if rp.anonymise else None
    if not rp.encrypt:
        return frame_filter, None
    crypto.load_key(keys_dir, region)  # fail now, not at the first clip

    def on_closed(path: Path) -> Path:
        return encrypt_or_quarantine(path, keys_dir)
    return frame_filter, on_closed
