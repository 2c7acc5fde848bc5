"""How ``fastgd.nn`` runs its math: activation binding and column sums. Elementwise math
with per-column vectors runs on the backends' grid loop (``CompiledBackend.grid``), line
functions down the columns on ``CompiledBackend.run_columns``."""

from __future__ import annotations

import numpy as np

from fastgd import config
from fastgd.activation import activations
from fastgd.nn import formulas as fm
from fastgd.scalar import TRANSCENDENTAL, calls, scalar, with_globals


def clone(fn, **globals_):
    """A copy of scalar function ``fn`` with some globals replaced, marked as a scalar
    helper (so :func:`fastgd.scalar.specialize` follows calls to it)."""
    return scalar(with_globals(fn, {**fn.__globals__, **globals_}))


class Act:
    """One activation as the fused kernels use it: name, parameter values, scalar
    forward/backward with the uniform signature ``(z, p0, p1)`` / ``(dy, z, p0, p1)``
    (``f``, ``b``), and the NumPy reference the ``numpy`` backend runs."""

    def __init__(self, name, variant, values, scalar_fns, references):
        self.name, self.variant, self.values = name, variant, dict(values)
        self.key = (name, variant)
        self.params = tuple(float(v) for k, v in values.items() if k != "approximate")
        self.scalars = (self.params + (0.0, 0.0))[:2]
        self.f, self.b = scalar_fns
        self._ref = references

    def reference(self, z):
        return z if self._ref[0] is None else self._ref[0](z, *self.params)

    def reference_backward(self, dy, z):
        return dy if self._ref[1] is None else self._ref[1](dy, z, *self.params)

    def __repr__(self):
        return f"Act({self.name!r}, {self.values})"

    def __reduce__(self):
        """Copied and pickled by name and values: the same scalar functions come back (the
        kernels are cached by them)."""
        return _activation_of, (self.name, self.values)


#: Activations a layer can fuse (elementwise ones; prelu/softmax are not layer activations).
ACTIVATION_NAMES = ("identity",) + tuple(
    n for n, a in activations.items() if a.kind == "elementwise" and n != "prelu"
)
_SCALAR_FNS: dict = {}


def _scalar_fns(key, op, n_params):
    """The wrapped scalar forward/backward of ``op``, made once per activation (the
    backend caches kernels by function, so the same activation must give the same one)."""
    if key not in _SCALAR_FNS:
        wf = (fm.wrap0_f, fm.wrap1_f, fm.wrap2_f)[n_params]
        wb = (fm.wrap0_b, fm.wrap1_b, fm.wrap2_b)[n_params]
        _SCALAR_FNS[key] = (clone(wf, ACT=clone(op.scalar_forward)),
                            clone(wb, ACT=clone(op.scalar_backward)))
    return _SCALAR_FNS[key]


def get_activation(name, **params) -> Act:
    """The :class:`Act` called ``name`` with ``params``; ``ValueError`` if unknown."""
    if isinstance(name, Act):
        return name
    if not isinstance(name, str) or name not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {name!r}; choose one of {list(ACTIVATION_NAMES)}")
    if name == "identity":
        if params:
            raise ValueError(f"identity has no parameters, got {sorted(params)}")
        return Act("identity", None, {}, (fm.act_f, fm.act_b), (None, None))
    act = activations[name]
    values = act.bind((), params)
    variant = values.get("approximate")
    op = act.forms[variant] if variant is not None else act
    n_params = sum(1 for k in values if k != "approximate")
    fns = _scalar_fns((name, variant), op, n_params)
    return Act(name, variant, values, fns, (op.reference_forward, op.reference_backward))


def _activation_of(name, values) -> Act:
    return get_activation(name, **values)


_BOUND: dict = {}


def bind(template, act: Act):
    """``template`` with ``act_f``/``act_b`` bound to ``act``, and ``ACT_B_APART`` to whether
    act_b has transcendental math (memoized: one function per template and activation, so
    the backend's kernel cache hits)."""
    key = (template, act.key)
    fn = _BOUND.get(key)
    if fn is None:
        fn = _BOUND[key] = clone(template, act_f=act.f, act_b=act.b,
                                 ACT_B_APART=calls(act.b, TRANSCENDENTAL))
    return fn


# -- columns ------------------------------------------------------------------------------


def column_sums(be, a, out):
    """``out[j] = Σ_r a[r, j]`` for a 2-D ``a``, summed in float64: on CUDA one thread per
    column (neighbouring threads read neighbouring columns), on the CPU in row order
    (contiguous, vectorized), one float64 partial row per thread, as a column walk strides
    through memory."""
    if be.name == "cuda":
        be.run_columns(fm.row_sum, [a], result=out, writes=(), compute=np.float64)
        return
    kernel = _cpu_column_sums(a.size > config.COLUMN_SUMS_PARALLEL_THRESHOLD)
    kernel(a, out)


_COLUMN_SUMS: dict = {}


def _cpu_column_sums(parallel: bool):
    """The Numba column-sum kernel (parallel: one chunk of rows per thread)."""
    if parallel not in _COLUMN_SUMS:
        import numba

        @numba.njit(parallel=parallel, nogil=True)
        def kernel(a, out):
            rows, cols = a.shape
            chunks = max(1, min(numba.get_num_threads(), rows)) if parallel else 1
            partial = np.zeros((chunks, cols), np.float64)
            for c in numba.prange(chunks):
                for r in range(c * rows // chunks, (c + 1) * rows // chunks):
                    for j in range(cols):
                        partial[c, j] += a[r, j]
            for j in range(cols):
                total = 0.0
                for c in range(chunks):
                    total += partial[c, j]
                out[j] = total

        _COLUMN_SUMS[parallel] = kernel
    return _COLUMN_SUMS[parallel]
