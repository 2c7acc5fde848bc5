"""The Numba CPU backend: scalar op math compiled into ``@njit`` loops, parallel above a size."""

from __future__ import annotations

import functools
import math

import numpy as np

from fastgd import config
from fastgd.backends import codegen, cpu_target, kernel_cache
from fastgd.backends.compiled import CompiledBackend
from fastgd.backends.numpy_backend import HostArrays
from fastgd.scalar import NAMES, TRANSCENDENTAL, calls


def cpu_math_bindings() -> dict:
    """Vectorizable transcendental functions (``cpu_math``), and ``math``'s sqrt and
    isfinite; ``lanes`` and its reductions keep :mod:`fastgd.scalar`'s plain versions."""
    from fastgd.backends import cpu_math  # imports numba and llvmlite: on first use

    funcs = {n: getattr(cpu_math, n, None) or getattr(math, n, None)
             for n in NAMES if n not in ("F", "W")}
    return {n: f for n, f in funcs.items() if f is not None}


class NumbaBackend(HostArrays, CompiledBackend):
    """``@njit`` loops over NumPy arrays: serial for small arrays, ``prange`` above
    ``config.PARALLEL_THRESHOLD`` elements (see :meth:`loop_for`)."""

    name = "numba"
    #: worst error of the float32 exp and log1p (``cpu_math``) that the ``narrow`` ops
    #: are built from, in ULPs (tanh, 2.46, is an activation of its own)
    float32_math_ulp = 1.3

    def __init__(self, prefetch: bool | None = None):
        """``prefetch``: see :attr:`prefetch` (None: as the CPU or ``FASTGD_PREFETCH`` say)."""
        super().__init__()
        self._math = None
        self._span_loops = {}  # (source, loop) -> the loop that calls serial kernels by address
        self._prefetch = None if prefetch is None else (bool(prefetch), "set by the caller")

    @property
    def prefetch(self) -> bool:
        """Whether parallel maps of transcendental math prefetch arrays from main memory
        (``cpu_target.software_prefetch``): decided once, on first use, and fixed from then
        on, as the kernels compiled and kept by callers (``registry``'s plans, optimizers)
        follow it."""
        if self._prefetch is None:
            self._prefetch = cpu_target.software_prefetch()
        return self._prefetch[0]

    def prefetch_note(self) -> str:
        """``"on (this CPU)"``, ``"off (FASTGD_PREFETCH)"``...: for ``fastgd info`` and the
        benchmark report's machine table."""
        on = self.prefetch
        return f"{'on' if on else 'off'} ({self._prefetch[1]})"

    def status(self) -> str:
        try:
            import numba
        except ImportError:
            return "unavailable: numba is not installed (pip install numba)"
        return f"ok (numba {numba.__version__}, {numba.get_num_threads()} threads)"

    def bindings(self, compute):
        if self._math is None:
            self._math = cpu_math_bindings()
        return {"F": compute.type, "W": np.float64, **self._math}

    def parallel_map(self, fn, writes_own, from_memory=False):
        """Compute-bound math (transcendental functions) runs on chunks, its inputs
        prefetched from main memory where the CPU gains from that (``self.prefetch``); cheap
        math writing arrays of its own from main memory (``from_memory``) streams them out
        (``cpu_memory``); the rest keeps the plain parallel loop. The streamed loop is a
        kernel of its own, compiled only for arrays that run it: a cheap map's plain loop
        compiled in 0.5 s on the Zen 3 VM, one kernel of both loops in 1.8."""
        if calls(fn, TRANSCENDENTAL):
            return "prefetched" if self.prefetch else "chunked"
        return "streamed" if writes_own and from_memory else "parallel"

    def loop_for(self, n, fn=None, nbytes=0):
        """Serial up to ``config.PARALLEL_THRESHOLD`` elements, or for cheap math ``fn`` (no
        transcendental function) up to ``config.CHEAP_PARALLEL_THRESHOLD``; above,
        ``"parallel_from_memory"`` for arrays of ``config.STREAM_BYTES`` or more."""
        if n <= config.PARALLEL_THRESHOLD:
            return "serial"
        if n > config.CHEAP_PARALLEL_THRESHOLD or fn is None or calls(fn, TRANSCENDENTAL):
            return "parallel_from_memory" if nbytes >= config.STREAM_BYTES else "parallel"
        return "serial"

    def compile(self, source, fn, compute, loop, span=None):
        import numba

        cpu_target.check_setting()
        if span is not None:  # a loop that runs the serial kernel ``span`` on pieces
            from fastgd.backends.cpu_span import SpanKernel

            return SpanKernel(self._span_loop(source, loop), span)
        flags = self.fastmath_flags(fn)
        # inlined at the Numba IR level, so the loop around it can vectorize whatever its size
        jit = numba.njit(inline="always", fastmath=set(flags), error_model="numpy", nogil=True)
        scalar_fn = jit(self.specialized(fn, compute, jit))
        math_from = ",".join(f"{k}:{getattr(v, '__module__', '')}"
                             for k, v in sorted(self._math.items()))
        interleave = config.INTERLEAVE if calls(fn, TRANSCENDENTAL) else 1
        key = kernel_cache.kernel_key(
            source, scalar_fn, f"{compute} {math_from} interleave={interleave}", loop, flags)
        kernel = self._build(source, key, {"fn": scalar_fn, "C": compute.type}, loop, flags)
        return cpu_target.interleaved(kernel, interleave)

    @staticmethod
    def fastmath_flags(fn) -> frozenset:
        """LLVM's fast-math flags for op math ``fn``: ``config.FASTMATH``, less ``reassoc``
        for math marked :func:`~fastgd.scalar.grouped`, none for
        :func:`~fastgd.scalar.in_order`."""
        if getattr(fn, "in_order", False):
            return config.FASTMATH_IN_ORDER
        return config.FASTMATH - {"reassoc"} if getattr(fn, "grouped", False) else config.FASTMATH

    def _span_loop(self, source, loop):
        """The parallel loop of ``source`` that calls a serial kernel by address
        (``cpu_span``): compiled once per text, for every op (no math of its own)."""
        kernel = self._span_loops.get((source, loop))
        if kernel is None:
            from fastgd.backends.cpu_span import call_at

            key = kernel_cache.kernel_key(source, call_at, "", loop, ())
            kernel = self._build(source, key, {"call_at": call_at}, loop, flags=())
            self._span_loops[source, loop] = kernel
        return kernel

    @staticmethod
    def _build(source, key, namespace, loop, flags):
        """``source``'s kernel, with ``namespace`` and the memory helpers (``cpu_memory``)
        as globals, cached on disk under ``key`` (``kernel_cache``) where the cache is on."""
        import numba

        from fastgd.backends import cpu_memory

        namespace = {**namespace, **{f: getattr(cpu_memory, f) for f in (
            "prefetch", "line_shift", "stream_out", "fence", "part", "piece", "place", "put",
            "scratch")}}
        path = kernel_cache.source_file(source, key)
        kernel_jit = numba.njit(
            parallel=loop != "serial",
            fastmath=set(flags),
            error_model="numpy",  # x/0 gives inf or NaN, as on the GPU, instead of raising
            nogil=True,
        )
        kernel = kernel_jit(codegen.build(source, {"prange": numba.prange, "np": np,
                                                   **namespace}, path))
        if path is not None:  # cached beside its own source file
            kernel_cache.guard(kernel)
        return kernel

    packs_scalars = True  # the dispatcher checks each argument: one array beats ten floats

    def map_rows_kernel(self, fn, n_in, n_out, n_scalars, compute, loop, aliases=()):
        """The ``map`` kernel of :meth:`map_kernel` over the rows of 2-D arrays of any
        strides (a column slice, a step), called the same way with 2-D arrays
        (``codegen.map_rows_source``): a NumPy view of such rows is of any layout to Numba,
        and a loop over it stayed scalar (relu of x[:, :1024] of 4096x2048 9 ms, 0.6 over
        rows viewed as contiguous)."""
        packed = self.packs_scalars and n_scalars > 0
        aliases = self.alias_key(aliases)
        span = self.map_kernel(fn, n_in, n_out, n_scalars, compute, "serial", aliases)
        return self._kernel(
            ("map_rows", n_in, n_out, n_scalars, packed, aliases),
            lambda lp: codegen.map_rows_source(n_in, n_out, n_scalars, lp, packed, aliases),
            fn, compute, "serial" if loop == "serial" else "parallel", span)

    @staticmethod
    def swap_lines(src, dst):
        """``dst[o, i, l] = src[o, l, i]``: lines of an axis other than the last as rows
        (``cpu_memory.swap_lines``), or rows back into lines."""
        from fastgd.backends.cpu_memory import swap_lines

        swap_lines(src, dst)

    def rows_of_lines(self, a):
        """A new (outer, inner, length) array whose rows are the lines ``a[o, :, i]`` of
        ``a`` (outer, length, inner)."""
        rows = np.empty((a.shape[0], a.shape[2], a.shape[1]), a.dtype)
        self.swap_lines(a, rows)
        return rows

    @staticmethod
    def fits_columns(arrays, fn=None, n_per_line=0) -> bool:
        """Whether :meth:`columns` suits 3-D ``arrays``: C-contiguous, and past
        ``config.PARALLEL_THRESHOLD`` elements either one plane whose lines ``fn`` can
        split (:func:`splits_rows`), ``config.SPLIT_ROWS_MIN`` rows long or more, or blocks
        of ``config.COLUMN_MIN_BYTES`` for every thread twice (a few long lines run in
        parallel as rows: softmax down 2^20 rows of 64 float32 took 241 ms in 4 blocks, 195
        as rows)."""
        a = arrays[0]
        if not all(x.flags.c_contiguous for x in arrays):
            return False
        blocks = a.shape[0] * (a.shape[2] * a.itemsize // config.COLUMN_MIN_BYTES)
        if a.size <= config.PARALLEL_THRESHOLD:
            return blocks >= 1
        if fn is not None and _split(arrays, fn, n_per_line):
            return True
        from numba import get_num_threads

        return blocks >= 2 * get_num_threads()

    def columns(self, fn, arrays, compute, per_line=(), scalars=(), result=None):
        """Run row function ``fn`` on the lines ``a[o, :, j]`` of 3-D C-contiguous
        ``arrays`` (outer, length, inner; lengths may differ) in blocks of columns side by
        side (``backends.columns``), with ``per_line`` vectors of one value per column and
        ``scalars``, computing in ``compute``, the value ``fn`` returns for each line into
        ``result`` (outer·inner values, C order): blocks of about ``config.COLUMN_BLOCK``
        elements and ``config.COLUMN_MIN_BYTES`` wide or more, whole cache lines, at least
        two per thread where the arrays allow; or, where :func:`_split`, in one block, the
        rows of each of its loops shared by the threads."""
        from fastgd.backends.columns import columns

        outer, length, inner = arrays[0].shape
        size = outer * length * inner
        itemsize = arrays[0].itemsize
        width = config.COLUMN_BLOCK // max(length, 1)
        if size > config.PARALLEL_THRESHOLD:  # enough blocks for the threads
            from numba import get_num_threads

            width = min(width, -(-inner * outer // (2 * get_num_threads())))
        line = max(1, 64 // itemsize)
        width = max(width, config.COLUMN_MIN_BYTES // itemsize, 1)  # 0 wrote nothing
        width = min(-(-width // line) * line, inner)
        compute = np.dtype(compute)
        loop = "serial" if size <= config.PARALLEL_THRESHOLD else "parallel"
        n = (len(arrays), len(per_line), len(scalars))
        returns = result is not None
        split = _split(arrays, fn, len(per_line))
        if split:  # one block, each of its loops' rows shared by the threads
            loop, width = "split_rows", inner
        kernel = self._kernel(("columns", *n, returns),
                              lambda lp: codegen.columns_source(*n, lp, returns),
                              columns(fn, n[0], n[1], split), compute, loop)
        res = (result.reshape(outer, inner),) if returns else ()
        kernel(*arrays, *per_line, *(compute.type(s) for s in scalars), *res, width)

    def launch(self, kernel, n, args):
        kernel(*args)

    def for_dtypes(self, kernel, dtypes):
        """A loop calling the serial kernel (``cpu_span.SpanKernel``) bound to the address of
        the serial kernel for these dtypes, found once (about 1 µs a call)."""
        from fastgd.backends.cpu_span import SpanKernel

        return kernel.bound(dtypes) if isinstance(kernel, SpanKernel) else kernel

    def launcher(self, kernel, n):
        return kernel  # a Numba dispatcher is called directly: no wrapper on the hot path


def _split(arrays, fn, n_per_line) -> bool:
    """Whether :meth:`NumbaBackend.columns` runs ``fn`` on 3-D ``arrays`` with its rows
    split (:func:`splits_rows`): one plane, past ``config.PARALLEL_THRESHOLD`` elements and
    ``config.SPLIT_ROWS_MIN`` rows."""
    a = arrays[0]
    return (a.size > config.PARALLEL_THRESHOLD and a.shape[0] == 1
            and a.shape[1] >= config.SPLIT_ROWS_MIN
            and splits_rows(fn, len(arrays), n_per_line))


@functools.cache
def splits_rows(fn, n_arrays, n_per_line) -> bool:
    """Whether row function ``fn`` runs on a plane's columns all at once with the rows of
    each of its loops shared by the threads (``columns(..., split_rows=True)``: no row's
    value depends on the row before, as a running maximum's does). BatchNorm1d's forward
    and backward of 4096x256 float32 took 1.7-1.8 ms in blocks of 64 columns, 1.0 so
    (PyTorch 1.2), of 16384x256 8.0-8.3 ms, 4.0-4.2 (PyTorch 5.1-5.5): a block's loops paid
    for each row's views and checks, 64 columns at a time (2-core SPR VM)."""
    from fastgd.backends.columns import columns

    try:
        columns(fn, n_arrays, n_per_line, True)
    except NotImplementedError:
        return False
    return True
