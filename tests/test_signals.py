"""runtime/signals.py: a signal sets an Event even when it lands while the main thread holds the
Event's lock, where a handler calling event.set() waits for itself forever (a real process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r"""
import os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
ev = threading.Event()
if sys.argv[2] == "new":
    from edgert.runtime.signals import set_on_signal
    set_on_signal(signal.SIGTERM, ev)
else:  # what stage_main did before
    signal.signal(signal.SIGTERM, lambda *_: ev.set())
with ev._cond:  # as inside ev.wait() or ev.clear(): the Event's lock held by the main thread
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs here, between bytecodes, on this thread
print("set" if ev.wait(5) else "not set", flush=True)
"""


def _run(variant: str, timeout_s: float) -> subprocess.CompletedProcess | None:
    PROJECT_ROOT = Path(__file__).resolve().parents[1]

    try:
        return subprocess.run([sys.executable, "-c", CHILD, str(PROJECT_ROOT), variant], capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None  # deadlocked (subprocess.run kills it)


def test_signal_during_the_events_lock_sets_it_once_the_lock_is_free():
    r = _run("new", 10)
    assert r is not None and r.returncode == 0 and r.stdout.strip() == "set", r


def test_the_old_handler_deadlocks_there():
    """The hazard the module exists for: event.set() in the handler never returns."""
    assert _run("old", 3) is None  # it would answer within 0.1 s otherwise
