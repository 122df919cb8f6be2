"""One base class for every error edgert reports to its user (`edgert.EdgertError`).

An `EdgertError` is bad input: a config key out of range, a model whose manifest does not
verify, a clip the residency policy refuses, a key file anyone may read. Its message names the
problem and the fix, and `edgert` prints it as `edgert: error: <message>` with exit status 2.
Every other exception is a bug in edgert and keeps its traceback.

Each domain error keeps a second base from the standard library (ValueError, RuntimeError,
KeyError) so that code catching that one still catches it. Kept free of imports: every module
may import it.
"""

from __future__ import annotations


class EdgertError(Exception):
    """Base of every error that is the user's input, not a bug: the message says what to fix."""


class UsageError(EdgertError, ValueError):
    """A command's arguments do not fit together or are out of range (beyond what argparse checks)."""


class MissingExtra(EdgertError, ImportError):
    """An optional dependency is not installed: the message names the extra that brings it,
    e.g. `pip install 'edgert[camera]'` (PyAV, linuxpy) or `'edgert[bench]'`."""
