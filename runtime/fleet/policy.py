"""Data-residency policy: per region of collection, where recordings may go and how long they stay.

Driving data is personal data. A policy file (TOML, `configs/fleet-policy.toml`) has one
table per region of collection:

    [regions.eu]
    store_in = ["eu"]            # regions where the data may be stored
    retention_days = 30          # deleted by `edgert fleet prune` after this
    anonymise = true             # faces and plates blurred before a frame is written
    encrypt = true               # clips encrypted at rest with the region's key
    [regions.eu.transfer_to]     # approved cross-border transfers: destination = approval reference
    us = "EU-US transfer approval ref ..."

Parsing is strict like runtime/config.py: an unknown key, a wrong type or a destination that
is not a region is refused with the key's name and the fix. Anything not listed is forbidden:
a transfer is allowed only into `store_in` or to a `transfer_to` destination.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.runtime.errors import EdgertError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_REGION = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_KEY_NAMES = ("audit", "vehicle")  # keys/audit.key, keys/vehicle.key: not region keys
_KEYS = ("store_in", "transfer_to", "retention_days", "anonymise", "encrypt")


class PolicyError(EdgertError, ValueError):
    """The policy file is missing, malformed, or names a region it does not define."""


@dataclass(frozen=True)
class RegionPolicy:
    name: str
    store_in: tuple[str, ...]
    retention_days: float
    anonymise: bool
    encrypt: bool
    transfer_to: dict[str, str] = field(default_factory=dict)  # destination -> approval reference


@dataclass(frozen=True)
class Decision:
    """The answer to "may this move?", with the reason written to the audit log either way."""

    allowed: bool
    reason: str
    approval: str = ""  # the approval reference a cross-border transfer relied on


def _unknown(key: str, allowed: tuple[str, ...] | list[str]) -> PolicyError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return PolicyError(f"unknown key {key!r}{hint}; allowed here: {', '.join(allowed)}")


def _region_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not _REGION.match(name):
        raise PolicyError(f"{where}: {name!r} is not a region name; use lower-case letters, digits, '-' or '_'")
    if name in _KEY_NAMES:  # keys/<region>.key would be that key
        raise PolicyError(f"{where}: {name!r} names a vehicle key file (keys/{name}.key), not a region; rename it")
    return name


def _region(name: str, raw: Any) -> RegionPolicy:
    w = f"regions.{name}"
    if not isinstance(raw, dict):
        raise PolicyError(f"[{w}] must be a table, got {raw!r}")
    for k in raw:
        if k not in _KEYS:
            raise _unknown(f"{w}.{k}", _KEYS)
    missing = [k for k in ("store_in", "retention_days", "anonymise", "encrypt") if k not in raw]
    if missing:
        raise PolicyError(f"[{w}]: missing {', '.join(missing)}; every region states all of store_in, "
                          "retention_days, anonymise and encrypt (no silent defaults for personal data)")
    store = raw["store_in"]
    if not isinstance(store, list) or not store:
        raise PolicyError(f"{w}.store_in: expected a non-empty list of regions, got {store!r}")
    store_in = tuple(_region_name(f"{w}.store_in", s) for s in store)
    days = raw["retention_days"]
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days <= 0:
        raise PolicyError(f"{w}.retention_days: expected a number of days > 0, got {days!r}")
    for k in ("anonymise", "encrypt"):
        if not isinstance(raw[k], bool):
            raise PolicyError(f"{w}.{k}: expected true or false, got {raw[k]!r}")
    transfers = raw.get("transfer_to", {})
    if not isinstance(transfers, dict):
        raise PolicyError(f"{w}.transfer_to: expected a table destination = \"approval reference\", got {transfers!r}")
    for dest, ref in transfers.items():
        _region_name(f"{w}.transfer_to", dest)
        if not isinstance(ref, str) or not ref.strip():
            raise PolicyError(f"{w}.transfer_to.{dest}: expected the approval's reference (a non-empty string), "
                              f"got {ref!r}; a transfer without a recorded approval is not allowed")
    return RegionPolicy(name, store_in, float(days), raw["anonymise"], raw["encrypt"], dict(transfers))


class Policy:
    """A loaded, validated policy: `region(name)` and `check_transfer(from, to)`."""

    def __init__(self, regions: dict[str, RegionPolicy], source: str = "<dict>") -> None:
        self.regions = regions
        self.source = source

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> Policy:
        for k in raw:
            if k != "regions":
                raise _unknown(k, ["regions"])
        regions = raw.get("regions")
        if not isinstance(regions, dict) or not regions:
            raise PolicyError(f"{source}: no [regions.NAME] tables; the policy must define every region that "
                              "vehicles collect data in")
        out = {_region_name("regions", n): _region(n, r) for n, r in regions.items()}
        for r in out.values():
            for dest in (*r.store_in, *r.transfer_to):
                if dest not in out:
                    raise PolicyError(f"regions.{r.name}: destination {dest!r} is not a region of this policy; "
                                      f"add [regions.{dest}] or fix the name (regions: {', '.join(out)})")
        return cls(out, source)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and validate a policy TOML file."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise PolicyError(f"policy file {path} not found; pass --policy FILE (the shipped example is "
                              "configs/fleet-policy.toml)") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(raw, str(path))

    def region(self, name: str) -> RegionPolicy:
        """The policy of one region of collection; PolicyError naming the known ones if absent."""
        try:
            return self.regions[name]
        except KeyError:
            raise PolicyError(f"region {name!r} is not in the policy {self.source} (regions: "
                              f"{', '.join(self.regions)}); add [regions.{name}] or fix the vehicle's region") from None

    def check_transfer(self, from_region: str, to_region: str) -> Decision:
        """May data collected in `from_region` be stored in or sent to `to_region`? Never raises."""
        src = self.regions.get(from_region)
        if src is None:
            return Decision(False, f"region of collection {from_region!r} is not in the policy {self.source}; "
                                   f"nothing may leave it until [regions.{from_region}] is added")
        if to_region in src.store_in:
            return Decision(True, f"{from_region} data may be stored in {to_region} (regions.{from_region}.store_in)")
        ref = src.transfer_to.get(to_region)
        if ref is not None:
            return Decision(True, f"approved cross-border transfer {from_region} -> {to_region} ({ref})", ref)
        approved = ", ".join(src.transfer_to) or "none"
        return Decision(False, f"{from_region} data may be stored only in {', '.join(src.store_in)} and has no "
                               f"approved transfer to {to_region} (approved destinations: {approved}); if an "
                               f"approval exists, record it under [regions.{from_region}.transfer_to] in "
                               f"{self.source}")
