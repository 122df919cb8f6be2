"""edgert: an edge inference runtime for in-vehicle computers.

This is the package's public face (installed as `edgert`): what a vehicle team's own code may
import and rely on across upgrades. Everything else lives under `edgert.runtime`,
`edgert.kernels`, `edgert.models` and `edgert.bench` and may change between releases.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgert")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
