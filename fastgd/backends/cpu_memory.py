"""Memory-level helpers for the Numba CPU backend's parallel ``map`` over arrays from main
memory (``codegen._chunked`` and ``codegen._streamed``): software prefetch for compute-bound
math, streaming stores for cheap math.

**Prefetch.** A loop of transcendental math keeps few cache misses in flight: its out-of-order
window reaches only a few cache lines ahead. Where the hardware prefetchers do not run ahead of
it, each line waits for main memory: on the 2-core Sapphire Rapids VM, mish-like math ran at
half its in-cache rate from main memory (0.57 against 1.07 Gelem/s), PyTorch's kernels as
well. So for arrays of ``config.STREAM_BYTES`` or more, such a map runs in chunks of
``config.STREAM_CHUNK_BYTES`` (of each array), each first asking for the input lines
``config.PREFETCH_AHEAD_BYTES`` on (``prefetcht0``): 1.01 Gelem/s. Measured there: chunks of
256 floats with 512-1024 ahead were best (as bytes, so float64 chunks of 128: with 256 its
backwards lost 13-15%); longer chunks issue the prefetches in bursts that stall the loop;
prefetching whole blocks before computing them helped from main memory but cost 5-20% from
L3; prefetching the outputs made it slower. Cheap math is fed by the hardware prefetchers and
lost 5-8% to this. On AMD's Zen 3 the hardware prefetchers keep even transcendental math
fed, and these chunks cost 10-45%: there the map runs long chunks without prefetch
(``cpu_target.software_prefetch``).

**Streaming stores.** A plain store to a line that is not in the cache first reads the line
from memory (read for ownership): y = relu(x) moves 12 bytes per float, not 8. A
non-temporal store writes a whole line without reading it. So for arrays of
``config.STREAM_BYTES`` or more, a map of cheap math that writes arrays of its own (not in
place) computes ``config.STORE_CHUNK_BYTES`` at a time into a per-task buffer, which stays
in L1, and :func:`stream_out` copies it out with streaming stores, chunk boundaries on the
output's lines. On the 2-core VM, float32 at 2^24: relu forward 29 -> 42 GB/s, backward
30 -> 36 GB/s; float64 at 2^23, hardswish backward +51%, softmax's backward from y (a
``rows`` kernel, rows of 256) +11-14%. Float32 data computed in float64 (hardswish's
backward and softmax's did then) is bound by that arithmetic and lost 6-14%; no op does now
but elu's backward from y with an alpha that float32 does not hold exactly, which streams
too. Transcendental math gained nothing from it (sigmoid, tanh: within 1%): it is
bound by its arithmetic there, not by the stores. The results leave the caches, so this is
only for arrays that would not stay in them anyway.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
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


@intrinsic
def _stream_line(typingctx, dst, i, src, j):
    """dst[i:i + line] = src[j:j + line], one cache line of the flat arrays, with a
    non-temporal (streaming) store; dst[i] must be line-aligned."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype):
        return None

    def codegen(context, builder, sig, args):
        dty, _, sty, _ = sig.args
        dst_ = context.make_array(dty)(context, builder, args[0])
        src_ = context.make_array(sty)(context, builder, args[2])
        dp = cgutils.get_item_pointer(context, builder, dty, dst_, [args[1]], wraparound=False)
        sp = cgutils.get_item_pointer(context, builder, sty, src_, [args[3]], wraparound=False)
        elem = context.get_data_type(dty.dtype)
        size = context.get_abi_sizeof(elem)
        vec = ir.VectorType(elem, LINE_BYTES // size)
        value = builder.load(builder.bitcast(sp, vec.as_pointer()), align=size)
        store = builder.store(value, builder.bitcast(dp, vec.as_pointer()), align=LINE_BYTES)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(dst, i, src, j), codegen


@intrinsic
def fence(typingctx):
    """Order this thread's streaming stores before what it does next (they are weakly
    ordered): each task of a streamed loop calls it after its last chunk. A sequentially
    consistent fence (``mfence`` on x86) also drains the write-combining buffers that a
    streaming store may still sit in."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _address(typingctx, arr):
    """The address of ``arr``'s first element, as an integer."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))

    return types.int64(arr), codegen


def _uncounted_view(context, builder, sig, args):
    """Codegen of :func:`run` and :func:`part`: ``count`` (the last argument) elements from
    the array's element at the other arguments, as a C-contiguous 1-D view that holds no
    reference (its meminfo is null): the kernel's array argument outlives it. A counted view
    costs an atomic increment and decrement of the array's count, and the threads of a
    parallel loop slice one array a chunk each: relu's streamed loop at 2^24 ran 14 % slower
    so (two threads, Sapphire Rapids VM)."""
    from numba.core.imputils import impl_ret_untracked
    from numba.np.arrayobj import populate_array

    aryty, retty = sig.args[0], sig.return_type
    ary = context.make_array(aryty)(context, builder, args[0])
    index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:-1], sig.args[1:-1])]
    count = context.cast(builder, args[-1], sig.args[-1], types.intp)
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index, wraparound=False)
    itemsize = context.get_constant(types.intp,
                                    context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
    view = context.make_array(retty)(context, builder)
    populate_array(view, data=ptr, shape=[count], strides=[itemsize], itemsize=itemsize,
                   meminfo=cgutils.get_null_value(ary.meminfo.type),
                   parent=cgutils.get_null_value(ary.parent.type))
    return impl_ret_untracked(context, builder, retty, view._getvalue())


def _view_type(arr, ndim, integers):
    """The 1-D C-contiguous view type of ``arr`` (one type with a scratch buffer's, for
    :func:`piece`) where ``arr`` has ``ndim`` dimensions and the rest are integers."""
    if (isinstance(arr, types.Array) and arr.ndim == ndim
            and all(isinstance(t, types.Integer) for t in integers)):
        return types.Array(arr.dtype, 1, "C")
    return None


@intrinsic
def run(typingctx, arr, r, j, count):
    """The ``count`` elements of a 2-D array from ``arr[r, j]`` on, as a C-contiguous 1-D
    view that holds no reference (:func:`_uncounted_view`), where they are contiguous in
    memory (a row of a column slice ``x[:, :k]``, or rows that are each other's neighbours):
    Numba types a view's row as of any layout, and a loop over it stayed scalar (relu's
    NaN-aware selects became branches: 15x slower)."""
    retty = _view_type(arr, 2, (r, j, count))
    return None if retty is None else (retty(arr, r, j, count), _uncounted_view)


@intrinsic
def part(typingctx, arr, lo, count):
    """``arr[lo:lo + count]`` of a 1-D C-contiguous array, as a view that holds no reference
    (:func:`_uncounted_view`): the pieces a parallel loop hands its serial kernel."""
    retty = _view_type(arr, 1, (lo, count)) if getattr(arr, "layout", "") == "C" else None
    return None if retty is None else (retty(arr, lo, count), _uncounted_view)


@njit(inline="always")
def _contiguous(a, rows):
    """Whether ``rows`` whole rows of ``a`` (or one row's part, ``rows == 1``) lie
    contiguously in memory."""
    return a.strides[1] == a.itemsize and (rows == 1 or a.strides[0] == a.shape[1] * a.itemsize)


@njit(inline="always")
def _view(a, r0, r1, lo, hi):
    """``a[r0:r1, lo:hi]`` as a C-contiguous 1-D view, where :func:`_contiguous` says so."""
    return run(a, r0, lo, (r1 - r0 - 1) * a.shape[1] + hi - lo)


@njit(inline="always")
def piece(a, r0, r1, lo, hi, buf):
    """``a[r0:r1, lo:hi]`` of a 2-D array (one row's part, or whole rows) as a C-contiguous
    1-D array: a view (:func:`run`) where those elements are contiguous, else copied into
    ``buf`` (a step ``x[:, ::2]``, rows of a narrow slice ``x[:, :4]``)."""
    if _contiguous(a, r1 - r0):
        return _view(a, r0, r1, lo, hi)
    b = buf[:(r1 - r0) * (hi - lo)]
    k = 0
    for r in range(r0, r1):
        for j in range(lo, hi):
            b[k] = a[r, j]
            k += 1
    return b


@njit(inline="always")
def place(a, r0, r1, lo, hi, buf):
    """Where ``a[r0:r1, lo:hi]`` is computed: a view of it where it is contiguous, else
    ``buf``, which :func:`put` then copies into it."""
    if _contiguous(a, r1 - r0):
        return _view(a, r0, r1, lo, hi)
    return buf[:(r1 - r0) * (hi - lo)]


@njit(inline="always")
def put(a, r0, r1, lo, hi, buf):
    """``a[r0:r1, lo:hi] = buf`` (row by row) where :func:`place` gave ``buf``."""
    if not _contiguous(a, r1 - r0):
        k = 0
        for r in range(r0, r1):
            for j in range(lo, hi):
                a[r, j] = buf[k]
                k += 1


@njit(inline="always")
def scratch(a, size):
    """The buffer :func:`piece` and :func:`place` use for ``a``: none where its rows are
    contiguous and each other's neighbours."""
    return np.empty(0 if _contiguous(a, 2) else size, a.dtype)


@njit
def line_shift(a):
    """Elements of the flat array ``a`` before its first cache-line boundary: chunks that
    start there start on lines (0 where ``a`` is not aligned to its items)."""
    per = LINE_BYTES // a.itemsize
    addr = _address(a)
    if addr % a.itemsize:
        return 0
    return (-(addr // a.itemsize)) % per


@njit
def stream_out(buf, out, lo, hi):
    """``out[lo:hi] = buf[:hi - lo]`` for flat arrays: the lines of ``out`` wholly inside with
    streaming stores, the partial lines at either end with plain ones."""
    per = LINE_BYTES // out.itemsize
    start = _address(out) + lo * out.itemsize
    if start % out.itemsize:
        head = hi - lo  # not aligned to its items: no line is whole, all plain stores
    else:
        head = min(hi - lo, (-start) % LINE_BYTES // out.itemsize)
    for i in range(lo, lo + head):
        out[i] = buf[i - lo]
    i = lo + head
    while i + per <= hi:
        _stream_line(out, i, buf, i - lo)
        i += per
    for j in range(i, hi):
        out[j] = buf[j - lo]


#: Side of the tiles :func:`swap_lines` copies: 32 float32 lines of 32 elements read and
#: write whole cache lines (a line-by-line copy of a power-of-two width thrashes one cache
#: set).
SWAP_TILE = 32


@njit(parallel=True, nogil=True, cache=False)
def swap_lines(src, dst):
    """``dst[o, i, l] = src[o, l, i]`` for ``src`` (outer, length, inner) and ``dst``
    (outer, inner, length), tile by tile, the tiles spread over the threads: how the rows
    kernels reach lines ``a[o, :, i]`` (an op along an axis other than the last) at the speed
    of rows (a kernel walking each line at a stride of ``inner`` elements took a cache line
    per element and did not vectorize: softmax along axis 0 ran 5-20x slower than along -1)."""
    outer, length, inner = src.shape
    tl = (length + SWAP_TILE - 1) // SWAP_TILE
    ti = (inner + SWAP_TILE - 1) // SWAP_TILE
    for t in prange(outer * tl * ti):
        o = t // (tl * ti)
        l0 = (t // ti) % tl * SWAP_TILE
        i0 = t % ti * SWAP_TILE
        for i in range(i0, min(i0 + SWAP_TILE, inner)):
            for l in range(l0, min(l0 + SWAP_TILE, length)):
                dst[o, i, l] = src[o, l, i]
