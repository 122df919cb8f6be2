"""Market approval of models: ed25519-signed manifests from trusted publishers.

A model's `manifest.toml` pins the model file's sha256 and lists the markets the variant is
approved for; its publisher signs the manifest's exact bytes with ed25519 and ships the
signature as `manifest.sig` beside it. So one signature covers the model, its markets and
its preprocessing. The runtime trusts the public keys in one folder (`models/publishers/`
by default, `infer.trusted_keys` in a pipeline config): `<publisher>.pub`, one or more PEM
public keys (more than one while a key is being rotated).

The pipeline loads a model only through `load_approved`: unsigned, altered, signed by an
unknown key or not approved for `pipeline.market` is refused with the model, the problem and
the fix. `edgert infer` (one-shot, any ONNX file) does not ask for a signature.

The supervisor approves the manifest once at start and pins its sha256 for the run; every stage
passes that pin back (`pin=`), so a manifest edited (even re-signed) mid-run is refused by a
stage that restarts, with the file and both hashes, instead of being loaded.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgert.runtime.manifest import ModelError, ModelManifest, load_manifest

if TYPE_CHECKING:
    from edgert.runtime.config import PipelineConfig

SIG_FILE = "manifest.sig"
SIG_PREFIX = "ed25519 "
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


class ApprovalError(ModelError):
    """A model is unsigned, altered, from an untrusted publisher or not approved for the market."""


def keygen(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """A new publisher key pair: `<name>.pem` (private, 0600) and `<name>.pub` (public, to commit)."""
    if not _NAME.match(name):
        raise ModelError(f"publisher name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{name}.pem", out / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise ModelError(f"{p} already exists; pick another --name or move the old key away first "
                             "(a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def _private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ModelError(f"private key {path} does not exist; `edgert models keygen --out DIR` makes one") from None
    except (ValueError, TypeError) as e:
        raise ModelError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"{path}: a {type(key).__name__}, not an ed25519 key; use `edgert models keygen`")
    return key


def publisher_keys(trusted_dir: Path, publisher: str) -> list[Ed25519PublicKey]:
    """The trusted public keys of `publisher` (empty if it is not trusted)."""
    if not _NAME.match(publisher):
        return []
    path = trusted_dir / f"{publisher}.pub"
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    keys = []
    for block in _PEM_BLOCK.findall(data):
        try:
            k = serialization.load_pem_public_key(block)
        except ValueError as e:
            raise ModelError(f"{path}: a public key in it does not parse ({e}); restore the file") from None
        if not isinstance(k, Ed25519PublicKey):
            raise ModelError(f"{path}: holds a {type(k).__name__}; publisher keys are ed25519")
        keys.append(k)
    if not keys:
        raise ModelError(f"{path}: no PEM public key in it; restore the file")
    return keys


def sign(model_dir: str | Path, private_key: str | Path) -> Path:
    """Sign `model_dir/manifest.toml` as it is now; writes and returns `manifest.sig`.

    The manifest must load and pin the model file (its sha256 is checked here), and must name
    its `publisher`, so a verifier knows whose key to use.
    """
    d = Path(model_dir)
    try:
        data = (d / "manifest.toml").read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no manifest at {d / 'manifest.toml'}; nothing to sign") from None
    m = load_manifest(d, data)
    m.read_verified()  # never sign a manifest whose model file does not match it
    if not m.publisher:
        raise ModelError(f"{d / 'manifest.toml'}: no 'publisher' in [model]; add publisher = \"NAME\" (the "
                         "name of the key in models/publishers/) before signing")
    sig = _private_key(Path(private_key)).sign(data)
    out = d / SIG_FILE
    out.write_text(SIG_PREFIX + base64.b64encode(sig).decode() + "\n")
    return out


def _read_sig(model_dir: Path, name: str) -> bytes:
    path = model_dir / SIG_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ApprovalError(f"model {name!r} ({model_dir}) is unsigned: no {SIG_FILE}; its publisher signs it "
                            f"with `edgert models sign {model_dir.name} --key PUBLISHER.pem`") from None
    try:
        if not text.startswith(SIG_PREFIX):
            raise ValueError("no 'ed25519 ' prefix")
        sig = base64.b64decode(text[len(SIG_PREFIX):], validate=True)
        if len(sig) != 64:
            raise ValueError(f"{len(sig)} bytes, not 64")
    except (ValueError, binascii.Error) as e:
        raise ApprovalError(f"model {name!r}: {path} is malformed ({e}); re-sign the model") from None
    return sig


def verify_signature(model_dir: str | Path, trusted_dir: str | Path, pin: str = "") -> ModelManifest:
    """The manifest parsed from exactly the bytes whose signature checked out, else ApprovalError.

    `pin`: the sha256 the bytes must have (the run's approved manifest), else ManifestChanged."""
    d, trusted = Path(model_dir), Path(trusted_dir)
    try:
        data = (d / "manifest.toml").read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no manifest at {d / 'manifest.toml'}") from None
    m = load_manifest(d, data, pin=pin)
    sig = _read_sig(d, m.name)
    if not m.publisher:
        raise ApprovalError(f"model {m.name!r} ({d}): the manifest names no publisher, so no key can vouch for "
                            "it; add publisher = \"NAME\" to [model] and have that publisher sign it")
    keys = publisher_keys(trusted, m.publisher)
    if not keys:
        raise ApprovalError(f"model {m.name!r}: publisher {m.publisher!r} is not trusted here (no "
                            f"{trusted / (m.publisher + '.pub')}); install that publisher's public key there "
                            "if you trust it, or use a model from a trusted publisher")
    for k in keys:
        try:
            k.verify(sig, data)
            return m
        except InvalidSignature:
            continue
    raise ApprovalError(f"model {m.name!r} ({d}): the signature does not match manifest.toml: the manifest was "
                        f"altered after signing, or signed by a key that is not {m.publisher!r}'s. Restore the "
                        f"published manifest, or have {m.publisher!r} re-sign it")


def check_market(m: ModelManifest, market: str) -> None:
    """ApprovalError unless the manifest approves `market` (names compare case-insensitively)."""
    if market.lower() not in {x.lower() for x in m.markets}:
        approved = ", ".join(m.markets) or "none"
        raise ApprovalError(f"model {m.name!r} {m.version} is not approved for market {market!r} (approved: "
                            f"{approved}); use a variant approved for {market!r} (`edgert models list` shows "
                            "markets) or set pipeline.market to where the vehicle is sold")


def load_approved(model_dir: str | Path, market: str, trusted_dir: str | Path, pin: str = "") -> ModelManifest:
    """The manifest of a model the pipeline may run in `market`; ApprovalError says why not.

    `pin`: the sha256 the manifest's bytes must have (ManifestChanged otherwise)."""
    m = verify_signature(model_dir, trusted_dir, pin=pin)
    check_market(m, market)
    return m


def approved_manifest(cfg: PipelineConfig, pin: str = "") -> ModelManifest:
    """`load_approved` for a pipeline config: its model, `pipeline.market`, `infer.trusted_keys`.

    A stage passes its run's pin (StageContext.manifest_sha256): the manifest the supervisor
    approved at start, and no other."""
    return load_approved(cfg.model_dir(), cfg.pipeline.market, cfg.trusted_keys_dir(), pin=pin)


def signature_status(model_dir: str | Path, trusted_dir: str | Path) -> str:
    """One line for `edgert models verify`: who signed it, or why the signature does not hold."""
    try:
        m = verify_signature(model_dir, trusted_dir)
    except ModelError as e:
        return f"signature FAILED: {e}"
    return f"signed by {m.publisher}, approved for {', '.join(m.markets) or 'no market'}"
