"""edgert: an edge inference runtime for in-vehicle computers.

This is the package's public face (installed as `edgert`): what a vehicle team's own code may
import and rely on across upgrades. Everything else lives under `edgert.runtime`,
`edgert.kernels`, `edgert.models` and `edgert.bench` and may change between releases.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from edgert.runtime.errors import EdgertError

try:
    __version__ = version("edgert")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["EdgertError", "__version__"]

# -- the node API (runtime/node.py, docs/nodes.md): imported on first use, so that `import edgert`
# (which every edgert.runtime module import runs first) stays cheap
_NODE_API = {"Node": "edgert.runtime.node", "MsgType": "edgert.runtime.wire", "Stamp": "edgert.runtime.wire",
             "ResultStatus": "edgert.runtime.wire", "CommandFlags": "edgert.runtime.wire",
             "TakeoverReason": "edgert.runtime.wire"}
__all__ += list(_NODE_API)

if TYPE_CHECKING:
    from edgert.runtime.node import Node as Node
    from edgert.runtime.wire import CommandFlags as CommandFlags
    from edgert.runtime.wire import MsgType as MsgType
    from edgert.runtime.wire import ResultStatus as ResultStatus
    from edgert.runtime.wire import Stamp as Stamp
    from edgert.runtime.wire import TakeoverReason as TakeoverReason


def __getattr__(name: str) -> Any:
    if name in _NODE_API:
        return getattr(importlib.import_module(_NODE_API[name]), name)
    raise AttributeError(f"module 'edgert' has no attribute {name!r}")
