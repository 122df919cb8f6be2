"""The seqlocks' fence: what the compiled function contains, and what it becomes on Arm and x86."""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
import pytest
from llvmlite import ir

from edgert.runtime.fence import ORDERING, _fence, fence


def test_fence_runs_and_is_compiled_to_an_llvm_fence():
    fence()  # the cached function the frame pool and mailboxes call
    probe = numba.njit("void()", cache=False)(lambda: _fence())  # cached code cannot be inspected
    body = probe.inspect_llvm(probe.signatures[0])
    assert f"fence {ORDERING}" in body


def _asm(triple: str) -> str:
    """The same instruction as the intrinsic emits, between two stores, compiled for `triple`."""
    mod = ir.Module(name="seqlock")
    mod.triple = triple
    ptr = ir.IntType(64).as_pointer()
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr]), name="publish")
    b = ir.IRBuilder(fn.append_basic_block())
    b.store(ir.Constant(ir.IntType(64), 1), fn.args[0])  # the data
    b.fence(ORDERING)
    b.store(ir.Constant(ir.IntType(64), 2), fn.args[1])  # the sequence word
    b.ret_void()
    llvm.initialize_all_targets()  # Numba itself initialises only the host's
    llvm.initialize_all_asmprinters()
    try:
        target = llvm.Target.from_triple(triple)
    except RuntimeError as e:
        pytest.skip(f"this llvmlite has no {triple} backend: {e}")
    return target.create_target_machine().emit_assembly(llvm.parse_assembly(str(mod)))


def test_on_aarch64_it_is_a_full_barrier_between_the_stores():
    asm = _asm("aarch64-unknown-linux-gnu")
    lines = [ln.strip() for ln in asm.splitlines()]
    i_dmb = next(i for i, ln in enumerate(lines) if ln.startswith("dmb"))
    assert lines[i_dmb] == "dmb\tish"  # inner shareable: every core of the SoC
    stores = [i for i, ln in enumerate(lines) if ln.startswith("str")]
    assert len(stores) == 2 and stores[0] < i_dmb < stores[1]


def test_on_x86_64_it_costs_no_instruction():
    asm = _asm("x86_64-unknown-linux-gnu")
    assert "MEMBARRIER" in asm  # a compiler-only barrier: x86-64 keeps stores (and loads) in order
    assert "mfence" not in asm and "lock" not in asm


def test_fence_keeps_the_gil():
    """A nogil call gives the GIL away and may wait up to the switch interval (5 ms) to get it back
    from another thread: in threads mode that stalled the pipeline past its deadline."""
    assert not fence.targetoptions.get("nogil", False)
