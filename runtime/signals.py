"""A signal that sets a threading.Event, without taking the Event's lock in the signal handler.

Why: Python runs a signal handler on the main thread between two bytecodes, possibly while that
thread is inside `event.wait()` or `event.clear()` and holds the Event's lock, which is not
reentrant. A handler that calls `event.set()` then waits for itself forever. A stage did exactly
that: when its supervisor was SIGKILLed, PR_SET_PDEATHSIG's SIGTERM arrived while the stage
slept in `stop.wait()`, and the orphaned edgert-control never stopped (2 of 5 runs of
tests/test_pipeline.py::test_supervisor_sigkill_leaves_no_orphans_and_sweep_cleans_memory).

How: the C-level handler writes the signal number to a pipe (`signal.set_wakeup_fd`), and one
daemon thread reads it and sets the Event. The Python-level handler does nothing but keep the
signal from its default action.
"""

from __future__ import annotations

import os
import signal
import threading

_events: dict[int, threading.Event] = {}
_lock = threading.Lock()
_reader: threading.Thread | None = None


def set_on_signal(signum: int, event: threading.Event) -> None:
    """From now on, signal `signum` sets `event`. Main thread only (as signal.signal)."""
    global _reader
    with _lock:
        _events[int(signum)] = event
        if _reader is None:
            r, w = os.pipe()
            os.set_blocking(w, False)  # a full pipe drops a wake-up byte, never blocks the handler
            signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            _reader = threading.Thread(target=_read, args=(r,), name="signals", daemon=True)
            _reader.start()
    signal.signal(signum, _handled)


def _handled(signum: int, _frame: object) -> None:
    """The work is done by the reader thread."""


def _read(fd: int) -> None:
    while True:
        for signum in os.read(fd, 64):
            event = _events.get(signum)
            if event is not None:
                event.set()
