"""Where edgert's files are: the data shipped inside the package, and this user's own folders.

Two kinds of place, never mixed:

- **Bundled** (read-only, inside the installed package, read through importlib.resources): the
  embedded default pipeline `configs/sim.toml`, the fleet policy example, the model zoo
  `models/<name>/`, the trusted publishers' keys `models/publishers/*.pub`, the CAN frame's DBC file.
  Nothing is ever written there: site-packages may be read-only, shared by users, or replaced by
  the next upgrade.
- **This user's** (XDG base directories): data `$XDG_DATA_HOME/edgert` (the user zoo `models/`,
  recordings, fleet keys and audit log), cache `$XDG_CACHE_HOME/edgert` (optimised graphs, TensorRT
  engines, compiled kernels), config `$XDG_CONFIG_HOME/edgert` (the cache-sealing key).

A relative path in a config file resolves against that file's folder (`resolve`); the embedded
default's folder is the bundled `configs/`, so its relative paths name bundled data.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def bundled(package: str) -> Path:
    """The folder of one of edgert's data packages (`edgert.configs`, `edgert.models`, `edgert.runtime`).

    edgert is installed as plain files (a wheel, or an editable checkout), so the resource root is a
    real folder; a zipped install could not hand ONNX Runtime or Numba a path, so it is refused here."""
    root = files(package)
    if not isinstance(root, Path):
        raise RuntimeError(f"{package} is not installed as files on disk ({root!r}); install edgert from its "
                           "wheel with pip (zipped installs are not supported)")
    return root


def default_config() -> Path:
    """The embedded default pipeline: the simulator closed loop (`edgert run` with no config)."""
    return bundled("edgert.configs") / "sim.toml"


def fleet_policy() -> Path:
    """The residency policy example the recorder and `edgert fleet` use unless told otherwise."""
    return bundled("edgert.configs") / "fleet-policy.toml"


def bundled_zoo() -> Path:
    """The models shipped with edgert: searched first, never written."""
    return bundled("edgert.models")


def publishers() -> Path:
    """The trusted publishers' public keys shipped with edgert (`<name>.pub`)."""
    return bundled_zoo() / "publishers"


def dbc_file() -> Path:
    """The CAN command frame's description (runtime/canbus.py), for CAN tools and ECU suppliers."""
    return bundled("edgert.runtime") / "edgert_command.dbc"


def _xdg(var: str, fallback: str) -> Path:
    # The XDG spec: an unset, empty or relative value is ignored.
    v = os.environ.get(var, "")
    return (Path(v) if os.path.isabs(v) else Path.home() / fallback) / "edgert"


def data_home() -> Path:
    """This user's edgert data: `$XDG_DATA_HOME/edgert` (`~/.local/share/edgert`)."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def cache_home() -> Path:
    """This user's edgert caches: `$XDG_CACHE_HOME/edgert` (`~/.cache/edgert`). Deleting it is always safe."""
    return _xdg("XDG_CACHE_HOME", ".cache")


def config_home() -> Path:
    """This user's edgert settings and secrets: `$XDG_CONFIG_HOME/edgert` (`~/.config/edgert`)."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def user_zoo() -> Path:
    """Where `edgert models add` puts models and the loader looks after the bundled zoo, unless a
    config (`infer.zoo`) or `--zoo DIR` names another folder: `$XDG_DATA_HOME/edgert/models`."""
    return data_home() / "models"


def recordings() -> Path:
    """Where the recorder writes and `edgert fleet prune` / `record list` look by default."""
    return data_home() / "recordings"


def fleet_home() -> Path:
    """The vehicle's fleet data: per-region keys (`keys/`) and the audit log (`audit.jsonl`)."""
    return data_home() / "fleet"


def resolve(value: str | os.PathLike[str], base: str | os.PathLike[str]) -> Path:
    """A path from a config file: `~` expanded; a relative one taken against `base`, the config file's
    folder (not the working directory, which differs between a shell, a service and a test)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(base) / p
