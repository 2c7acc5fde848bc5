"""What the Numba CPU and CUDA backends share: specializing op math and caching kernels."""

from __future__ import annotations

import numpy as np

from fastgd import config
from fastgd.backends import codegen
from fastgd.scalar import specialize


class CompiledBackend:
    """A backend that compiles an op's scalar function into a loop (see ``codegen``).

    Subclasses provide ``bindings`` (what op math's names mean there), ``loop_for`` (the
    loop for a size), ``compile``, ``launch`` and the array helpers. The Numba CPU backend
    adds ``columns``/``fits_columns``, ``swap_lines``, ``rows_of_lines`` and
    ``map_rows_kernel``, for lines along other axes and strided views; callers ask for
    them with ``hasattr``.
    """

    name = "compiled"

    def __init__(self):
        self._kernels = {}

    # -- subclass interface -----------------------------------------------------------------
    def bindings(self, compute: np.dtype) -> dict:
        raise NotImplementedError

    def loop_for(self, n: int, fn=None, nbytes: int = 0) -> str:
        """The loop for ``n`` elements of op math ``fn`` (None: math not known); ``nbytes``:
        the first array's size in bytes, where the caller may run a loop made for arrays
        from main memory (``"parallel_from_memory"``: :meth:`parallel_map`) on it."""
        raise NotImplementedError

    def compile(self, source: str, fn, compute: np.dtype, loop: str, span=None):
        """The kernel built from ``source``; ``span``: the serial kernel a parallel ``map``
        runs on chunks (``codegen.map_source``), which the kernel is then bound to."""
        raise NotImplementedError

    def launch(self, kernel, n: int, args: tuple):
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    @staticmethod
    def kernel_key(shape_key, fn, compute: np.dtype, loop):
        """The key of :meth:`_kernel`'s cache: the fast-math flags and the interleave with
        the rest, so that a change of them at run time compiles anew, as a new process
        would."""
        return (shape_key, fn, compute, loop, config.FASTMATH, config.FASTMATH_IN_ORDER,
                config.INTERLEAVE)

    def _kernel(self, shape_key, source_fn, fn, compute: np.dtype, loop, span=None):
        """The kernel for this shape, op math, compute dtype and loop, compiled once."""
        key = self.kernel_key(shape_key, fn, compute, loop)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = self.compile(source_fn(loop), fn, compute, loop, span)
            self._kernels[key] = kernel
        return kernel

    def map(self, fn, ins, outs, scalars=(), compute=None):
        """Run ``fn`` elementwise over flat, contiguous arrays of one dtype (in place allowed)."""
        compute = ins[0].dtype if compute is None else np.dtype(compute)
        n = ins[0].size
        if n == 0:
            return
        # an output that is one of the inputs is written back into it (codegen.map_source)
        aliases = tuple(next((k for k, a in enumerate(ins) if a is o), None) for o in outs)
        own = [o for o, a in zip(outs, aliases) if a is None]
        kernel = self.map_kernel(fn, len(ins), len(outs), len(scalars), compute,
                                 self.loop_for(n, fn, ins[0].nbytes), aliases)
        self.launch(kernel, n, (*ins, *own, *self.typed_scalars(scalars, compute)))

    #: Whether ``map`` kernels take their scalars packed in one array.
    packs_scalars = False

    def map_kernel(self, fn, n_in, n_out, n_scalars, compute: np.dtype, loop, aliases=()):
        """The compiled ``map`` kernel, called as ``launch(kernel, n, (*ins, *outs,
        *typed_scalars(scalars, compute)))``, the outputs that ``aliases`` writes into inputs
        left out (see ``codegen.map_source``). Hot paths that run the same kernel again and
        again (an optimizer's ``step``, an activation call) look it up once and keep it."""
        packed = self.packs_scalars and n_scalars > 0
        aliases = self.alias_key(aliases)
        span = None
        if loop in ("parallel", "parallel_from_memory"):
            loop = self.parallel_map(fn, writes_own=n_out > sum(a is not None for a in aliases),
                                     from_memory=loop == "parallel_from_memory")
        if loop in codegen.SPAN_LOOPS:
            span = self.map_kernel(fn, n_in, n_out, n_scalars, compute, "serial", aliases)
        return self._kernel(
            ("map", n_in, n_out, n_scalars, packed, aliases),
            lambda lp: codegen.map_source(n_in, n_out, n_scalars, lp, packed, aliases),
            fn,
            compute,
            loop,
            span,
        )

    @staticmethod
    def alias_key(aliases) -> tuple:
        """``aliases`` (see :meth:`map_kernel`) without trailing Nones: one key per kernel,
        (0, None) is (0,)."""
        aliases = tuple(aliases)
        while aliases and aliases[-1] is None:
            aliases = aliases[:-1]
        return aliases

    def parallel_map(self, fn, writes_own: bool, from_memory: bool = False) -> str:
        """The loop of a parallel ``map`` of ``fn`` (``codegen.map_source``): ``"parallel"``,
        or ``"chunked"``/``"prefetched"``/``"streamed"``, which run the serial kernel on
        chunks of the arrays.
        ``writes_own``: it writes an array of its own (not only into its inputs);
        ``from_memory``: its arrays come from main memory (``loop_for``'s
        ``"parallel_from_memory"``)."""
        return "parallel"

    def map_launcher(self, fn, n_in, n_out, n_scalars, compute, n, aliases=()):
        """The compiled ``map`` kernel for ``n`` elements, as ``launch(*arrays, *scalars)``,
        the scalars as :meth:`typed_scalars` gives them. It never streams out an output of
        its own (``loop_for`` is not given the bytes): its caller, an optimizer's step,
        writes in place."""
        compute = np.dtype(compute)
        kernel = self.map_kernel(fn, n_in, n_out, n_scalars, compute, self.loop_for(n, fn),
                                 aliases)
        return self.launcher(kernel, n)

    def typed_scalars(self, scalars: tuple, compute) -> tuple:
        """Python floats as a ``map`` kernel takes them: of the ``compute`` type (a Python
        float is float64), packed into one array where the backend packs them."""
        if not scalars:
            return ()
        values = np.array(scalars, compute)
        return (values,) if self.packs_scalars else tuple(values)

    def for_dtypes(self, kernel, dtypes: tuple):
        """``kernel`` for array arguments of ``dtypes`` only, for a caller that keeps one
        kernel per dtype (an activation's plan): here the kernel itself."""
        return kernel

    def launcher(self, kernel, n):
        """``kernel`` bound to its launch shape for ``n`` elements."""
        return lambda *args: self.launch(kernel, n, args)

    def grid(self, fn, ins, vecs=(), outs=(), scalars=(), index=False, compute=None):
        """Run grid function ``fn`` over 2-D arrays ``ins``/``outs`` of one shape, with
        per-column vectors ``vecs``, computing in ``compute`` (default: the arrays' dtype).
        Float scalars are cast to the compute dtype; integer scalars (NumPy integers) keep
        their type."""
        compute = np.dtype(ins[0].dtype if compute is None else compute)
        rows, cols = ins[0].shape
        n = rows * cols
        if n == 0:
            return
        typed = tuple(s if isinstance(s, np.integer) else compute.type(s) for s in scalars)
        loop = self.loop_for(n, fn)  # cheap math serial further, as a map's
        key = ("grid", len(ins), len(vecs), len(outs), len(typed), index)
        kernel = self._kernel(
            key,
            lambda lp: codegen.grid_source(len(ins), len(vecs), len(outs), len(typed), lp,
                                           index),
            fn,
            compute,
            loop,
        )
        self.launch(kernel, n, (*ins, *vecs, *outs, *typed))

    def run_columns(self, fn, arrays, *, writes, per_column=(), scalars=(), result=None,
                    compute=None):
        """Run line function ``fn`` on each column of 2-D ``arrays`` (seen as ``(1, N, C)``;
        arrays of another length, e.g. ``(k, C)`` outputs, give lines of that length),
        computing in ``compute`` (default: the arrays' dtype), its value per column into
        ``result`` when given. ``writes`` (required: one left out would be lost on the
        CPU's swapped path only): the indices of the arrays ``fn`` writes, each whole before
        reading it. On the CPU the columns run side by side (``columns``: BatchNorm1d's
        forward and backward of 4096x256 2.9 -> 1.7-1.9 ms in blocks, 1.0 all at once with
        each loop's rows split among the threads, torch 1.2-1.3), or where neither suits,
        past ``config.PARALLEL_THRESHOLD`` elements, as contiguous rows: the other arrays
        swapped in (``swap_lines``), the written ones swapped back (a walk down each column
        took a cache line per element). Elsewhere, one line each."""
        compute = arrays[0].dtype if compute is None else compute
        lines = [a.reshape((1,) + tuple(a.shape)) for a in arrays]
        if (hasattr(self, "columns") and self.fits_columns(lines, fn, len(per_column))
                and all(p.size == arrays[0].shape[1] for p in per_column)):
            self.columns(fn, lines, compute, per_column, scalars, result)  # side by side
            return
        if not (hasattr(self, "swap_lines") and arrays[0].size > config.PARALLEL_THRESHOLD):
            self.rows(fn, lines, per_row=per_column, scalars=scalars, result=result,
                      compute=compute)
            return
        rows = [self.empty((1, a.shape[2], a.shape[1]), a.dtype) if k in writes
                else self.rows_of_lines(a) for k, a in enumerate(lines)]
        self.rows(fn, [r[0] for r in rows], per_row=per_column, scalars=scalars,
                  result=result, compute=compute)
        for k in writes:
            self.swap_lines(rows[k], lines[k])

    def rows(self, fn, arrays, per_row=(), scalars=(), result=None, compute=None):
        """Run row function ``fn`` on each row of 2-D ``arrays`` (or each line ``a[o, :, i]``
        of 3-D ones); store its return value in ``result`` when given."""
        compute = np.dtype(compute or arrays[0].dtype)
        if arrays[0].size == 0 and result is None:
            return
        strided = len(arrays[0].shape) == 3
        kernel = self.rows_kernel(fn, len(arrays), len(per_row), len(scalars),
                                  result is not None, strided, compute,
                                  self.rows_loop(fn, arrays[0], strided))
        typed = tuple(compute.type(s) for s in scalars)
        extra = () if result is None else (result,)
        self.launch(kernel, self.n_rows(arrays[0]), (*arrays, *per_row, *typed, *extra))

    def rows_loop(self, fn, a, strided: bool) -> str:
        """The loop of a ``rows`` kernel of ``fn`` over ``a`` (2-D rows or, ``strided``, 3-D
        lines ``a[o, :, i]``): the ``map`` loop for its size here."""
        return self.loop_for(a.size, nbytes=a.nbytes)

    def rows_kernel(self, fn, n_arrays, n_per_row, n_scalars, returns, strided,
                    compute: np.dtype, loop, writes_last=False):
        """The compiled ``rows`` kernel, called as ``launch(kernel, n_rows(arrays[0]),
        (*arrays, *per_row, *scalars, *result))``; hot paths look it up once and keep it.
        ``writes_last``: ``fn`` only writes its last array (an output it does not read), which
        the backend may then stream out as a ``map`` of the same math would be, where
        ``loop`` is ``"parallel_from_memory"`` (``rows_loop``)."""
        if loop == "parallel_from_memory":
            streams = (writes_last and not strided and not returns
                       and self.parallel_map(fn, writes_own=True, from_memory=True) == "streamed")
            loop = "streamed" if streams else "parallel"
        return self._kernel(
            ("rows", n_arrays, n_per_row, n_scalars, returns, strided),
            lambda lp: codegen.rows_source(n_arrays, n_per_row, n_scalars, returns, lp, strided),
            fn,
            compute,
            loop,
        )

    @staticmethod
    def n_rows(a) -> int:
        """Rows of a 2-D array, lines ``a[o, :, i]`` of a 3-D one."""
        return a.shape[0] * (a.shape[2] if len(a.shape) == 3 else 1)

    def specialized(self, fn, compute: np.dtype, jit):
        """``fn`` with the scalar names bound for ``compute``, its helpers compiled by ``jit``."""
        return specialize(fn, self.bindings(compute), jit)
