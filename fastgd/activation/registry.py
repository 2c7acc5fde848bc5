"""Activation objects: parameters, validation, backend dispatch, and the registry.

An :class:`Activation` ties together an op's scalar math (``activation.formulas``, compiled by
the Numba and CUDA backends) and its NumPy reference (``activation.reference``, run by the
NumPy backend). Everything a call needs to check is checked before anything is written.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fastgd import _arrays, config
from fastgd.activation import formulas as m
from fastgd.activation import reference as ref
from fastgd.backends import host_fast_path, resolve, to_device
from fastgd.scalar import calls, grouped

_FLOAT32_MAX, _FLOAT32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_may_share_memory = _arrays._may_share_memory
#: Plans an activation keeps (:meth:`Activation._plan`). Each parameter value has its own
#: (its typed scalars), so a loop over many values (a slope learned as a Python float) would
#: otherwise grow the dict by ~400 bytes a call; past this, all are dropped (``clear`` is
#: atomic, where removing the oldest could race another thread's call) and rebuilt as used.
MAX_PLANS = 256


def _fits_float32(values: dict, op: str) -> None:
    """Parameters that float32 data are computed with must be float32 numbers: alpha=1e39
    became inf, and elu of 0 NaN (torch refuses such a value too)."""
    for name, v in values.items():
        if abs(v) > _FLOAT32_MAX:
            raise ValueError(f"{op} {name}={v} overflows float32, the dtype of the data")


class Activation:
    """One elementwise activation: ``forward(x)`` and ``backward(dy, x)``.

    ``params`` maps each parameter name to its default; ``check`` validates a dict of values.
    ``wide`` names the directions that compute float32 data in float64 so the float32 tails
    keep their accuracy (a rounding of ``x`` there would be amplified many times). ``narrow``
    names those of them whose scalar math repairs those roundings itself (with ``fma``) and
    stays within the contract in float32 on backends whose float32 math is accurate to
    ~1 ULP (``float32_math_ulp`` <= 1.5: the Numba CPU backend), when the parameters are
    exact in float32; others still widen. ``from_output`` is ``(scalar math, NumPy
    reference)`` of the derivative written in the forward output y, for the ops whose
    derivative is a function of it (``backward(dy, y=y)``); ``output_check`` rejects the
    parameter values for which it is not (a negative slope).
    """

    kind = "elementwise"

    def __init__(self, name, forward, backward, reference, reference_backward, *,
                 params=None, check=None, wide=(), narrow=(), from_output=None,
                 output_check=None, doc=""):
        self.name = name
        self.scalar_forward, self.scalar_backward = forward, backward
        self.reference_forward, self.reference_backward = reference, reference_backward
        # direction -> (scalar math for the compiled backends, NumPy reference)
        self.math = {"forward": (forward, reference), "backward": (backward, reference_backward)}
        if from_output:
            self.math["backward_from_output"] = from_output
        for direction, (fn, _) in self.math.items():
            if direction != "forward" and fn is not None and not calls(fn, ("lanes",)):
                grouped(fn)  # dy times a derivative; row math keeps reassoc (scalar.grouped)
        self.params = dict(params or {})
        self._check = check
        self._output_check = output_check
        self.wide = frozenset(wide)
        self.narrow = frozenset(narrow)
        self._plans = {}  # see _plan
        self.__doc__ = doc

    @property
    def takes_output(self) -> bool:
        """Whether ``backward`` accepts the forward output ``y=`` instead of ``x``."""
        return "backward_from_output" in self.math

    def __repr__(self):
        return f"<activation {self.name}{self.params or ''}>"

    # -- parameters ---------------------------------------------------------------------------
    def bind(self, args, kwargs) -> dict:
        """Parameter values from positional ``args`` and keyword ``kwargs``, validated (the
        defaults themselves, shared and not to be changed, when there are none)."""
        if not args and not kwargs:
            return self.params
        if len(args) > len(self.params):
            names = list(self.params)
            raise TypeError(f"{self.name} takes {len(names)} parameter(s) {names}, got {args}")
        values = dict(self.params)
        values.update(zip(self.params, args))
        if kwargs:
            unknown = kwargs.keys() - self.params.keys()
            if unknown:
                names = list(self.params)
                raise ValueError(
                    f"{self.name} has no parameter(s) {sorted(unknown)}; it takes {names}")
            twice = [k for k in list(self.params)[:len(args)] if k in kwargs]
            if twice:  # as Python (and torch) refuse it: the keyword silently won
                raise TypeError(f"{self.name} got multiple values for {', '.join(twice)}")
            values.update(kwargs)
        if self._check:
            self._check(values)
        return values

    def _variant(self, values):
        """The activation that really runs (GELU picks its tanh form here) and its scalars."""
        if values is self.params:  # bind's defaults: their floats made once
            return self, self._default_scalars
        return self, tuple([float(v) for v in values.values()])

    @functools.cached_property
    def _default_scalars(self):
        return tuple([float(v) for v in self.params.values()])

    def _compute(self, dtype, direction, be=None, scalars=()):
        """The dtype the math runs in (float64 for float32 data where a tail needs it). Run
        once per kernel plan and per NumPy call: the parameters' float32 range is checked
        here, off the hot path of a call whose plan is known."""
        if dtype == np.float32 and scalars:
            _fits_float32(dict(zip(self.params, scalars)), self.name)
            if any(0 < abs(s) < _FLOAT32_TINY for s in scalars):  # subnormal in float32: a
                return np.dtype(np.float64)  # few digits (leaky_relu's slope 1e-40: 57 ULP)
        if direction not in self.wide:
            return dtype
        # parameters exact in the working type (not softplus beta=0.3), not subnormal there
        # (1/beta would overflow), nor past 2^64, which scales a float32 e^x gone subnormal
        # (x < -87.3) back up to where the contract holds |dx| >= 1e-3·|dy| to 8 ULP (elu's
        # backward with alpha=3e38 was 86 ULP off); below 2^64 such an alpha·e^x stays under
        # 2e-19, held only to 1e-6·|dy| (alpha = 100 there: 88 ULP, as torch's)
        tiny = float(np.finfo(dtype).tiny)
        exact = all(float(dtype.type(s)) == s and (s == 0 or tiny <= abs(s) <= 2.0**64)
                    for s in scalars)
        if direction in self.narrow and exact and getattr(be, "float32_math_ulp", 9) <= 1.5:
            return dtype
        return np.dtype(np.float64)

    # -- calls --------------------------------------------------------------------------------
    def forward(self, x, *args, out=None, backend=None, **kwargs):
        op, scalars = self._variant(self.bind(args, kwargs))
        y = op._fast("forward", (x,), out, backend, scalars)
        if y is not None:
            return y
        x = _arrays.as_array(x)
        be = resolve(backend, x)
        dtype = _arrays.check_float(x=x)
        return op._run(be, "forward", (x,), out, _arrays.shape_of(x), scalars, dtype)

    def backward(self, dy, x=None, *args, y=None, out=None, backend=None, **kwargs):
        """Input gradient from the upstream ``dy`` and the forward input ``x`` or, for the ops
        whose derivative is a function of their output, the output ``y=``: nothing to
        recompute (no exp), exact to a few ULP for the ``y`` given."""
        saved_name, saved = _saved(self.name, x, y)
        values = self.bind(args, kwargs)
        op, scalars = self._variant(values)
        direction = "backward" if y is None else op._from_output(values)
        dx = op._fast(direction, (dy, saved), out, backend, scalars)
        if dx is not None:
            return dx
        be, dy, saved, dtype, shape = _backward_inputs(backend, dy, saved_name, saved)
        return op._run(be, direction, (dy, saved), out, shape, scalars, dtype)

    def _from_output(self, values):
        """The direction name of the backward from y, once ``values`` allow it."""
        if "backward_from_output" not in self.math:
            raise ValueError(f"{self.name}_backward needs the forward input x (it has no "
                             "backward from the output y=)")
        if self._output_check:
            self._output_check(values)
        return "backward_from_output"

    def _fast(self, direction, ins, out, backend, scalars):
        """:meth:`_run` for the common call (see :func:`_fast_call`), or None."""
        call = _fast_call(backend, ins, out)
        if call is None:
            return None
        be, out, alias = call
        n = out.size
        loop = be.loop_for(n, self.math[direction][0], out.nbytes)
        kernel, typed = self._plan(be, direction, len(ins), out.dtype, scalars, loop, alias)
        arrays = ins if alias is not None else (*ins, out)
        if out.ndim != 1:  # the kernels index flat arrays
            arrays = [a.ravel() for a in arrays]
        kernel(*arrays, *typed)  # a Numba dispatcher (NumbaBackend.launcher): called directly
        return out

    def _run(self, be, direction, ins, out, shape, scalars, dtype):
        """``direction`` of the math on ``ins`` into ``out`` (checked before anything is
        written) or a new array; returns it."""
        if be.name == "numpy":
            out = _output(be, out, shape, dtype)
            compute = self._compute(dtype, direction, be, scalars)
            reference = self.math[direction][1]
            with np.errstate(over="ignore"):  # a float64 result past float32's range: inf
                out[...] = reference(*(a.astype(compute, copy=False) for a in ins), *scalars)
            return out
        views = _memory_order_views(be, ins, out, shape, dtype)
        if views is None:
            rows = _row_views(be, ins, out, shape, dtype)
            if rows is not None:  # rows of NumPy views (a column slice), where they lie
                out, arrays, alias = rows
                loop = be.loop_for(out.size, self.math[direction][0])
                kernel, typed = self._plan(be, direction, len(ins), dtype, scalars, loop,
                                           alias, rows=True)
                be.launch(kernel, out.size, (*arrays, *typed))
                return out
            out, flat, scratch, alias = _prepare_out(be, out, shape, dtype, ins)
            arrays = [be.flat(a) for a in ins]
        else:
            out, arrays, flat, alias = views
            scratch = False
        n = _arrays.size_of(flat)
        if n:
            # out=x (or out=dy) in place: one kernel argument for both (codegen.map_source)
            loop = be.loop_for(n, self.math[direction][0], n * dtype.itemsize)
            kernel, typed = self._plan(be, direction, len(ins), dtype, scalars, loop, alias)
            if alias is None:
                arrays.append(flat)
            else:  # out's own view: the input may be a read-only view of the same memory
                arrays[alias] = flat
            be.launch(kernel, n, (*arrays, *typed))
        else:  # no kernel to plan: the parameters' checks (float32 range) all the same
            self._compute(dtype, direction, be, scalars)
        return _write_back(out, flat, scratch)

    def _plan(self, be, direction, n_in, dtype, scalars, loop, alias, rows=False):
        """The kernel and its typed scalars for one call, found once per combination (a call
        on a small array is mostly Python work). A zero scalar keys by its repr: -0.0 == 0.0
        but the sign can reach the result (leaky_relu's slope). ``rows``: the kernel over
        2-D arrays of contiguous rows (:func:`_row_views`)."""
        key = (be.name, direction, dtype, scalars if all(scalars) else repr(scalars), loop,
               alias, rows, config.FASTMATH)
        plan = self._plans.get(key)
        if plan is None:
            compute = self._compute(dtype, direction, be, scalars)
            make = be.map_rows_kernel if rows else be.map_kernel
            kernel = make(self.math[direction][0], n_in, 1, len(scalars), compute, loop,
                          () if alias is None else (alias,))
            typed = be.typed_scalars(scalars, compute)
            n_arrays = n_in + (alias is None)  # the inputs, and out unless in place
            kernel = be.for_dtypes(kernel, (dtype,) * n_arrays + tuple(t.dtype for t in typed))
            if len(self._plans) >= MAX_PLANS:  # each rebuilt in microseconds if used again
                self._plans.clear()
            plan = self._plans[key] = (kernel, typed)
        return plan


def _fast_call(backend, ins, out):
    """``(backend, out, alias)`` for the common call, checked with a fraction of the general
    path's Python (a call on 2^10 elements is mostly Python): non-empty C-contiguous NumPy
    arrays of one shape and dtype, float32 or float64 in native byte order, on the Numba
    backend (named or auto), into a new array or an ``out`` of the same kind that is one of
    ``ins`` (``alias``: its index; in place) or shares no memory with them. None for any
    other call: the general path then runs it, and raises what is wrong."""
    be = host_fast_path(backend)
    x = ins[0]
    if be is None or type(x) is not np.ndarray:
        return None
    dtype, shape = x.dtype, x.shape
    if dtype is not _F32 and dtype is not _F64:  # native float32/64 are singletons
        return None
    for a in ins:
        if (type(a) is not np.ndarray or a.dtype is not dtype or a.shape != shape
                or not a.flags.c_contiguous):
            return None
    if not x.size:
        return None
    if out is None:
        return be, np.empty(shape, dtype), None
    if type(out) is not np.ndarray or out.dtype is not dtype or out.shape != shape:
        return None
    flags = out.flags
    if not (flags.writeable and flags.c_contiguous):
        return None
    alias = None
    for k, a in enumerate(ins):
        if a is out:
            alias = k if alias is None else alias
        elif not (flags.owndata and a.flags.owndata) and _may_share_memory(out, a):
            return None  # (two arrays that own their memory never share it)
    return be, out, alias


def _memory_order_views(be, ins, out, shape, dtype):
    """``(out, flat ins, flat out, alias)``: flat views in memory order of NumPy arrays that
    share one dense layout other than C order (a transpose, a Fortran-ordered array), with
    ``out`` given in it or made in it, as NumPy's ufuncs make theirs; or None, for the
    general path (which copies such inputs to C order: relu(a.T) took 12× relu(a), and
    ``out=a.T`` a scratch array and a copy back). An elementwise op does not care which
    element comes first."""
    first = ins[0]
    if (getattr(be, "xp", None) is not np or type(first) is not np.ndarray
            or first.flags.c_contiguous or not _dense(first)):
        return None
    if any(type(a) is not np.ndarray or a.strides != first.strides for a in ins[1:]):
        return None
    alias = None
    if out is None:
        out = np.empty_like(first)  # order "K": the inputs' layout
    elif type(out) is not np.ndarray or out.strides != first.strides:
        return None
    else:
        _arrays.check_out(out, shape, dtype, be)
        alias, partial = _arrays.out_overlap(out, ins)
        if partial:
            return None
    return out, [a.ravel("K") for a in ins], out.ravel("K"), alias


def _row_views(be, ins, out, shape, dtype):
    """``(out, arrays, alias)`` for NumPy arrays not all C-contiguous whose axes merge into
    two, rows and columns, in every array (a column slice ``x[:, :k]``, a step
    ``x[:, ::2]``, an ``out`` that is one): ``out`` made in C order where not given, and
    ``arrays`` the 2-D views a ``map_rows`` kernel takes, the inputs', then ``out``'s
    (which replaces the input it is element for element, ``alias``); or None where the
    axes do not merge so, ``out`` overlaps an input otherwise, or the backend has no such
    kernels. The general path copies such inputs to C order first: relu of ``x[:, :1024]``
    of a 4096x2048 float32 took 4x as long as over the rows, of ``x[:, ::2]`` 6x."""
    if (not hasattr(be, "map_rows_kernel") or any(type(a) is not np.ndarray for a in ins)
            or (out is not None and type(out) is not np.ndarray)):
        return None
    if all(a.flags.c_contiguous for a in ins) and (out is None or out.flags.c_contiguous):
        return None  # the flat map's
    alias = None
    if out is None:
        out = np.empty(shape, dtype)
    else:
        _arrays.check_out(out, shape, dtype, be)
        alias, partial = _arrays.out_overlap(out, ins)
        if partial:
            return None
    arrays = [*ins, out]
    merged = []  # (length, strides of every array): an axis merged into the one before it
    for n, strides in ((n, [a.strides[k] for a in arrays]) for k, n in enumerate(shape)
                       if n != 1):
        if merged and all(s0 == s * n for s0, s in zip(merged[-1][1], strides)):
            merged[-1] = (merged[-1][0] * n, strides)
        else:
            merged.append((n, strides))
    if not merged or len(merged) > 2:
        return None
    (rows, row_strides), (cols, col_strides) = ([(1, [0] * len(arrays))] + merged)[-2:]
    views = [np.lib.stride_tricks.as_strided(a, (rows, cols), strides)
             for a, strides in zip(arrays, zip(row_strides, col_strides))]
    if alias is not None:  # out's own view: the input may be a read-only view of it
        views[alias] = views.pop()
    return out, views, alias


def _dense(a) -> bool:
    """Whether ``a``'s elements fill its memory span in some order of its axes, strides
    positive (``ravel("K")`` is then a view)."""
    expected = a.itemsize
    for stride, n in sorted((s, n) for s, n in zip(a.strides, a.shape) if n > 1):
        if stride != expected:
            return False
        expected *= n
    return True


def _saved(name, x, y):
    """``("x", x)`` or ``("y", y)``: what a backward was given, exactly one of the two."""
    if x is None and y is None:
        raise ValueError(f"{name}_backward needs the forward input x or its output y=")
    if x is not None and y is not None:
        raise ValueError(f"{name}_backward takes the forward input x or its output y=, not "
                         f"both")
    return ("x", x) if y is None else ("y", y)


def _backward_inputs(backend, dy, saved_name, saved):
    """(backend, dy, saved, dtype, shape) of a backward's inputs, checked: one float dtype,
    one shape."""
    dy, saved = _arrays.as_array(dy), _arrays.as_array(saved)
    be = resolve(backend, dy, saved)
    dtype = _arrays.check_float(dy=dy, **{saved_name: saved})
    shape = _arrays.check_same_shape(dy=dy, **{saved_name: saved})
    return be, dy, saved, dtype, shape


def _output(be, out, shape, dtype):
    """The caller's ``out``, checked before anything is written, or a new array: where the
    whole result is computed before it is stored (the NumPy backend), nothing more."""
    if out is None:
        return be.empty(shape, dtype)
    _arrays.check_out(out, shape, dtype, be)
    return out


def _prepare_out(be, out, shape, dtype, ins, in_place=True):
    """``(out, flat, scratch, alias)``: the caller's ``out`` (checked first) or a new array;
    the flat array a kernel writes: a view of ``out`` or a ``scratch`` array that
    :func:`_write_back` copies into it, where ``out`` has no flat view (not contiguous),
    overlaps one of ``ins`` other than element for element (``out=x[::-1]``, ``x[1:]`` into
    ``x[:-1]``: NumPy's result, not one read after a partial write), or is one of them
    where the kernel cannot run ``in_place``; and ``alias``, the index of the input that
    ``out`` is element for element (in place), or None."""
    if out is None:
        flat = be.empty(math.prod(shape), dtype)
        return (flat if len(shape) == 1 else flat.reshape(shape)), flat, False, None
    _arrays.check_out(out, shape, dtype, be)
    alias, partial = _arrays.out_overlap(out, ins)
    flat = be.flat_view(out)
    if flat is None or partial or (alias is not None and not in_place):
        return out, be.empty(_arrays.size_of(out), dtype), True, None
    return out, flat, False, alias


def _output_first(fn) -> bool:
    """Whether row function ``fn`` writes its output before it last reads its input
    (:func:`fastgd.scalar.output_first`): it runs into a new array where ``out`` is x."""
    return getattr(fn, "output_first", False)


def _write_back(out, flat, scratch):
    """``out``, with a scratch result copied into it (see :func:`_prepare_out`); a torch CUDA
    tensor through a Numba view of its memory (torch refuses a CuPy or Numba value); by
    ``[:]`` (a scratch ``out`` has a dimension at least): a Numba device array cannot be
    indexed with ``...`` (numba#5170; the simulator's arrays can)."""
    if scratch:
        value = flat.reshape(_arrays.shape_of(out))
        if type(out).__module__.split(".")[0] == "torch":
            from fastgd.backends.cuda_backend import CudaBackend

            CudaBackend.native(out)[:] = value
        else:
            out[:] = value
    return out


class GELU(Activation):
    """GELU: exact (``approximate="none"``) or its tanh approximation."""

    def __init__(self, exact: Activation, tanh_form: Activation):
        super().__init__("gelu", None, None, None, None, params={"approximate": "none"},
                         check=_check_gelu,
                         doc=f"{exact.__doc__} approximate='tanh': {tanh_form.__doc__}")
        self.forms = {"none": exact, "tanh": tanh_form}

    def _variant(self, values):
        return self.forms[values["approximate"]], ()


def _check_gelu(values):
    if values["approximate"] not in ("none", "tanh"):
        got = values["approximate"]
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {got!r}")


class RowActivation(Activation):
    """Softmax-like ops along ``axis``: the row function runs on each slice along it."""

    kind = "rowwise"
    takes_output = True

    def __init__(self, name, row_forward, row_backward, row_backward_from_input, reference,
                 reference_backward, reference_backward_from_input=None, narrow=(),
                 wide_lines=(), doc=""):
        """``wide_lines``: directions that compute in float64 along an axis other than the
        last (walked one by one, or swapped into rows: lines of 63 reached 4.7 ULP in
        float32 log_softmax), where they are narrow along rows; side by side their sums
        add blocks in float64 (``backends.columns``).
        ``reference_backward_from_input``: the NumPy backend's backward from x where the
        reference forward's rounded y would lose digits (default: the backward of that y)."""
        super().__init__(name, row_forward, row_backward, reference, reference_backward,
                         params={"axis": -1}, check=self._check_axis,
                         wide=("forward", "backward", "backward_from_output"), narrow=narrow,
                         doc=doc)
        self.scalar_backward_from_input = row_backward_from_input
        self.reference_backward_from_input = reference_backward_from_input or (
            lambda dy, x, axis: reference_backward(dy, reference(x, axis), axis))
        self.wide_lines = wide_lines

    def _check_axis(self, values):
        if not _arrays.is_int(values["axis"]):  # bools too, as NumPy and torch
            raise ValueError(f"{self.name} axis must be an int, got {values['axis']!r}")

    def forward(self, x, *args, out=None, backend=None, **kwargs):
        axis = self.bind(args, kwargs)["axis"]
        y = self._fast(self.scalar_forward, "forward", (x,), out, backend, axis)
        if y is not None:
            return y
        x = _arrays.as_array(x)
        be = resolve(backend, x)
        dtype = _arrays.check_float(x=x)
        shape = _arrays.shape_of(x)
        axis = _normalize_axis(axis, len(shape))
        if be.name == "numpy":
            out = _output(be, out, shape, dtype)
            out[...] = self.reference_forward(x.astype(np.float64, copy=False), axis)
            return out
        return self._rows(be, self.scalar_forward, [x], out, shape, axis, dtype, "forward")

    def backward(self, dy, x=None, *args, y=None, out=None, backend=None, **kwargs):
        """Input gradient from the upstream ``dy`` and the forward input ``x`` or, cheaper
        and a little less accurate in float32, the forward output ``y=``."""
        saved_name, saved = _saved(self.name, x, y)
        axis = self.bind(args, kwargs)["axis"]
        fn = self.scalar_backward_from_input if y is None else self.scalar_backward
        direction = "backward" if y is None else "backward_from_output"
        dx = self._fast(fn, direction, (dy, saved), out, backend, axis)
        if dx is not None:
            return dx
        be, dy, saved, dtype, shape = _backward_inputs(backend, dy, saved_name, saved)
        axis = _normalize_axis(axis, len(shape))
        if be.name == "numpy":
            out = _output(be, out, shape, dtype)
            dy64, saved64 = (a.astype(np.float64, copy=False) for a in (dy, saved))
            reference = self.reference_backward_from_input if y is None else (
                self.reference_backward)
            out[...] = reference(dy64, saved64, axis)
            return out
        return self._rows(be, fn, [dy, saved], out, shape, axis, dtype, direction)

    def _fast(self, fn, direction, ins, out, backend, axis):
        """:meth:`_rows` for the common call (see :func:`_fast_call`) along the last axis of
        an array of one dimension or more, or None."""
        call = _fast_call(backend, ins, out)
        if call is None:
            return None
        be, out, alias = call
        shape = out.shape
        if not shape or (axis != -1 and axis != len(shape) - 1) or (
                alias is not None and _output_first(fn)):
            return None
        arrays = (*ins, out)
        if len(shape) != 2:  # rows of the last axis
            arrays = [a.reshape(-1, shape[-1]) for a in arrays]
        kernel = self._row_kernel(be, fn, len(arrays), out.dtype, direction, False,
                                  be.rows_loop(fn, arrays[0], False))
        kernel(*arrays)  # a Numba dispatcher (NumbaBackend.launcher): called directly
        return out

    def _rows(self, be, fn, ins, out, shape, axis, dtype, direction):
        """Run row function ``fn`` along ``axis`` into ``out`` or a new array (returned):
        arrays seen as (outer, length, inner)."""
        out, flat, scratch, _ = _prepare_out(be, out, shape, dtype, ins,
                                             in_place=not _output_first(fn))
        outer, length, inner = _lines_shape(shape, axis)
        size = outer * length * inner
        if size:
            # along the last axis plain contiguous rows, else lines a[o, :, i]
            lines = (outer, length) if inner == 1 else (outer, length, inner)
            arrays = [be.as_shape(a, lines) for a in [*ins, flat if scratch else out]]
            if inner != 1 and hasattr(be, "columns") and be.fits_columns(arrays):
                # (their sums add blocks in float64: no wide_lines)
                be.columns(fn, arrays, self._compute(dtype, direction, be))
            # (small arrays: the walk costs less than the swaps' threads and buffers)
            elif inner != 1 and size > config.PARALLEL_THRESHOLD and hasattr(be, "swap_lines"):
                self._lines_as_rows(be, fn, arrays, dtype, direction)
            else:
                kernel = self._row_kernel(be, fn, len(arrays), dtype, direction, inner != 1,
                                          be.rows_loop(fn, arrays[0], inner != 1))
                be.launch(kernel, outer * inner, arrays)
        return _write_back(out, flat, scratch)

    def _lines_as_rows(self, be, fn, arrays, dtype, direction):
        """Lines ``a[o, :, i]`` of ``arrays`` (outer, length, inner; the last one written)
        run as contiguous rows on a host backend: each input swapped into (outer, inner,
        length) (``cpu_memory.swap_lines``), the rows kernel run on those, and its result
        swapped back into the last array. Costs a buffer of the arrays' size for each input
        and the result (the strided walk needed none)."""
        outer, length, inner = arrays[0].shape
        rows = [be.rows_of_lines(a).reshape(outer * inner, length) for a in arrays[:-1]]
        result = be.empty((outer * inner, length), dtype)
        kernel = self._row_kernel(be, fn, len(arrays), dtype, direction, False,
                                  be.rows_loop(fn, rows[0], False), lines=True)
        be.launch(kernel, outer * inner, [*rows, result])
        be.swap_lines(result.reshape(outer, inner, length), arrays[-1])

    def _line_compute(self, be, dtype, direction):
        """The compute dtype along an axis other than the last: float64 for ``wide_lines``."""
        if direction in self.wide_lines:
            return np.dtype(np.float64)
        return self._compute(dtype, direction, be)

    def _row_kernel(self, be, fn, n_arrays, dtype, direction, strided, loop, lines=False):
        """The rows kernel for one call, found once per combination (see ``Activation._plan``);
        ``lines``: rows that are lines along another axis (strided, or swapped into rows),
        which compute as :meth:`_line_compute` says."""
        lines = lines or strided
        key = (be.name, fn, dtype, strided, loop, lines)
        kernel = self._plans.get(key)
        if kernel is None:
            compute = (self._line_compute(be, dtype, direction) if lines
                       else self._compute(dtype, direction, be))
            kernel = self._plans[key] = be.rows_kernel(fn, n_arrays, 0, 0, False, strided,
                                                       compute, loop, writes_last=True)
        return kernel


def _needs_weight(weight):
    if weight is None:
        raise TypeError("prelu needs its slopes: prelu(x, weight), weight one slope or one "
                        "per channel (axis 1)")


class PReLU(Activation):
    """PReLU: leaky_relu with a learned slope, one for all or one per channel (axis 1)."""

    def __init__(self, doc=""):
        super().__init__("prelu", m.prelu_row, m.prelu_backward_row, ref.prelu,
                         ref.prelu_backward, doc=doc)

    def _row_shape(self, x, weight):
        """x's shape and its (rows, row length) view, one row per (sample, channel)."""
        shape = _arrays.shape_of(x)
        channels = shape[1] if len(shape) >= 2 else 1
        size = _arrays.size_of(weight)
        if size not in (1, channels):
            where = f"1 or {channels} (x.shape[1])" if len(shape) >= 2 else (
                f"1 (x is {len(shape)}-d: no channel axis)")
            raise ValueError(f"prelu weight has {size} elements; expected {where}")
        if len(shape) < 2:
            return shape, (1, _arrays.size_of(x))
        rows = shape[0] * channels
        return shape, (rows, _arrays.size_of(x) // rows if rows else 0)

    @staticmethod
    def _weight(weight, x):
        """``weight`` as an array; a number (or a list of them) as slopes of x's dtype, on the
        GPU (the current device) for device x (as a float64 array it was refused beside
        float32 x as a mixed dtype)."""
        if isinstance(weight, (list, tuple)):
            weight = np.asarray(weight)
            if weight.dtype.kind not in "fiu":  # bools, strings, complex: named as such
                return weight
        elif not _arrays.is_number(weight):
            return _arrays.as_array(weight)
        dtype = _arrays.dtype_of(x)
        values = np.asarray(weight, np.float64)
        if dtype == np.float32:
            _fits_float32({"weight": float(np.max(np.abs(values), initial=0))}, "prelu")
        slope = values.astype(dtype if dtype in _arrays.FLOAT_DTYPES else np.float64)
        return to_device(slope) if _arrays.is_device_array(x) else slope

    def forward(self, x, weight=None, *, out=None, backend=None):
        _needs_weight(weight)
        x = _arrays.as_array(x)
        weight = self._weight(weight, x)
        be = resolve(backend, x, weight)
        dtype = _arrays.check_float(x=x, weight=weight)
        shape, rows = self._row_shape(x, weight)
        if be.name == "numpy":
            out = _output(be, out, shape, dtype)
            out[...] = ref.prelu(x, weight)
            return out
        out, flat, scratch, _ = _prepare_out(be, out, shape, dtype, (x, weight))
        if self._by_channel(be, rows, weight):  # (N, C): the slope of column j, weight[j]
            columns = (shape[0], rows[0] // shape[0])
            be.grid(m.leaky_relu, [be.as_shape(x, columns)], [be.flat(weight)],
                    [be.as_shape(flat, columns)])
        else:
            be.rows(m.prelu_row, [be.as_shape(x, rows), be.as_shape(flat, rows)],
                    per_row=[be.flat(weight)])
        return _write_back(out, flat, scratch)

    @staticmethod
    def _by_channel(be, rows, weight):
        """Whether x is (N, C) for the kernels (channels of one element: (N, C),
        (N, C, 1, 1)) with a slope per channel, on a host backend past PARALLEL_THRESHOLD
        elements: dx (and the forward) then run as a grid with the slopes per column, and
        dweight as one sum per channel down its column (side by side, or as rows with dy and
        x swapped). A row per (sample, channel) of one element cost a row call each: prelu
        on (4096, 1024) took 13x torch's time, its backward 1.6x."""
        return (rows[1] == 1 and _arrays.size_of(weight) > 1 and hasattr(be, "swap_lines")
                and rows[0] > config.PARALLEL_THRESHOLD)

    def backward(self, dy, x, weight=None, *, out=None, backend=None):
        """``(dx, dweight)``; ``out`` (optional) receives dx."""
        _needs_weight(weight)
        dy, x = _arrays.as_array(dy), _arrays.as_array(x)
        weight = self._weight(weight, x)
        be = resolve(backend, dy, x, weight)
        dtype = _arrays.check_float(dy=dy, x=x, weight=weight)
        _arrays.check_same_shape(dy=dy, x=x)
        shape, rows = self._row_shape(x, weight)
        if be.name == "numpy":
            out = _output(be, out, shape, dtype)
            dx, dw = ref.prelu_backward(dy, x, weight)
            out[...] = dx
            return out, dw
        out, flat, scratch, _ = _prepare_out(be, out, shape, dtype, (dy, x, weight))
        if self._by_channel(be, rows, weight):
            columns = (shape[0], rows[0] // shape[0])
            # dweight first: dx may be written into dy or x (out=x)
            dweight = be.empty(columns[1], np.float64)  # each channel's sum down its column
            be.run_columns(m.prelu_dweight_row, [be.as_shape(a, columns) for a in (dy, x)],
                           writes=(), result=dweight, compute=np.float64)
            be.grid(m.leaky_relu_backward, [be.as_shape(a, columns) for a in (dy, x)],
                    [be.flat(weight)], [be.as_shape(flat, columns)])
            _write_back(out, flat, scratch)
            return out, dweight.astype(dtype).reshape(_arrays.shape_of(weight))
        partial = be.empty(rows[0], np.float64)  # each row's share of its channel's dweight
        be.rows(m.prelu_backward_row,
                [be.as_shape(a, rows) for a in (dy, x, flat)],
                per_row=[be.flat(weight)], result=partial, compute=np.float64)
        _write_back(out, flat, scratch)
        dweight = be.empty(_arrays.shape_of(weight), dtype)
        channels = _arrays.size_of(weight)
        if channels:  # x of zero channels: an empty dweight
            be.rows(m.row_sum, [partial.reshape(1, rows[0] // channels, channels)],
                    result=be.flat(dweight), compute=np.float64)
        return out, dweight


def _normalize_axis(axis, ndim):
    if ndim == 0 and axis in (-1, 0):  # a 0-d array is one row of one element, as in torch
        return 0
    if not -ndim <= axis < ndim:  # for 0-d: any other axis
        raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimension(s)")
    return axis % ndim


def _lines_shape(shape, axis):
    """``shape`` as (outer, length along axis, inner)."""
    if not shape:
        return (1, 1, 1)
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
