"""One thread block per row: how the CUDA backend runs row functions that loop with ``lanes``.

A row function run by one thread per row (``codegen``'s plain ``rows`` loop) reads its row
element by element, so a warp's 32 loads go to 32 different rows: uncoalesced, 32 memory
transactions each, for softmax, log_softmax, the losses and PReLU along the last axis. A
row function that loops over its row with ``lanes(n)`` and combines its partial results with
``lanes_sum``/``lanes_max`` (:mod:`fastgd.scalar`) can instead run on a whole block of
``config.ROW_THREADS`` threads: thread t takes elements t, t + T, t + 2T..., so a warp reads
consecutive elements, and the partial results meet in shared memory (a tree of
``syncthreads``: the simulator has no warp shuffles, so the GPU runs what the simulator tests).

The partials are combined in float64 and returned in their own type: exact for a max, and a
float32 sum of T partials no less accurate than the CPU's sequential one. Every thread of the
block gets the result, and every thread calls each ``lanes_*`` of a row (they hold a barrier):
the row loop is the same for the whole block.
"""

from __future__ import annotations

import functools

from numba import cuda


def lanes(n):
    """The indices of a row of ``n`` elements this thread handles."""
    return range(cuda.threadIdx.x, n, cuda.blockDim.x)


def _reducer(combine, float64):
    """The block-wide combination (``combine``: add or fmax) of one ``float64`` per thread,
    in the kernel's dynamic shared memory (:data:`SHARED_BYTES` per thread; one buffer for
    every reduction: a static one per call site was defined once per device function that
    inlines it, and NVVM refused the duplicates). The block's thread count is a power of
    two."""

    def reduce(v):
        buf = cuda.shared.array(0, float64)
        t = cuda.threadIdx.x
        buf[t] = v
        cuda.syncthreads()
        step = cuda.blockDim.x // 2
        while step > 0:
            if t < step:
                buf[t] = combine(buf[t], buf[t + step])
            cuda.syncthreads()
            step //= 2
        r = buf[0]
        cuda.syncthreads()  # every thread has read buf[0] before the next reduction writes
        return r

    return reduce


#: Dynamic shared memory a block-per-row kernel needs per thread of its block.
SHARED_BYTES = 8


def _add(a, b):
    return a + b


@functools.cache
def functions(simulator: bool, fmax) -> dict:
    """``lanes``, ``lanes_sum`` and ``lanes_max`` as op math calls them (``fmax``: the
    backend's, NaN ignored as in ``row_max``). One table of reductions for the simulator and
    the GPU, so what the simulator's tests check is what a GPU runs."""
    reductions = {"lanes_sum": _add, "lanes_max": fmax}
    device = cuda.jit(device=True)  # in the simulator: swaps in each block's cuda module
    if simulator:
        import numpy as np

        def typed(reduce):
            def call(v):
                return type(v)(reduce(v))
            return call

        return {"lanes": device(lanes), **{
            name: typed(device(_reducer(combine, np.dtype(np.float64))))
            for name, combine in reductions.items()}}

    from numba import types
    from numba.cuda.extending import overload

    out = {"lanes": device(lanes)}
    for name, combine in reductions.items():
        combine = device(_add) if combine is _add else combine  # fmax is a device function
        out[name] = _typed_overload(name, device(_reducer(combine, types.float64)), overload)
    return out


def _typed_overload(name, reduce, overload):
    """A stub that calls ``reduce`` and casts its float64 back to the argument's type."""

    def stub(v):
        return None  # device code only

    def typer(v):
        def impl(v):
            return v_type(reduce(v))

        v_type = v
        return impl

    stub.__name__ = stub.__qualname__ = name
    overload(stub, inline="always")(typer)
    return stub
