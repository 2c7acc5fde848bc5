"""Losses with forward and backward on every backend, with PyTorch's semantics.

* :func:`cross_entropy` — from logits ``(N, C)``, one fused stable pass per row
  (log-softmax + NLL + gradient); integer labels ``(N,)`` or probability targets
  ``(N, C)``; ``label_smoothing``; with labels, class ``weight`` and ``ignore_index``.
* :func:`nll_loss` — of log-probabilities ``(N, C)`` (``log_softmax``'s output) at integer
  labels: cross-entropy in two steps, as a lesson takes it.
* :func:`binary_cross_entropy_with_logits` — elementwise, stable for any logit.
* :func:`binary_cross_entropy` — of probabilities (a sigmoid's output), its logs clamped at
  -100 as torch's.
* :func:`mse` — mean squared error.

Reductions ``"mean"`` (the default; cross-entropy averages over the batch, the elementwise
losses over every element, as torch does), ``"sum"`` and ``"none"``. ``mean``/``sum``
return a Python float; ``none`` returns an array on the input's backend. Each ``NAME``
has a ``NAME_backward(input, target, grad_output=1.0, ...)`` and :func:`get_loss` gives a
:class:`Loss` whose :meth:`Loss.value_and_grad` computes both in one pass (the trainer's
path).
"""

from __future__ import annotations

import math

import numpy as np

from fastgd import _arrays
from fastgd._checks import in_range
from fastgd.backends import resolve, to_device, to_host
from fastgd.nn import formulas as fm
from fastgd.nn import reference as ref
from fastgd.nn._profile import PROFILE

REDUCTIONS = ("mean", "sum", "none")


def _array_on(be, values, dtype):
    """``values`` as a flat array of ``dtype`` on ``be``'s device."""
    a = np.ascontiguousarray(np.asarray(values, dtype=dtype).reshape(-1))
    return to_device(a) if be.name == "cuda" else a


def _parts(value: float, dtype) -> tuple:
    """``value`` as hi + lo of ``dtype``, for a row function that adds them in its wide type."""
    hi = np.dtype(dtype).type(value)
    return hi, float(value) - float(hi)


def check_probabilities(a, what, hint=""):
    """Host values in [0, 1] (NaN fails, as in torch), checked in one pass; device arrays
    are not read back for it."""
    if type(a) is np.ndarray and a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (0 <= lo and hi <= 1):
            raise ValueError(f"binary_cross_entropy takes {what} in [0, 1], got values in "
                             f"[{lo}, {hi}]{hint}")


def _times(be, a, b):
    """``a *= b`` for 1-D arrays of one backend."""
    if be.name == "numpy":
        a *= b
    elif a.size:
        be.grid(fm.mul, [a.reshape(1, -1), b.reshape(1, -1)], outs=[a.reshape(1, -1)])


def _class_weights(weight):
    """A loss's ``weight`` option: a host float64 vector of one weight per class, or None."""
    if weight is None:
        return None
    if hasattr(weight, "detach"):  # a torch tensor, which may require grad
        weight = weight.detach().cpu().numpy()
    host = to_host(weight) if _arrays.is_device_array(weight) else weight
    try:
        w = np.asarray(host)
        if w.dtype.kind not in "iuf":  # None, strings, complex...
            raise TypeError
        w = w.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"weight must be one real number per class, got {weight!r}") from None
    if w.ndim != 1:
        raise ValueError(f"weight must be one weight per class (C,), got shape {w.shape}")
    return w


def _is_integer(a):
    return _arrays.dtype_of(a).kind in "iu"  # np.issubdtype costs ~1.5 us a call


class Loss:
    """One loss with its options; ``value_and_grad(input, target)`` is the fused path."""

    def __init__(self, name, reduction="mean", **options):
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        allowed = {"cross_entropy": {"label_smoothing", "weight", "ignore_index"},
                   "nll_loss": {"weight", "ignore_index"}}.get(name, set())
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"{name} has no option(s) {sorted(unknown)}")
        smoothing = in_range("label_smoothing", options.get("label_smoothing", 0.0), 0, 1)
        self.name, self.reduction, self.smoothing = name, reduction, smoothing
        self.weight = _class_weights(options.get("weight"))
        self.ignore_index = options.get("ignore_index")
        if self.ignore_index is not None and not _arrays.is_int(self.ignore_index):
            raise ValueError(f"ignore_index must be an int, got {self.ignore_index!r}")
        if self.weight is not None and smoothing:
            raise ValueError("cross_entropy's weight with label_smoothing is not supported "
                             "(torch weights the smoothing term per class too)")
        # class weights or an ignored label: the loss of each row weighted (:meth:`_weighted`)
        self.weighted = self.weight is not None or self.ignore_index is not None
        self.classification = name != "mse"
        self.rowwise = name in ROWWISE  # a loss per row of (N, C) input
        # binary_cross_entropy's input must be probabilities: the trainer checks each batch's
        # (a model without a sigmoid output had "diverged", NaN, without saying why)
        self.checks_outputs = name == "binary_cross_entropy"

    def __repr__(self):
        return f"Loss({self.name!r}, reduction={self.reduction!r})"

    # -- checks ---------------------------------------------------------------------------------
    def check(self, x, target):
        """Shapes, dtypes and label range; raises before anything is computed."""
        x_shape, t_shape = _arrays.shape_of(x), _arrays.shape_of(target)
        if self.rowwise:
            _arrays.check_float(input=x)
            what = "logits" if self.name == "cross_entropy" else "log-probabilities"
            if len(x_shape) != 2:
                raise ValueError(f"{self.name} input must be (N, C) {what} (or (C,) for one "
                                 f"sample), got {x_shape}")
            if self.name == "nll_loss" and not _is_integer(target):
                raise TypeError(f"nll_loss needs integer class labels, got "
                                f"{_arrays.dtype_of(target)} (probability targets: "
                                f"cross_entropy)")
            if _is_integer(target):
                if t_shape != x_shape[:1]:
                    raise ValueError(
                        f"{self.name} labels must have shape {x_shape[:1]} for {what} "
                        f"{x_shape}, got {t_shape}"
                    )
                if self.weight is not None and self.weight.size != x_shape[1]:
                    raise ValueError(f"weight has {self.weight.size} classes, the input "
                                     f"{x_shape[1]}")
                host = self.counted(to_host(target))
                if host.size:
                    lo, hi = int(host.min()), int(host.max())
                    if lo < 0 or hi >= x_shape[1]:
                        raise ValueError(
                            f"labels must be in [0, {x_shape[1]}), got values in [{lo}, {hi}]"
                        )
                return
        if _is_integer(target) and self.name != "cross_entropy":
            raise TypeError(f"{self.name} needs float targets, got {_arrays.dtype_of(target)}")
        if t_shape == x_shape:
            _arrays.check_float(input=x, target=target)
            if self.name == "binary_cross_entropy":
                check_probabilities(x, "probabilities", " (logits: "
                                     "binary_cross_entropy_with_logits)")
                check_probabilities(target, "targets")
        else:  # the shapes first: float64 labels got "mixed dtypes", without the hint
            hint = ""
            if self.name == "cross_entropy" and t_shape == x_shape[:1]:
                hint = ("; class labels must be integers (float targets are probabilities "
                        "of the input's shape)")
            raise ValueError(f"{self.name}: input shape {x_shape} and target shape "
                             f"{t_shape} do not match{hint}")

    # -- compute ------------------------------------------------------------------------------
    def value_and_grad(self, x, target, grad_output=1.0, backend=None, check=True):
        """``(loss, d loss/d input)``; the loss a float (array for ``reduction="none"``).
        cross_entropy also takes one sample unbatched, as torch: logits ``(C,)`` with a 0-d
        label or ``(C,)`` probabilities."""
        return self._evaluate(x, target, grad_output, backend, check, True)

    def value(self, x, target, backend=None, check=True):
        """The loss alone. The kernels compute no gradient for it (its array doubled the
        memory a value-only call took; cross-entropy's, one exponential more per element);
        the NumPy backend's textbook formulas compute one and drop it."""
        return self._evaluate(x, target, 1.0, backend, check, False)[0]

    __call__ = value

    def _evaluate(self, x, target, grad_output, backend, check, with_grad):
        """``(loss, gradient or None)``: :meth:`value_and_grad`'s work, the gradient only
        ``with_grad``."""
        x, target = _arrays.as_array(x), _arrays.as_array(target)
        if self.rowwise and len(_arrays.shape_of(x)) == 1:
            if self.name == "nll_loss" and not _is_integer(target):
                raise TypeError(f"nll_loss needs an integer class label, got "
                                f"{_arrays.dtype_of(target)}")
            t_shape = _arrays.shape_of(target)
            if t_shape != (() if _is_integer(target) else _arrays.shape_of(x)):
                ce = self.name == "cross_entropy"
                what = "logits" if ce else "log-probabilities"
                takes = "a 0-d label" + (" or probabilities of the logits' shape" if ce else "")
                raise ValueError(f"{self.name} of one sample, {what} {_arrays.shape_of(x)}, "
                                 f"takes {takes}, got a target of shape {t_shape}")
            batch = (1, *t_shape)
            loss, grad = self._evaluate(x.reshape(1, -1), target.reshape(batch),
                                        grad_output, backend, check, with_grad)
            return ((loss.reshape(()) if self.reduction == "none" else loss),
                    None if grad is None else grad.reshape(-1))
        be = resolve(backend, x, target)
        if check:
            self.check(x, target)
        if self.weighted and not _is_integer(target):
            raise ValueError(f"{self.name}'s weight and ignore_index take class labels, not "
                             f"probability targets")
        t0 = PROFILE.mark()
        x = be.contiguous(x)
        target = be.contiguous(target)
        if self.weighted:
            out = self._weighted(be, x, target, grad_output, with_grad)
        else:
            out = self._compute(be, x, target, grad_output, with_grad)
        PROFILE.done("loss", t0)
        return out

    def _scale(self, shape, grad_output, be, dtype):
        """The gradient factor: per row (cross-entropy) or a scalar, and what reduces; an
        array of them in the input's ``dtype`` (as torch's backward asks: a float64 1e300
        for float32 logits became inf gradients)."""
        go = grad_output if isinstance(grad_output, float) else _arrays.as_array(grad_output)
        if isinstance(go, float) or _arrays.shape_of(go) == ():  # one number, host or device
            factor = float(to_host(go)) if _arrays.is_device_array(go) else float(go)
            return factor / max(self._count(shape), 1) if self.reduction == "mean" else factor
        if self.reduction != "none":
            raise ValueError(f"grad_output of reduction={self.reduction!r} is one number (the "
                             f"loss is), got shape {_arrays.shape_of(go)}")
        expected = shape[:1] if self.rowwise else shape
        if _arrays.shape_of(go) != tuple(expected):
            raise ValueError(f"grad_output must have shape {tuple(expected)} for "
                             f"reduction='none', got {_arrays.shape_of(go)}")
        if not be.owns(go):
            raise TypeError(f"grad_output is on another device than the loss's input; copy "
                            f"it with {be.transfer_hint}")
        if _arrays.dtype_of(go) != dtype:
            raise TypeError(f"grad_output is {_arrays.dtype_of(go)}, the input {dtype}: "
                            f"pass it as {dtype}")
        return go

    def _weighted(self, be, x, target, grad_output, with_grad):
        """The loss of row i times w_i = weight[label_i] (1 without weights; 0 where the label
        is ``ignore_index``), as torch's: the mean divides by Σ w_i. Computed as the
        unweighted per-row loss with a per-row gradient scale (the ignored rows' labels
        read as class 0), then weighted on the host (the loss's total) or by a kernel
        (``reduction="none"``)."""
        w, ignored, safe = self.row_weights(target)
        total = float(np.sum(w))
        denominator = total if self.reduction == "mean" else 1.0
        go = grad_output if isinstance(grad_output, float) else _arrays.as_array(grad_output)
        with np.errstate(divide="ignore", invalid="ignore"):  # kept rows of weight 0: NaN
            rows = np.where(ignored, 0.0, w / denominator)  # (torch's), ignored ones 0
        if isinstance(go, float) or _arrays.shape_of(go) == ():
            factor = float(to_host(go)) if _arrays.is_device_array(go) else float(go)
            scale = _array_on(be, rows * factor, _arrays.dtype_of(x))
        else:
            self._scale(_arrays.shape_of(x), go, be, _arrays.dtype_of(x))  # its checks
            scale = _array_on(be, rows, _arrays.dtype_of(x))
            _times(be, scale, be.contiguous(go))
        plain = Loss(self.name, "none",
                     **({"label_smoothing": self.smoothing} if self.smoothing else {}))
        safe_labels = to_device(safe) if be.name == "cuda" else safe
        loss, grad = plain._compute(be, x, safe_labels, scale, with_grad)
        # an ignored row adds 0 even where its loss is inf or NaN (its logits' -inf), as in
        # torch; a kept row of weight 0 and loss inf adds 0·inf = NaN, as in torch
        if self.reduction == "none":
            if be.name == "numpy":
                with np.errstate(invalid="ignore"):
                    loss[...] = np.where(ignored, 0, loss * w)
            elif loss.size:
                vectors = [_array_on(be, v, _arrays.dtype_of(x)) for v in (w, ~ignored)]
                be.grid(fm.weigh, [loss.reshape(1, -1)], vectors, outs=[loss.reshape(1, -1)])
            return loss, grad
        with np.errstate(invalid="ignore"):
            value = float(np.sum(np.where(ignored, 0, to_host(loss).astype(np.float64) * w)))
        return (value / total if total else math.nan) if self.reduction == "mean" else value, grad

    def counted(self, labels):
        """Host ``labels`` without the ignored ones (``ignore_index``): those in range."""
        return labels if self.ignore_index is None else labels[labels != self.ignore_index]

    def row_weights(self, target):
        """``(w, ignored, labels)`` on the host for integer labels ``target``: each row's
        weight (its class's, 1 without weights, 0 where ignored), whether it is ignored,
        and the labels with the ignored ones read as class 0."""
        labels = to_host(target).astype(np.int64)
        ignored = (labels == self.ignore_index if self.ignore_index is not None
                   else np.zeros(labels.shape, bool))
        safe = np.where(ignored, 0, labels)
        w = self.weight[safe] if self.weight is not None else np.ones(labels.shape)
        return np.where(ignored, 0.0, w), ignored, safe

    def _compute(self, be, x, target, grad_output, with_grad=True):
        shape = _arrays.shape_of(x)
        dtype = _arrays.dtype_of(x)
        scale = self._scale(shape, grad_output, be, dtype)
        if be.name == "numpy":  # the textbook formulas compute both
            loss, grad = self._numpy(x, target)
            if with_grad:
                rows = self.rowwise and not isinstance(scale, float)
                with np.errstate(over="ignore"):  # past float32's range: inf, as the kernels
                    grad = (grad * (scale[:, None] if rows else scale)).astype(dtype)
            else:
                grad = None
        elif self.name == "cross_entropy":
            loss, grad = self._cross_entropy(be, x, target, scale, dtype, with_grad)
        elif self.name == "nll_loss":
            loss, grad = self._nll(be, x, target, scale, dtype, with_grad)
        else:
            loss, grad = self._elementwise(be, x, target, scale, dtype, with_grad)
        if self.reduction == "none":
            return loss, grad
        total = float(np.sum(to_host(loss), dtype=np.float64))
        if self.reduction == "mean":  # of nothing: NaN, as in torch and NumPy
            count = self._count(shape)
            total = total / count if count else math.nan
        return total, grad

    def _numpy(self, x, target):
        """The NumPy backend: the float64 reference (``nn.reference``), its loss in x's dtype
        (as the activations' NumPy backend computes float32 in float64)."""
        dtype = x.dtype
        x = x.astype(np.float64, copy=False)
        if not _is_integer(target):
            target = np.asarray(target, np.float64)
        if self.name == "cross_entropy":
            loss, grad = ref.cross_entropy(x, target, self.smoothing)
        elif self.name == "nll_loss":
            loss, grad = ref.nll(x, target)
        elif self.name == "mse":
            loss, grad = ref.mse(x, target)
        elif self.name == "binary_cross_entropy":
            loss, grad = ref.binary_cross_entropy(x, target)
        else:
            loss, grad = ref.binary_cross_entropy_with_logits(x, target)
        with np.errstate(over="ignore"):  # a loss past float32's range: inf, as the kernels
            return loss.astype(dtype), grad

    def _cross_entropy(self, be, x, target, scale, dtype, with_grad=True):
        """Rows of logits: the loss of each, and ``with_grad`` the gradient (without it, one
        exponential per element instead of two)."""
        n = _arrays.shape_of(x)[0]
        loss = be.empty((n,), dtype)
        grad = gscale = None
        if with_grad:  # the scale as an array only for it (on a GPU, a copy to the device)
            grad = be.empty(_arrays.shape_of(x), dtype)
            gscale = _array_on(be, [scale], dtype) if isinstance(scale, float) else scale
        if _is_integer(target):
            # labels reach the row function in the compute type: exact in float32 up to 2^24
            compute = dtype if _arrays.shape_of(x)[1] <= 1 << 24 else np.dtype(np.float64)
            fn, arrays, per_row = ((fm.cross_entropy_labels, [x, grad], [target, gscale])
                                   if with_grad else
                                   (fm.cross_entropy_labels_loss, [x], [target]))
        else:
            compute = dtype
            fn, arrays, per_row = ((fm.cross_entropy_probs, [x, target, grad], [gscale])
                                   if with_grad else
                                   (fm.cross_entropy_probs_loss, [x, target], []))
        be.rows(fn, arrays, per_row=per_row, scalars=_parts(self.smoothing, compute),
                result=loss, compute=compute)
        return loss, grad

    def _nll(self, be, x, target, scale, dtype, with_grad=True):
        """Rows of log-probabilities: the loss of each, and ``with_grad`` the gradient."""
        n = _arrays.shape_of(x)[0]
        loss = be.empty((n,), dtype)
        compute = dtype if _arrays.shape_of(x)[1] <= 1 << 24 else np.dtype(np.float64)
        if with_grad:
            grad = be.empty(_arrays.shape_of(x), dtype)
            gscale = _array_on(be, [scale], dtype) if isinstance(scale, float) else scale
            be.rows(fm.nll_labels, [x, grad], per_row=[target, gscale], result=loss,
                    compute=compute)
            return loss, grad
        be.rows(fm.nll_labels_loss, [x], per_row=[target], result=loss, compute=compute)
        return loss, None

    def _elementwise(self, be, x, target, scale, dtype, with_grad=True):
        shape = _arrays.shape_of(x)
        rows = _rows_of_elementwise(shape)
        cols = math.prod(shape) // rows if rows else 0
        x2, t2 = x.reshape(rows, cols), target.reshape(rows, cols)
        loss = be.empty((rows, cols), dtype)
        # BCE in float64: its gradient sigmoid(x) - t cancels where the target is near the
        # prediction (float32 math: 457 ULP off); MSE's x - t rounds once
        fused, alone = ELEMENTWISE[self.name]
        compute = dtype if self.name == "mse" else np.float64
        grad = None
        if with_grad:
            grad = be.empty((rows, cols), dtype)
            factor = scale if isinstance(scale, float) else 1.0
            be.grid(fused, [x2, t2], outs=[loss, grad], scalars=(factor,), compute=compute)
            if not isinstance(scale, float):
                be.grid(fm.mul, [grad, be.contiguous(scale).reshape(rows, cols)], outs=[grad])
            grad = grad.reshape(shape)
        else:
            be.grid(alone, [x2, t2], outs=[loss], compute=compute)
        if self.reduction != "none":
            # summed in float64: a float32 sum of one long row (an image batch flattened)
            # lost 4 digits
            partial = be.empty((rows,), np.float64)
            be.rows(fm.row_sum, [loss], result=partial, compute=np.float64)
            return partial, grad
        return loss.reshape(shape), grad

    def _count(self, shape):
        return shape[0] if self.rowwise else math.prod(shape)


def _rows_of_elementwise(shape) -> int:
    """The rows an elementwise loss of ``shape`` runs as: its own rows, or for short rows
    ((N,) or (N, 1) targets: rows of one, each a loop and a float64 sum) rows of a length
    in [256, 4096] that divides the size (the math is elementwise, the loss a total, and
    the rows run in parallel), else one row."""
    rows = shape[0] if shape else 1
    total = math.prod(shape)
    if rows and total // rows < 256:
        lengths = _ROW_LENGTHS[total % _ROW_LENGTHS == 0]
        rows = total // int(lengths[0]) if lengths.size else 1
    return rows


_ROW_LENGTHS = np.arange(4096, 255, -1)


LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
          "binary_cross_entropy", "mse")
ROWWISE = ("cross_entropy", "nll_loss")
#: elementwise loss -> (its loss and gradient, its loss alone): grid functions
ELEMENTWISE = {"mse": (fm.mse, fm.mse_loss),
               "binary_cross_entropy_with_logits": (fm.bce_with_logits, fm.bce_with_logits_loss),
               "binary_cross_entropy": (fm.bce, fm.bce_loss)}


def get_loss(name, reduction="mean", **options) -> Loss:
    """A :class:`Loss` by name (``ValueError`` for unknown names or options)."""
    if isinstance(name, Loss):
        if reduction != "mean" or options:
            raise ValueError(f"reduction and options go with a loss name, not with {name!r}")
        return name
    return Loss(name, reduction, **options)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0, weight=None,
                  ignore_index=None, backend=None):
    """Cross-entropy of logits ``input`` (N, C) against labels (N,) or probabilities (N, C);
    with labels, ``weight`` (one per class: the mean is over the rows' weights) and
    ``ignore_index`` (rows of that label count for nothing) as torch's (off by default:
    a label of torch's default, -100, is refused)."""
    loss = Loss("cross_entropy", reduction, label_smoothing=label_smoothing, weight=weight,
                ignore_index=ignore_index)
    return loss.value(input, target, backend=backend)


def cross_entropy_backward(input, target, grad_output=1.0, reduction="mean",
                           label_smoothing=0.0, weight=None, ignore_index=None, backend=None):
    """d cross_entropy / d input, times ``grad_output`` (per row for ``reduction='none'``)."""
    loss = Loss("cross_entropy", reduction, label_smoothing=label_smoothing, weight=weight,
                ignore_index=ignore_index)
    return loss.value_and_grad(input, target, grad_output, backend=backend)[1]


def binary_cross_entropy_with_logits(input, target, reduction="mean", backend=None):
    """``max(x, 0) - x·t + log(1 + exp(-|x|))`` elementwise, then reduced."""
    loss = Loss("binary_cross_entropy_with_logits", reduction)
    return loss.value(input, target, backend=backend)


def binary_cross_entropy_with_logits_backward(input, target, grad_output=1.0,
                                              reduction="mean", backend=None):
    """``(sigmoid(x) - t)·grad_output`` (divided by the element count for ``mean``)."""
    loss = Loss("binary_cross_entropy_with_logits", reduction)
    return loss.value_and_grad(input, target, grad_output, backend=backend)[1]


def nll_loss(input, target, reduction="mean", weight=None, ignore_index=None, backend=None):
    """``-input[i, target[i]]`` of log-probabilities ``input`` (N, C), then reduced (the mean
    over the batch); ``weight`` and ``ignore_index`` as :func:`cross_entropy`'s."""
    loss = Loss("nll_loss", reduction, weight=weight, ignore_index=ignore_index)
    return loss.value(input, target, backend=backend)


def nll_loss_backward(input, target, grad_output=1.0, reduction="mean", weight=None,
                      ignore_index=None, backend=None):
    """``-grad_output`` at each row's label, 0 elsewhere (divided by N for ``mean``)."""
    loss = Loss("nll_loss", reduction, weight=weight, ignore_index=ignore_index)
    return loss.value_and_grad(input, target, grad_output, backend=backend)[1]


def binary_cross_entropy(input, target, reduction="mean", backend=None):
    """``-(t·log p + (1 - t)·log(1 - p))`` of probabilities ``input`` in [0, 1], each log
    clamped at -100 (torch's), elementwise, then reduced."""
    return Loss("binary_cross_entropy", reduction).value(input, target, backend=backend)


def binary_cross_entropy_backward(input, target, grad_output=1.0, reduction="mean",
                                  backend=None):
    """``(p - t)/max(p·(1 - p), 1e-12)·grad_output`` (divided by the element count for
    ``mean``)."""
    loss = Loss("binary_cross_entropy", reduction)
    return loss.value_and_grad(input, target, grad_output, backend=backend)[1]


def mse(input, target, reduction="mean", backend=None):
    """``(x - t)²`` elementwise, then reduced."""
    return Loss("mse", reduction).value(input, target, backend=backend)


def mse_backward(input, target, grad_output=1.0, reduction="mean", backend=None):
    """``2·(x - t)·grad_output`` (divided by the element count for ``mean``)."""
    return Loss("mse", reduction).value_and_grad(input, target, grad_output, backend=backend)[1]
