"""A CPU memory fence, for the seqlocks that guard shared memory (frame pool, mailboxes).

A seqlock reader trusts data it copied only if the sequence word read the same, and even,
before and after the copy. That holds only if the writer's stores become visible in order
(odd word, then data, then even word) and the reader's loads happen in order (word, data,
word). x86-64 keeps stores in order and loads in order by itself; Arm (the SoCs in most
vehicle computers) reorders both, so the writer needs a fence after the odd word and before
the even one, and the reader one after its first load of the word and before its second.

Python has no fence of its own, so this is one compiled by Numba: LLVM's `fence acq_rel`,
which is `dmb ish` on aarch64 and no instruction at all on x86-64 (only the compiler may not
move memory operations across it, and nothing around a call from Python could). Checked for
both targets by tests/test_fence.py. A call from Python took 60-80 ns in a hand-timed loop on
the 2-core VM (context, not a benchmark).
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

from edgert.kernels.jitcache import njit  # cached under the user cache, never beside the installed sources

ORDERING = "acq_rel"


@intrinsic
def _fence(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence(ORDERING)
        return context.get_dummy_value()
    return types.void(), codegen


# Not nogil: releasing the GIL for an 80 ns call only gives it away. In threads mode, with another
# stage running Python, taking it back can wait up to the 5 ms switch interval (3 calls in 200
# beside a busy Python thread did, measured), a few times per frame and stage.
@njit("void()", cache=True)
def fence() -> None:
    """Loads and stores before this call are ordered, for every core, before loads and stores after
    it, except an earlier store against a later load (acq_rel, not seq_cst: a seqlock needs no
    store-load order)."""
    _fence()
