"""Optimizer objects: fused in-place updates of parameters and state on any backend.

An optimizer holds its parameters (a list or dict of arrays, or a :class:`ParamBuffer`), its
state arrays on the same backend, and one compiled kernel per tensor (one in all for a
ParamBuffer). ``step(grads)`` validates the gradients (nothing is written if they do not
match), computes the per-step scalars on the host in float64 in PyTorch's order of
operations, and runs the rule of :mod:`fastgd.optim.rules` as one fused pass per tensor. The
NumPy backend runs the independent reference of :mod:`fastgd.optim.reference` instead.

Clipping and guards: ``max_grad_norm`` and ``skip_nonfinite`` add one reduction pass over the
gradients (sum of squares; NaN/inf show up in it) before the update pass, which applies the
clip coefficient itself: two passes over the gradients in all. ``clip_value`` clamps each
gradient element inside the update (and the reduction) pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from fastgd import _arrays
from fastgd._checks import finite, in_range, nonnegative, positive
from fastgd.backends import resolve, to_host
from fastgd.optim import reference as ref
from fastgd.optim import rules
from fastgd.optim.buffer import ParamBuffer
from fastgd.optim.clip import clip_coefficient, global_norm, max_norm_value


class StepInfo(NamedTuple):
    """What one ``step()`` did: the learning rate used, the global gradient norm (when a
    clip or guard computed it, else None), whether the step was skipped, and the step count
    after it."""

    lr: float
    grad_norm: float | None
    skipped: bool
    step: int


# -- validation -------------------------------------------------------------------------


def _distinct_names(names: list) -> list:
    """Param names that stay distinct as text, as state_dict's keys hold them (0 and "0"
    would share one entry, and a load would give both the same state)."""
    texts = [str(n) for n in names]
    if len(set(texts)) != len(texts):
        twice = next(t for t in texts if texts.count(t) > 1)
        raise ValueError(f"param names must differ as text (state_dict keys); {twice!r} is "
                         "the name of two params")
    return names


def _unit(name, value):
    return in_range(name, value, 0, 1, hi_open=True)


def _fraction(name, value):
    return in_range(name, value, 0, 1)


def _betas(name, betas):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}") from None
    return _unit(f"{name}[0]", beta1), _unit(f"{name}[1]", beta2)


def _optional_positive(name, value):
    return None if value is None else positive(name, value)


def _optional_norm(name, value):
    """None, or a norm bound as clip_grad_norm takes it: inf measures the norm only, 0
    zeroes the step."""
    return None if value is None else max_norm_value(name, value)


def refuse_shared_memory(names, arrays, why: str) -> None:
    """``ValueError`` naming two of ``arrays`` (by ``names``) whose memory overlaps."""
    shared = _arrays.first_overlap(arrays)
    if shared is not None:
        a, b = (names[k] for k in shared)
        raise ValueError(f"params {a!r} and {b!r} share memory; {why}")


def _flag(name, value):
    """A switch: True or False (NumPy's bools and 0/1 too); a string such as "false" was
    read as true."""
    if isinstance(value, (bool, np.bool_)) or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


#: Each hyperparameter's check, applied whenever it is set: when the optimizer is built and
#: after (a change takes effect at the next step, as an edit of torch's ``param_groups``
#: does; one that would change the rule and its state is refused, see ``__setattr__``).
_CHECKS = {
    "weight_decay": nonnegative, "lr_decay": nonnegative, "eps": nonnegative,
    "initial_accumulator_value": nonnegative, "momentum": nonnegative,
    "momentum_decay": nonnegative, "dampening": finite, "alpha": _fraction, "betas": _betas,
    "max_grad_norm": _optional_norm, "clip_value": _optional_positive,
    "maximize": _flag, "skip_nonfinite": _flag, "nesterov": _flag, "centered": _flag,
    "amsgrad": _flag, "decoupled_weight_decay": _flag,
}


class _Slot:
    """One kernel launch's worth of parameters: a flat parameter array and its state."""

    __slots__ = ("p", "n", "dtype", "state", "launch", "tail", "gbuf", "tmp", "gprep")


class Optimizer:
    """Base class: parameters, state, validation, clipping and the step loop.

    Subclasses set their hyperparameters, then call ``Optimizer.__init__``, and define
    ``_variant()`` (the rule and its state), ``_scalars(lr, t)`` (the rule's per-step
    scalars after ``clip, scale``) and ``_reference(p, g, state, lr, t, gbuf, tmp)``.
    """

    def __init__(self, params, lr, *, maximize=False, max_grad_norm=None, clip_value=None,
                 skip_nonfinite=False, backend=None):
        self._step = 0
        self.lr = lr
        self.maximize = maximize
        self.max_grad_norm = max_grad_norm
        self.clip_value = clip_value
        self.skip_nonfinite = skip_nonfinite
        self._setup_params(params, backend)
        self._build(*self._variant())
        self._built = True  # from here on, a name the optimizer does not have is refused

    def __setattr__(self, name, value):
        """Hyperparameters are checked whenever they are set (``opt.lr = 3e-4`` takes effect
        at the next step), and a name the optimizer does not have is refused with the list of
        those it has (``opt.momentum`` on Adam, a typo such as ``opt.learning_rate``). A
        change that would choose another rule or state (SGD's momentum from 0.9 to 0,
        RMSprop's ``centered``, Adam's ``amsgrad``) is refused: the kernel and the state
        arrays were made for the first choice; build a new optimizer for it."""
        if name[0] == "_":  # private state: the hot path
            object.__setattr__(self, name, value)
            return
        if name in ("params", "state") and "_built" in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.{name} is the optimizer's own: edit "
                                 f"its arrays in place, or load_state_dict")
        if ("_built" in self.__dict__ and name not in self.__dict__
                and not hasattr(type(self), name) and type(self).__module__ == __name__):
            # (a subclass of the user's may add attributes of its own)
            settings = sorted({"lr", *(k for k in self.__dict__ if k in _CHECKS)})
            raise AttributeError(f"{type(self).__name__} has no setting {name!r} (a typo, or "
                                 f"another optimizer's?); it has {', '.join(settings)}")
        check = _CHECKS.get(name)
        if check is None:
            object.__setattr__(self, name, value)
            return
        value = check(name, value)
        built = "_rule" in self.__dict__
        old = getattr(self, name, None)
        object.__setattr__(self, name, value)
        if built:
            rule, spec = self._variant()
            try:
                if rule is not self._rule or [k for k, _ in spec] != [k for k, _ in self._spec]:
                    raise ValueError(
                        f"{name}={value!r} would change {type(self).__name__}'s rule and its "
                        f"state ({self._rule.__name__} to {rule.__name__}), which are chosen "
                        f"when the optimizer is built: build a new one with {name}={value!r}")
                self._check_combination()
            except ValueError:
                object.__setattr__(self, name, old)
                raise

    def _check_combination(self) -> None:
        """Raise ValueError where hyperparameters that are each valid do not go together."""

    @property
    def _clip(self) -> float:
        return math.inf if self.clip_value is None else self.clip_value

    # -- construction -------------------------------------------------------------------------
    def _setup_params(self, params, backend):
        self._buffer = params if isinstance(params, ParamBuffer) else None
        if self._buffer is not None:
            buf = params
            self.backend = buf.backend if backend is None else resolve(backend, buf.flat_params)
            self._names = _distinct_names(list(buf.shapes))
            self._shapes = [buf.shapes[k] for k in self._names]
            self._dtypes = [buf.dtype] * len(self._names)
            self._is_dict = True
            self.params = buf.params
            return
        if isinstance(params, Mapping):
            names, arrays = _distinct_names(list(params)), list(params.values())
            self._is_dict = True
        elif isinstance(params, (list, tuple)):
            names, arrays, self._is_dict = list(range(len(params))), list(params), False
        else:
            raise TypeError("params must be a list or dict of arrays, or a ParamBuffer; "
                            f"got {type(params).__name__}")
        if not arrays:
            raise ValueError("the optimizer got no parameters")
        for name, a in zip(names, arrays):
            if not _arrays.is_array(a):
                raise _arrays.not_an_array(f"param {name!r}", a)
        for name, a in zip(names, arrays):  # each float; tensors may differ in dtype
            _arrays.check_float(**{f"param {name!r}": a})
        on_device = [_arrays.is_device_array(a) for a in arrays]
        if any(on_device) and not all(on_device):
            host = names[on_device.index(False)]
            dev = names[on_device.index(True)]
            raise ValueError(f"params are on different backends: {host!r} is a host array, "
                             f"{dev!r} a device array")
        self.backend = resolve(backend, *arrays)
        for name, a in zip(names, arrays):
            if not _arrays.is_writable(a):
                raise ValueError(f"param {name!r} is read-only; the optimizer updates it in place")
            if self.backend.flat_view(a) is None:
                raise ValueError(f"param {name!r} is not C-contiguous (a strided view, a "
                                 "transpose or Fortran order); the optimizer updates it in place "
                                 "through a flat view: keep a C-contiguous copy as the param")
        refuse_shared_memory(names, arrays, "each param needs its own (one update and one "
                             "optimizer state per element)")
        self._names = names
        self._shapes = [_arrays.shape_of(a) for a in arrays]
        self._dtypes = [_arrays.dtype_of(a) for a in arrays]
        self.params = dict(zip(names, arrays)) if self._is_dict else arrays
        self._arrays = arrays

    def _build(self, rule, spec):
        """Allocate state (``spec``: list of (key, initial value)) and bind one kernel a slot."""
        be = self.backend
        self._rule, self._spec = rule, spec
        if self._buffer is not None:
            flats = [(self._buffer.flat_params, self._buffer.dtype)]
        else:
            flats = [(be.flat_view(a), d) for a, d in zip(self._arrays, self._dtypes)]
        self._slots = []
        for p, dtype in flats:
            s = _Slot()
            s.p, s.n, s.dtype = p, p.size, np.dtype(dtype)
            s.state = {key: be.full(s.n, dtype, init) for key, init in spec}
            states = tuple(s.state.values())
            s.tail = states  # the launch: p, g, *states (written back in place), *scalars
            s.launch = None
            if be.name == "numpy":
                s.gbuf, s.tmp, s.gprep = (np.empty(s.n, dtype) for _ in range(3))
            else:
                n_args = len(self._kernel_scalars(self._lr_at(0), 1, 1.0))
                in_place = (0, *range(2, 2 + len(spec)))  # p and the states
                s.launch = be.map_launcher(rule, 2 + len(spec), 1 + len(spec), n_args,
                                           s.dtype, s.n, aliases=in_place)
            self._slots.append(s)
        # what a step writes: a gradient over any of it is read before the first kernel runs
        self._footprint = _arrays.Footprint(self._written())
        # each dtype once, with its largest value where a float64 scalar may overflow it
        self._step_dtypes = tuple((d, float(np.finfo(d).max) if d.itemsize < 8 else None)
                                  for d in dict.fromkeys(s.dtype for s in self._slots))
        # the state as the user sees it: per parameter name, shaped like the parameter, in
        # read-only mappings (an array put in place of a view would be left out of every
        # step, of state_dict and of load_state_dict)
        if self._buffer is not None:
            per_key = {key: self._buffer.views(self._slots[0].state[key]) for key, _ in spec}
            state = {n: {k: per_key[k][n] for k, _ in spec} for n in self._names}
        else:
            state = {n: {k: s.state[k].reshape(shape) for k, _ in spec}
                     for n, s, shape in zip(self._names, self._slots, self._shapes)}
        self.state = MappingProxyType({n: MappingProxyType(st) for n, st in state.items()})

    # -- per-step ----------------------------------------------------------------------------
    def _lr_at(self, s: int) -> float:
        if self._lr_fn is None:
            return self._lr
        try:
            lr = self._lr_fn(s)
        except OverflowError:  # math.pow's, in a schedule that grows (gamma > 1)
            raise ValueError(f"the lr schedule overflowed at step {s}; it must be finite "
                             "and >= 0") from None
        if not _arrays.is_number(lr):  # as lr= takes it: "0.1" or True is no lr
            raise ValueError(f"the lr schedule returned {lr!r} at step {s}")
        lr = float(lr)
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"the lr schedule returned {lr} at step {s}; it must be finite "
                             "and >= 0")
        return lr

    def _kernel_scalars(self, lr, t, scale):
        return (self._clip, scale, *self._scalars(lr, t))

    def _typed_scalars(self, scalars, lr) -> dict:
        """A step's kernel scalars in each of the params' dtypes (the kernels' arguments; the
        NumPy backend's steps cast them alike). A clip beyond a dtype's range is inf there (the
        same clip); any other scalar beyond it is refused, as torch refuses an lr that
        overflows float32, where it would have written inf into the params."""
        typed = {}
        for dtype, top in self._step_dtypes:
            values = scalars  # this dtype's: a float64 after a float32 keeps its clip
            if top is not None:
                rest = scalars[1:]  # the clip scale is NaN where the norm is: not beyond
                big = next((v for v in rest if abs(v) > top), None)
                if big is not None:
                    raise ValueError(
                        f"this step's lr or hyperparameters give {big:g}, beyond the range of "
                        f"the {dtype} params (max {top:g}); lr was {lr:g}")
                if top < abs(scalars[0]) < math.inf:
                    values = (math.inf, *rest)
            if self.backend.name != "numpy":
                typed[dtype] = self.backend.typed_scalars(values, dtype)
        return typed

    def _grads(self, grads):
        """Flat gradients, one per slot, after checking them all against the params."""
        return self._take_grads(self._check_grads(grads))

    def _check_grads(self, grads):
        """``grads`` checked against the params, nothing written: ``(arrays, flats)`` for
        :meth:`_take_grads` (None for a ParamBuffer's own)."""
        if grads is None:
            if self._buffer is None:
                raise ValueError("step() needs the gradients (only an optimizer over a "
                                 "ParamBuffer reads them from the buffer)")
            return None
        names = self._names
        if self._is_dict:
            if not isinstance(grads, Mapping):
                raise ValueError(f"grads must be a dict with the params' names, got "
                                 f"{type(grads).__name__}")
            try:
                arrays = [grads[n] for n in names]
            except KeyError:
                missing = next(n for n in names if n not in grads)
                raise ValueError(f"grads has no entry for param {missing!r}") from None
            if len(grads) != len(names):
                extra = next(k for k in grads if k not in self.params)
                raise ValueError(f"grads has {extra!r}, which is not a param")
        else:
            if isinstance(grads, Mapping) or not isinstance(grads, (list, tuple)):
                raise ValueError(f"grads must be a list of {len(names)} arrays, like the params")
            if len(grads) != len(names):
                raise ValueError(f"grads has {len(grads)} arrays, params has {len(names)}")
            arrays = grads
        be = self.backend
        on_host = be.name != "cuda"
        host_flats = []
        for name, shape, dtype, g in zip(names, self._shapes, self._dtypes, arrays):
            if on_host:
                if type(g) is not np.ndarray:
                    if not isinstance(g, np.ndarray):
                        what = ("a device array" if _arrays.is_device_array(g)
                                else f"not an array ({type(g).__name__})")
                        raise ValueError(f"grad {name!r} is {what}; the params are host arrays")
                    g = np.asarray(g)  # a subclass: np.matrix's reshape(-1) is (1, n)
                gshape, gdtype = g.shape, g.dtype
                host_flats.append(g.reshape(-1))
            else:
                if not be.owns(g):
                    raise ValueError(f"grad {name!r} is not a device array; the params are "
                                     "on the cuda backend")
                gshape, gdtype = _arrays.shape_of(g), _arrays.dtype_of(g)
            if gshape != shape:
                raise ValueError(f"grad {name!r} has shape {gshape}, expected {shape}")
            if gdtype != dtype:
                swapped = (gdtype.newbyteorder() == dtype) if on_host else False
                raise ValueError(f"grad {name!r} has dtype {gdtype}, expected {dtype}" + (
                    " (byte-swapped: pass g.astype(g.dtype.newbyteorder('='))" if swapped
                    else ""))
        # device grads flat: a view, a copy, or (non-contiguous, without CuPy) the error, for
        # every grad before a buffer's are written; host grads flat as checked
        return arrays, ([be.flat(g) for g in arrays] if be.name == "cuda" else host_flats)

    def _written(self) -> list:
        """The arrays a step writes: every parameter and state array."""
        return [a for s in self._slots for a in (s.p, *s.tail)]

    def _take_grads(self, checked, footprint=None):
        """The flat gradients of :meth:`_check_grads`' ``checked``: a ParamBuffer's copied
        into its buffer, those over memory a step writes (``footprint``: this optimizer's
        parameters and state, by default) copied."""
        if checked is None:
            return [self._buffer.flat_grads]
        arrays, flats = checked
        be, names = self.backend, self._names
        if self._buffer is not None:
            views, storage = self._buffer.grads, self._buffer.flat_grads
            staged = []
            for name, g, flat in zip(names, arrays, flats):
                if g is views[name]:
                    continue
                if _arrays.share_memory(flat, storage):
                    # another tensor's gradient in the buffer: read before any is written
                    flat = _arrays.flat_copy(be, flat, self._buffer.dtype)
                staged.append((name, flat))
            for name, flat in staged:
                be.copy_into(be.flat_view(views[name]), flat)
            return [storage]
        flats = list(flats)
        footprint = footprint or self._footprint
        for k, (g, s) in enumerate(zip(flats, self._slots)):
            if footprint.overlaps(g):
                # over a parameter (the gradient of |p|²/2 is p, or a view of it at an offset;
                # another's, stepped before this one) or a state array: read whole before the
                # step writes any (a kernel in place was right only for the same view; the
                # NumPy step's decoupled decay writes p first and updates state before its
                # last read of g)
                flats[k] = _arrays.flat_copy(be, g, s.dtype)
        return flats

    def step(self, grads=None) -> StepInfo:
        """One update of every parameter from ``grads`` (same names/order, shapes, dtypes and
        backend as the params; ``None`` for a ParamBuffer's own ``grads``)."""
        flats = self._grads(grads)
        norm = self._grad_norm(flats)
        step = self._prepare(flats, norm)
        return StepInfo(self.lr, norm, True, self._step) if step is None else self._apply(step)

    def _grad_norm(self, flats):
        """The norm of gradients ``flats`` (after ``clip_value``) where ``max_grad_norm`` or
        ``skip_nonfinite`` needs it, else None; with ``skip_nonfinite`` an inf gradient gives
        an inf norm, clip_value or not (strict), so the guard skips the step."""
        if self.max_grad_norm is None and not self.skip_nonfinite:
            return None
        return global_norm(self.backend, flats, self._clip, strict=self.skip_nonfinite)

    def _prepare(self, flats, norm):
        """The step on checked gradients ``flats`` whose norm is ``norm``, for
        :meth:`_apply`, once everything that can refuse it is checked (the scalars' range, a
        schedule's value); None where ``skip_nonfinite`` skips it. ``Groups`` prepares every
        group's before it applies any."""
        lr = self._lr_at(self._step)
        t = self._step + 1
        scale = -1.0 if self.maximize else 1.0
        if self.skip_nonfinite and not math.isfinite(norm):
            return None
        if self.max_grad_norm is not None:
            scale *= clip_coefficient(self.max_grad_norm, norm)
        scalars = self._kernel_scalars(lr, t, scale)
        typed = self._typed_scalars(scalars, lr)  # every dtype's, before anything is written
        return flats, norm, lr, t, scale, typed

    def _apply(self, step) -> StepInfo:
        """Apply a step :meth:`_prepare` made: nothing in it can fail."""
        flats, norm, lr, t, scale, typed = step
        if self.backend.name == "numpy":
            self._numpy_step(flats, lr, t, scale)
        else:
            for s, g in zip(self._slots, flats):
                s.launch(s.p, g, *s.tail, *typed[s.dtype])
        self._step = t
        self._advance()
        return StepInfo(lr, norm, False, t)

    def _numpy_step(self, flats, lr, t, scale):
        """The reference's step, in IEEE arithmetic without NumPy's warnings: an overflow or
        an inf - inf is the result torch's step (and the kernels') gives too."""
        with np.errstate(all="ignore"):
            for s, g in zip(self._slots, flats):  # none over its param (_grads copied those)
                if self._clip != math.inf:
                    g = np.clip(g, -self._clip, self._clip, out=s.gprep)
                if scale != 1.0:
                    g = np.multiply(g, scale, out=s.gprep)
                self._reference(s.p, g, s.state, lr, t, s.gbuf, s.tmp)

    def _advance(self):
        """Host-side state after a step that was applied (NAdam's momentum product)."""

    # -- introspection -----------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self._step

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return self._lr_at(self._step)

    @lr.setter
    def lr(self, value):
        """A learning rate (>= 0; 0 as in torch.optim) or a schedule ``step -> lr`` from the
        next step on, as an edit of torch's ``param_groups[i]["lr"]``; a schedule is checked
        at that step."""
        before = self.__dict__.get("_lr_fn"), self.__dict__.get("_lr")
        if callable(value):
            self._lr_fn, self._lr = value, None
        else:
            self._lr_fn, self._lr = None, nonnegative("lr", value)
        try:
            self._lr_at(self._step)
        except Exception:
            self._lr_fn, self._lr = before
            raise

    def bytes_per_step(self) -> int:
        """Bytes one step must move: each parameter, gradient and state stream read, each
        parameter and state stream written (the roofline count for GB/s)."""
        streams = 3 + 2 * len(self._spec)
        return sum(s.n * s.dtype.itemsize * streams for s in self._slots)

    def __repr__(self):
        return (f"<{type(self).__name__} {len(self._names)} tensors on {self.backend.name}, "
                f"step {self._step}>")

    # -- state -------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _check_extra(self, values: dict) -> None:
        """Raise ValueError where a loaded host-side value is out of its range."""

    def _load_extra(self, values: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """The optimizer's state as a flat dict of NumPy values (host copies), ready for
        ``np.savez(f, **opt.state_dict())``: ``optimizer``, ``step``, ``extra/<name>`` and
        ``state/<param>/<key>``."""
        d = {"optimizer": np.array(type(self).__name__), "step": np.array(self._step, np.int64)}
        for k, v in self._extra_state().items():
            d[f"extra/{k}"] = np.array(v, np.float64)
        for name in self._names:
            for key, a in self.state[name].items():
                d[f"state/{name}/{key}"] = np.array(to_host(a), copy=True)  # not live state
        return d

    def load_state_dict(self, d) -> None:
        """Restore a :meth:`state_dict` (or the ``np.load`` of its ``np.savez``). Everything
        is checked before anything is written; the continuation is bit-identical."""
        d = dict(d)
        kind = str(np.asarray(d.get("optimizer", "")))
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is for {kind or 'an unknown optimizer'!r}, not "
                             f"{type(self).__name__}")
        step = np.asarray(d.get("step", -1))
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"state_dict step must be an integer >= 0, got {step!r}")
        expected = {"optimizer", "step", *(f"extra/{k}" for k in self._extra_state())}
        values = {}  # read once: device values too (CuPy refuses np.asarray)
        for name, shape, dtype in zip(self._names, self._shapes, self._dtypes):
            for key, _ in self._spec:
                k = f"state/{name}/{key}"
                expected.add(k)
                if k not in d:
                    raise ValueError(f"state_dict has no {k!r}")
                a = values[k] = to_host(d[k])
                if a.shape != tuple(shape) or a.dtype != dtype:
                    raise ValueError(f"state_dict {k!r} is {a.dtype}{list(a.shape)}, expected "
                                     f"{np.dtype(dtype)}{list(shape)}")
        for k in d:
            if k not in expected:
                raise ValueError(f"state_dict has unexpected entry {k!r}")
        live = [st for s in self._slots for st in s.state.values()]
        if _arrays.first_overlap([*live, *values.values()]) is not None:
            values = {k: np.array(v) for k, v in values.items()}  # this optimizer's own
            # state (its state_dict, keys swapped): read before any is written
        extra = {}
        for k in self._extra_state():
            if f"extra/{k}" not in d:
                raise ValueError(f"state_dict has no 'extra/{k}'")
            v = to_host(d[f"extra/{k}"])
            if v.shape != () or v.dtype.kind not in "iuf" or not np.isfinite(v):
                raise ValueError(f"state_dict 'extra/{k}' must be one finite number, got {v!r}")
            extra[k] = float(v)
        self._check_extra(extra)
        be = self.backend
        for name in self._names:
            for key, _ in self._spec:
                be.copy_into(be.flat_view(self.state[name][key]),
                             values[f"state/{name}/{key}"])
        self._step = int(step)
        self._load_extra(extra)

    # -- subclass interface ------------------------------------------------------------------
    def _variant(self):
        raise NotImplementedError

    def _scalars(self, lr, t):
        raise NotImplementedError

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        raise NotImplementedError


def _decay_terms(lr, weight_decay, decoupled):
    """(L2 coefficient, decoupled decay factor ``1 − lr·wd``) as PyTorch applies them."""
    if decoupled:
        return 0.0, (1 - lr * weight_decay) if weight_decay != 0 else 1.0
    return weight_decay, 1.0


_COMMON = """
    Common options: ``maximize`` (ascend instead), ``max_grad_norm`` (clip the global L2 norm
    of the gradients, as ``torch.nn.utils.clip_grad_norm_``), ``clip_value`` (clamp each
    gradient element to ±clip_value), ``skip_nonfinite`` (leave everything untouched and
    report ``skipped=True`` when a gradient holds NaN or inf), ``backend`` (default: the
    params' own). ``lr`` may be a schedule: any callable ``step -> lr``.
"""


class SGD(Optimizer):
    __doc__ = """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    ``g ← g + wd·p``; ``buf ← g`` (first step), then ``buf ← μ·buf + (1 − dampening)·g``;
    ``g ← g + μ·buf`` (nesterov) or ``buf``; ``p ← p − lr·g``. With ``momentum=0`` this is
    plain (batch) gradient descent.
    """ + _COMMON

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, **common):
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self._check_combination()
        super().__init__(params, lr, **common)

    def _check_combination(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")

    def _variant(self):
        if self.momentum != 0:
            return rules.sgd_momentum, [("momentum_buffer", 0.0)]
        return rules.sgd, []

    def _scalars(self, lr, t):
        if self.momentum == 0:
            return (self.weight_decay, lr)
        return (self.weight_decay, lr, self.momentum, 1 - self.dampening,
                1.0 if t == 1 else 0.0, 1.0 if self.nesterov else 0.0)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.sgd(p, g, state.get("momentum_buffer"), lr=lr, momentum=self.momentum,
                dampening=self.dampening, weight_decay=self.weight_decay,
                nesterov=self.nesterov, t=t, gbuf=gbuf, tmp=tmp)


class Adagrad(Optimizer):
    __doc__ = """Adagrad, as ``torch.optim.Adagrad``.

    ``clr = lr/(1 + (t − 1)·lr_decay)``; ``g ← g + wd·p``; ``sum ← sum + g²``;
    ``p ← p − clr·g/(√sum + eps)``; ``sum`` starts at ``initial_accumulator_value``.
    """ + _COMMON

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, **common):
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps
        super().__init__(params, lr, **common)

    def _variant(self):
        return rules.adagrad, [("sum", self.initial_accumulator_value)]

    def _scalars(self, lr, t):
        return (self.weight_decay, lr / (1 + (t - 1) * self.lr_decay), self.eps)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.adagrad(p, g, state["sum"], lr=lr, lr_decay=self.lr_decay,
                    weight_decay=self.weight_decay, eps=self.eps, t=t, gbuf=gbuf, tmp=tmp)


class RMSprop(Optimizer):
    __doc__ = """RMSprop, as ``torch.optim.RMSprop`` (no bias correction).

    ``v ← α·v + (1 − α)·g²``; centered: ``ga ← lerp(ga, g, 1 − α)``,
    ``avg = √(v − ga²) + eps``, else ``avg = √v + eps``; with momentum μ:
    ``buf ← μ·buf + g/avg``, ``p ← p − lr·buf``, else ``p ← p − lr·g/avg``.
    """ + _COMMON

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, **common):
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.centered = centered
        super().__init__(params, lr, **common)

    def _variant(self):
        spec = [("square_avg", 0.0)]
        if self.centered:
            spec.append(("grad_avg", 0.0))
        if self.momentum > 0:
            spec.append(("momentum_buffer", 0.0))
        rule = {(False, False): rules.rmsprop, (True, False): rules.rmsprop_centered,
                (False, True): rules.rmsprop_momentum,
                (True, True): rules.rmsprop_centered_momentum}[self.centered, self.momentum > 0]
        return rule, spec

    def _scalars(self, lr, t):
        s = (self.weight_decay, self.alpha, 1 - self.alpha, self.eps, lr)
        return s + (self.momentum,) if self.momentum > 0 else s

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.rmsprop(p, g, state["square_avg"], state.get("grad_avg"),
                    state.get("momentum_buffer"), lr=lr, alpha=self.alpha, eps=self.eps,
                    weight_decay=self.weight_decay, momentum=self.momentum, gbuf=gbuf, tmp=tmp)


class _AdamBase(Optimizer):
    """Betas, eps, weight decay (coupled or decoupled) shared by the Adam family."""

    def __init__(self, params, lr, betas, eps, weight_decay, common):
        """A subclass with coupled or decoupled decay sets ``decoupled_weight_decay``
        first (True for AdamW's decay, False for Adam's L2 term); Adamax has no such
        setting, and setting it raises."""
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        super().__init__(params, lr, **common)

    def _moments(self, lr):
        """The scalars every Adam-like rule starts with: wd, decay, 1 − β1, β2, 1 − β2."""
        wd, decay = _decay_terms(lr, self.weight_decay, self.decoupled_weight_decay)
        beta1, beta2 = self.betas
        return (wd, decay, 1 - beta1, beta2, 1 - beta2)


class Adam(_AdamBase):
    __doc__ = """Adam (Kingma & Ba 2015), as ``torch.optim.Adam``.

    ``g ← g + wd·p``; ``m ← lerp(m, g, 1 − β1)``; ``v ← β2·v + (1 − β2)·g²``;
    ``vmax ← max(vmax, v)`` (amsgrad); ``p ← p − (lr/bc1)·m/(√v/√bc2 + eps)`` with
    ``bc = 1 − β^t``. ``decoupled_weight_decay=True`` is AdamW.
    """ + _COMMON

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled_weight_decay=False, **common):
        self.amsgrad = amsgrad
        self.decoupled_weight_decay = decoupled_weight_decay
        super().__init__(params, lr, betas, eps, weight_decay, common)

    def _variant(self):
        spec = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
        if self.amsgrad:
            return rules.adam_amsgrad, [*spec, ("max_exp_avg_sq", 0.0)]
        return rules.adam, spec

    def _scalars(self, lr, t):
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        return (*self._moments(lr), bias_correction2_sqrt, step_size, self.eps)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.adam(p, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                 lr=lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                 decoupled=self.decoupled_weight_decay, t=t, gbuf=gbuf, tmp=tmp)


class AdamW(Adam):
    __doc__ = """AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: Adam with
    decoupled weight decay ``p ← p·(1 − lr·wd)`` applied before the update.
    """ + _COMMON

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, **common):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, True, **common)


class NAdam(_AdamBase):
    __doc__ = """NAdam (Dozat 2016), as ``torch.optim.NAdam``.

    ``μ_t = β1·(1 − 0.5·0.96^(t·ψ))``; ``Π ← Π·μ_t``; m, v as Adam;
    ``p ← p − lr·(1 − μ_t)/(1 − Π)·g/d − lr·μ_{t+1}/(1 − Π·μ_{t+1})·m/d`` with
    ``d = √(v/bc2) + eps``. The product Π is kept on the host in float64.
    """ + _COMMON

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, **common):
        self.momentum_decay = momentum_decay
        self.mu_product = 1.0
        self._next_product = 1.0
        self.decoupled_weight_decay = decoupled_weight_decay
        super().__init__(params, lr, betas, eps, weight_decay, common)

    def _variant(self):
        return rules.nadam, [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]

    def _scalars(self, lr, t):
        beta1, beta2 = self.betas
        bias_correction2 = 1 - beta2**t
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * self.momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * self.momentum_decay)))
        mu_product = self.mu_product * mu
        mu_product_next = mu_product * mu_next
        self._next_product = mu_product
        coef_g = -lr * (1.0 - mu) / (1.0 - mu_product)
        coef_m = (-lr * mu_next) / (1.0 - mu_product_next)
        return (*self._moments(lr), bias_correction2, self.eps, coef_g, coef_m)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        self._next_product = ref.nadam(
            p, g, state["exp_avg"], state["exp_avg_sq"], lr=lr, betas=self.betas, eps=self.eps,
            weight_decay=self.weight_decay, decoupled=self.decoupled_weight_decay,
            momentum_decay=self.momentum_decay, t=t, mu_product=self.mu_product, gbuf=gbuf,
            tmp=tmp)

    def _advance(self):
        self.mu_product = self._next_product

    def _extra_state(self):
        return {"mu_product": self.mu_product}

    def _check_extra(self, values):
        if not 0 <= values["mu_product"] <= 1:  # a product of factors in [0, 1]
            raise ValueError(f"state_dict 'extra/mu_product' must be in [0, 1], got "
                             f"{values['mu_product']}")

    def _load_extra(self, values):
        self.mu_product = values["mu_product"]


class RAdam(_AdamBase):
    __doc__ = """RAdam (Liu et al. 2020), as ``torch.optim.RAdam``.

    m, v as Adam; ``ρ∞ = 2/(1 − β2) − 1``, ``ρ_t = ρ∞ − 2t·β2^t/bc2``; if ``ρ_t > 5``:
    ``p ← p − lr·(m/bc1)·r·√bc2/(√v + eps)`` with the rectification ``r``, else
    ``p ← p − lr·m/bc1``.
    """ + _COMMON

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, **common):
        self.decoupled_weight_decay = decoupled_weight_decay
        super().__init__(params, lr, betas, eps, weight_decay, common)

    def _variant(self):
        return rules.radam, [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]

    def _scalars(self, lr, t):
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / bias_correction2
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            rectify = 1.0
        else:
            rect, rectify = 0.0, 0.0
        return (*self._moments(lr), bias_correction1, lr, bias_correction2**0.5, self.eps,
                rect, rectify)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.radam(p, g, state["exp_avg"], state["exp_avg_sq"], lr=lr, betas=self.betas,
                  eps=self.eps, weight_decay=self.weight_decay,
                  decoupled=self.decoupled_weight_decay, t=t, gbuf=gbuf, tmp=tmp)


class Adamax(_AdamBase):
    __doc__ = """Adamax (Kingma & Ba 2015, §7), as ``torch.optim.Adamax``.

    ``m ← lerp(m, g, 1 − β1)``; ``u ← max(β2·u, |g| + eps)``; ``p ← p − (lr/bc1)·m/u``.
    """ + _COMMON

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 **common):
        super().__init__(params, lr, betas, eps, weight_decay, common)

    def _variant(self):
        return rules.adamax, [("exp_avg", 0.0), ("exp_inf", 0.0)]

    def _scalars(self, lr, t):
        beta1, beta2 = self.betas
        bias_correction = 1 - beta1**t
        clr = lr / bias_correction
        return (self.weight_decay, 1 - beta1, beta2, self.eps, clr)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.adamax(p, g, state["exp_avg"], state["exp_inf"], lr=lr, betas=self.betas,
                   eps=self.eps, weight_decay=self.weight_decay, t=t, gbuf=gbuf, tmp=tmp)


class Lion(Optimizer):
    __doc__ = """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as in
    optax and lion-pytorch.

    ``p ← p·(1 − lr·wd)``; ``p ← p − lr·sign(β1·m + (1 − β1)·g)``; ``m ← β2·m + (1 − β2)·g``.
    """ + _COMMON

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, **common):
        self.betas = betas
        self.weight_decay = weight_decay
        super().__init__(params, lr, **common)

    def _variant(self):
        return rules.lion, [("exp_avg", 0.0)]

    def _scalars(self, lr, t):
        beta1, beta2 = self.betas
        _, decay = _decay_terms(lr, self.weight_decay, True)
        return (decay, lr, beta1, 1 - beta1, beta2, 1 - beta2)

    def _reference(self, p, g, state, lr, t, gbuf, tmp):
        ref.lion(p, g, state["exp_avg"], lr=lr, betas=self.betas,
                 weight_decay=self.weight_decay, gbuf=gbuf, tmp=tmp)


OPTIMIZERS = {cls.__name__: cls for cls in
              (SGD, Adagrad, RMSprop, Adam, AdamW, NAdam, RAdam, Adamax, Lion)}
