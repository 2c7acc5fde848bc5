"""Software prefetch for the Numba CPU backend's chunked parallel ``map`` (compute-bound math).

A loop of transcendental math keeps few cache misses in flight: its out-of-order window
reaches only a few cache lines ahead. Where the hardware prefetchers do not run ahead of it,
each line waits for main memory: on the 2-core Sapphire Rapids VM, mish-like math ran at half
its in-cache rate from main memory (0.57 against 1.07 Gelem/s), PyTorch's kernels as well.
So for arrays of ``config.STREAM_BYTES`` or more, such a map (``codegen._chunked``) runs in
chunks of ``config.STREAM_CHUNK_BYTES`` (of each array), each first asking for the input
lines ``config.PREFETCH_AHEAD_BYTES`` on (``prefetcht0``): 1.01 Gelem/s. Measured there:
chunks of 256 floats with 512-1024 ahead were best (as bytes, so float64 chunks of 128: with
256 its backwards lost 13-15%); longer chunks issue the prefetches in bursts
that stall the loop; prefetching whole blocks before computing them helped from main memory
but cost 5-20% from L3; prefetching the outputs made it slower. Cheap math (rectifiers,
optimizer updates) is fed by the hardware prefetchers and lost 5-8% to this, so it keeps
the plain parallel loop.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LINE_BYTES = 64


@intrinsic
def _prefetch_line(typingctx, arr, i):
    """``llvm.prefetch`` of ``arr[i]``'s cache line for reading, into every cache level."""
    if not (isinstance(arr, types.Array) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                       wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        read, keep_in_l1, data = (ir.Constant(i32, v) for v in (0, 3, 1))
        builder.call(fn, [builder.bitcast(ptr, i8p), read, keep_in_l1, data])
        return context.get_dummy_value()

    return types.none(arr, i), codegen


@njit
def prefetch(a, lo, hi):
    """Prefetch the cache lines of the flat array ``a[lo:hi]`` (clipped to ``a``)."""
    for j in range(lo, min(hi, a.size), LINE_BYTES // a.itemsize):
        _prefetch_line(a, j)
