"""Linux futexes on a word in shared memory: the kernel's own wait/wake, through ctypes.

A process waiting for a ZeroMQ message over ipc:// is woken through two I/O threads
(sender's, then receiver's) before its own thread runs: after 33 ms asleep on the 2-core
VM that took 87 to 158 us per hop (p50), where a futex (or a pipe) took 9 to 31 us
(docs/benchmarks.md, "Mailboxes"). A futex also wakes every waiter at once and needs no
registration, which suits one publisher and any number of latest-only readers.

There is no maintained Python binding for futex(2); the two calls below are the whole
interface. The syscall number is per architecture; elsewhere `available()` is False and
the runtime keeps ZeroMQ for every hop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine())
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE_FLAG: the word is shared between processes
_WAKE_ALL = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = None
if _SYS_FUTEX is not None and platform.system() == "Linux":
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
    _syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]


def available() -> bool:
    """True where this module can wait and wake (Linux on x86-64 or 64-bit Arm)."""
    return _libc is not None


class Futex:
    """One 32-bit word at `address`; the caller keeps the memory mapped while this is used."""

    def __init__(self, address: int) -> None:
        if not available():
            raise OSError(f"futexes are not supported here ({platform.system()} {platform.machine()}); "
                          "set pipeline.mailbox = false to use ZeroMQ for every hop")
        if address % 4:
            raise ValueError(f"a futex word must be 4-byte aligned, address {address:#x} is not")
        self.address = address
        self._ts = _Timespec(0, 0)
        self._ts_ref = ctypes.byref(self._ts)

    def wait(self, expected: int, timeout_ns: int) -> None:
        """Sleep while the word equals `expected`, at most `timeout_ns`; returns early on a wake,
        a signal or a changed word (the caller re-reads it, as with any futex)."""
        self._ts.tv_sec, self._ts.tv_nsec = divmod(max(0, timeout_ns), 1_000_000_000)
        if _syscall(_SYS_FUTEX, self.address, _FUTEX_WAIT, expected, self._ts_ref, None, 0) == -1:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise OSError(err, f"futex wait failed: {os.strerror(err)}")

    def wake(self) -> None:
        """Wake every process waiting on the word."""
        if _syscall(_SYS_FUTEX, self.address, _FUTEX_WAKE, _WAKE_ALL, None, None, 0) == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"futex wake failed: {os.strerror(err)}")
