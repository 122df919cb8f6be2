"""One SIMD building block Numba cannot get from LLVM's auto-vectoriser: a constant-stride pixel pick.

The BGR kernel's hot case, 1920 -> 640 bilinear, takes 1 source pixel in 3 (x weights exactly
1 and 0: kernels/resample.trim_taps), so each output channel reads bytes 9 apart. Written as a
Numba loop, LLVM gathers those bytes one `vpinsrb` at a time (no interleave group forms through
Numba's array indexing), and the separable alternative (a full-width vertical sweep, then a
scalar pick from the float row) spends 3x the arithmetic on columns nobody reads. This
intrinsic emits the LLVM IR directly for a block of `LANES` output pixels:

    load the block's bytes of both source rows as one <N x i8> vector each (unaligned),
    shufflevector with a constant mask (channel c of pixel k is byte 3*step*k + c),
    uitofp to <LANES x float>, a_c = w0 * row0 + w1 * row1,
    colour: ((m0 a0 + m1 a1) + m2 a2) + offset (or, for a 0/1 permutation matrix with offset 0,
    a_perm[c] itself, which that sum equals exactly for a >= 0), saturate to [0, 255] with
    Numba's own max/min selects, * post_scale + post_bias (kernels/store.colour_span),
    store each channel's <LANES x float> into its planar row (the output plane, or scratch).

No fast-math flags, so no FMA contraction: the very float32 operations, in the very order, of
the scalar path; tests/test_kernels.py asserts bit equality with it. The shuffle is portable
IR: x86 with AVX-512 VBMI lowers it to `vpermb`/`vpermt2b`, AVX2 to `vpshufb` sequences,
AArch64 to `tbl`; only the speed differs. The caller guarantees, per call: the source rows are
packed bytes (inner stride 1; `Preprocessor` checks the frame's strides) and hold
`block_bytes(step)` bytes from `off` on (a block reads up to 3 * (step - 1) bytes past its last
pixel, so the last block of a row may go through the scalar tail instead), and the planar rows
hold ox + LANES floats.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 16  # output pixels per block: one zmm of float32 (measured: 8 and 32 were slower on Zen 5)
STEPS = (1, 3)  # pixel steps with a compiled block: a width-preserving crop, and the 3:1 pick


def block_bytes(step: int) -> int:
    """Bytes one block of LANES pixels at this pixel step reads from each source row."""
    return 3 * step * LANES


def _make(step: int, perm: tuple[int, int, int] | None = None):  # -> a Numba intrinsic
    n = LANES
    nb = block_bytes(step)
    i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
    vbytes, vf, vmask = ir.VectorType(i8, nb), ir.VectorType(f32, n), ir.VectorType(i32, n)

    @intrinsic
    def pick(typingctx, s0, s1, off, w0, w1, coef, p0, p1, p2, ox):  # pragma: no cover - compile-time
        """p_c[ox + k] = colour_c(w0 * s0[off + 3*step*k + (0, 1, 2)] + w1 * s1[...]), k < LANES."""
        sig = types.void(s0, s1, off, w0, w1, coef, p0, p1, p2, ox)

        def codegen(context, builder, signature, args):
            a0, a1, off_v, w0_v, w1_v, coef_v, o0, o1, o2, ox_v = args
            tys = signature.args

            def data(aty, val):
                return context.make_array(aty)(context, builder, val).data

            def load_row(aty, val):
                ptr = builder.bitcast(builder.gep(data(aty, val), [off_v]), vbytes.as_pointer())
                return builder.load(ptr, align=1, typ=vbytes)

            def splat(x):
                v = builder.insert_element(ir.Constant(vf, ir.Undefined), x, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, ir.Constant(vf, ir.Undefined), ir.Constant(vmask, [0] * n))

            r0, r1 = load_row(tys[0], a0), load_row(tys[1], a1)
            wv0, wv1 = splat(w0_v), splat(w1_v)
            undef = ir.Constant(vbytes, ir.Undefined)
            a = []  # the vertical sum of each source channel
            for c in range(3):
                mask = ir.Constant(vmask, [c + 3 * step * k for k in range(n)])
                b0 = builder.uitofp(builder.shuffle_vector(r0, undef, mask), vf)
                b1 = builder.uitofp(builder.shuffle_vector(r1, undef, mask), vf)
                a.append(builder.fadd(builder.fmul(wv0, b0), builder.fmul(wv1, b1)))
            cptr = data(tys[5], coef_v)  # float32 [3, 6], C order: m0 m1 m2 offset post_scale post_bias

            def cf(c, j):
                return splat(builder.load(builder.gep(cptr, [ir.Constant(i32, 6 * c + j)]), typ=f32))

            lo, hi = ir.Constant(vf, [0.0] * n), ir.Constant(vf, [255.0] * n)
            for c, (aty, o) in enumerate(zip(tys[6:9], (o0, o1, o2))):
                # ((m0 a0 + m1 a1) + m2 a2) + offset, then Numba's max(t, lo) and min(t, hi)
                # (select(lo > t, lo, t), select(hi < t, hi, t)), then * post_scale + post_bias
                if perm is None:
                    t = builder.fadd(builder.fmul(cf(c, 0), a[0]), builder.fmul(cf(c, 1), a[1]))
                    t = builder.fadd(builder.fadd(t, builder.fmul(cf(c, 2), a[2])), cf(c, 3))
                else:  # a 0/1 permutation matrix, offset 0: the sum is a[perm[c]] exactly (a >= 0)
                    t = a[perm[c]]
                t = builder.select(builder.fcmp_ordered(">", lo, t), lo, t)
                t = builder.select(builder.fcmp_ordered("<", hi, t), hi, t)
                v = builder.fadd(builder.fmul(t, cf(c, 4)), cf(c, 5))
                builder.store(v, builder.bitcast(builder.gep(data(aty, o), [ox_v]), vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return pick


pick_step1 = _make(1)
pick_step3 = _make(3)
pick_step3_same = _make(3, (0, 1, 2))  # colour = the source order (rgb -> rgb, bgr -> bgr)
pick_step3_swap = _make(3, (2, 1, 0))  # colour = the source order reversed (bgr -> rgb, rgb -> bgr)


def permutation(coef) -> int:  # coef: float32 [3, 6] (kernels.preprocess.color_coefficients)
    """1 when the colour matrix is the identity, 2 when it reverses the channels (both with
    offset 0), else 0: which pick_step3 variant serves the spec."""
    m, d = coef[:, :3], coef[:, 3]
    if (d != 0).any():
        return 0
    if (m == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]).all():
        return 1
    if (m == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]).all():
        return 2
    return 0


@intrinsic
def unit_row(typingctx, arr, i):  # pragma: no cover - compile-time
    """Row i of a 2-D uint8 array whose inner stride is 1 (Preprocessor checks the frame's
    strides), typed as a C-contiguous 1-D view of the same bytes. The kernels take frames as
    'A' (any-layout) arrays so that row-padded slot views need no copy; indexing a row of one
    then multiplies by a run-time stride, and LLVM vectorises no constant-stride loop over it
    (the NV12 gathers of kernels/yuvkernel._gather3: 0.094 ms for 768 rows against 0.018 on a
    C row)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.dtype == types.uint8):
        return None
    retty = types.Array(types.uint8, 1, "C", readonly=not arr.mutable)
    sig = retty(arr, types.intp)

    def codegen(context, builder, signature, args):
        from numba.core import cgutils
        from numba.core.imputils import impl_ret_borrowed
        from numba.np.arrayobj import populate_array

        ary = context.make_array(signature.args[0])(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, ary.shape)
        strides = cgutils.unpack_tuple(builder, ary.strides)
        out = context.make_array(retty)(context, builder)
        populate_array(out, data=builder.gep(ary.data, [builder.mul(args[1], strides[0])]), shape=[shape[1]],
                       strides=[context.get_constant(types.intp, 1)], itemsize=ary.itemsize, meminfo=ary.meminfo,
                       parent=ary.parent)
        return impl_ret_borrowed(context, builder, retty, out._getvalue())  # a new reference to the frame

    return sig, codegen
