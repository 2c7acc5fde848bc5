"""``train``: full-batch, stochastic or mini-batch gradient descent with a history record.

The optimizer is any object with ``step(grads)`` that owns the model's parameter arrays
(``fastgd.Adam(model.params, lr=...)``): after each backward the trainer calls
``optimizer.step(model.grads)`` — a dict with the keys of ``model.params`` — and the
optimizer updates the parameters in place. ``step`` may return an info record with
``lr``, ``grad_norm`` and ``skipped`` (fastgd's optimizers do); they are recorded.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from fastgd import _arrays
from fastgd._checks import count
from fastgd.backends import to_host
from fastgd.nn._profile import PROFILE
from fastgd.nn.datasets import Dataset
from fastgd.nn.layers import array_module, new_workspaces_dropped, widths
from fastgd.nn.losses import Loss, check_probabilities, get_loss

MODES = ("batch", "sgd", "minibatch")


@dataclass
class History:
    """What happened in each epoch of :func:`train` (lists indexed by epoch).

    ``loss`` is the mean training loss over the epoch's steps; ``test_*`` are measured on
    the held-out split after the epoch (NaN without one); ``train_accuracy`` and
    ``dead_relu`` (the fraction of hidden ReLU/leaky-ReLU units whose input is ≤ 0 for every
    one of up to ``eval_samples`` training samples) after the epoch, in eval mode;
    ``grad_norms`` maps each parameter to the mean L2 norm of its gradient over the
    epoch's steps; ``step_loss`` and ``step_grad_norm`` (the optimizer's global gradient
    norm, when it reports one, else NaN) have one entry per step; ``time`` is the wall
    time of the epoch's steps (evaluation excluded); ``lr`` the learning rate of the
    epoch's last step.
    """

    mode: str
    batch_size: int
    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    dead_relu: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    time: list = field(default_factory=list)
    eval_time: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)
    step_grad_norm: list = field(default_factory=list)
    steps: int = 0
    skipped_steps: int = 0
    diverged: bool = False
    profile: dict | None = None

    def __repr__(self):
        if not self.epoch:
            return f"History({self.mode}, no epochs)"
        return (f"History({self.mode}, {len(self.epoch)} epochs, loss {self.loss[-1]:.4g}, "
                f"test accuracy {self.test_accuracy[-1]:.4g}, "
                f"{sum(self.time):.3g} s{', diverged' if self.diverged else ''})")


def _unpack(data):
    """(x_train, y_train, x_test, y_test) from a Dataset, (x, y) or a 4-tuple."""
    if isinstance(data, Dataset):
        return data.x_train, data.y_train, data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return tuple(data) + ((None, None) if len(data) == 2 else ())
    raise TypeError("data must be a fastgd.nn.datasets.Dataset, (x, y) or "
                    "(x_train, y_train, x_test, y_test)")


def _check_split(model, loss, x, y, what=None):
    """Device, dtype, shape and label checks of one split (``x_what``, ``y_what``), before
    anything runs on it."""
    be = model.be
    xn, yn = (f"x_{what}", f"y_{what}") if what else ("x", "y")
    for name, a in ((xn, x), (yn, y)):
        if not _arrays.is_array(a):
            raise TypeError(f"{name} must be an array (np.asarray for the {be.name} backend), "
                            f"got {type(a).__name__}")
        if not be.owns(a):
            raise TypeError(f"the model runs on the {be.name} backend but {name} lives on "
                            f"another device; move the data with {be.transfer_hint} (or "
                            f"Dataset.to_device())")
    if _arrays.dtype_of(x) != model.dtype:
        raise TypeError(f"{xn} is {_arrays.dtype_of(x)} but the model is {model.dtype}; "
                        f"cast the data (Dataset.astype) or build the model with that dtype")
    xs, ys = _arrays.shape_of(x), _arrays.shape_of(y)
    n_in, n_out = widths(model)
    if len(xs) != 2 or (n_in is not None and xs[1] != n_in):
        raise ValueError(f"{xn} must have shape (N, {n_in or 'features'}) for this model, "
                         f"got {xs}")
    if n_out is None and xs[0]:  # layers of the user's: the width it gives, in eval
        n_out = _arrays.shape_of(model.forward(x[:2], train=False))[-1]
    probabilities = (loss.name == "cross_entropy" and _arrays.dtype_of(y).kind == "f"
                     and len(ys) == 2)
    if probabilities and loss.weighted:
        raise ValueError(f"{loss.name}'s weight and ignore_index take class labels, not the "
                         f"probability targets in {yn}")
    if loss.rowwise and not probabilities:
        if not np.issubdtype(_arrays.dtype_of(y), np.integer):
            also = f" or {model.dtype} probabilities ({xs[0]}, {n_out})" if (
                loss.name == "cross_entropy") else ""
            raise TypeError(f"{loss.name} needs integer labels{also} in {yn}, got "
                            f"{_arrays.dtype_of(y)}{list(ys)}")
        if ys != xs[:1]:
            raise ValueError(f"{yn} must have shape ({xs[0]},) (one label per sample), "
                             f"got {ys}")
        if loss.weight is not None and n_out is not None and loss.weight.size != n_out:
            raise ValueError(f"the loss's weight has {loss.weight.size} classes, the model "
                             f"{n_out} outputs")
        host = loss.counted(to_host(y))
        if host.size and (host.min() < 0 or host.max() >= n_out):
            raise ValueError(f"labels in {yn} must be in [0, {n_out}) for a model with "
                             f"{n_out} outputs, got values in [{host.min()}, {host.max()}]")
    else:
        if _arrays.dtype_of(y) != model.dtype:
            raise TypeError(f"{loss.name} needs {model.dtype} targets in {yn}, got "
                            f"{_arrays.dtype_of(y)}")
        if len(ys) != 2 or ys[0] != xs[0] or (n_out is not None and ys[1] != n_out):
            raise ValueError(f"{yn} must have shape ({xs[0]}, {n_out or 'outputs'}), got "
                             f"{ys}")
        if loss.name == "binary_cross_entropy":
            check_probabilities(to_host(y), f"targets ({yn})")


def _check_optimizer(model, optimizer):
    """An optimizer that updates model.params themselves: one built on another model's (a
    notebook cell rerun for the model, not for the optimizer), on a subset or on copies
    trained nothing or failed after the first forward had changed batch-norm statistics."""
    owned = getattr(optimizer, "params", None)
    if owned is None:  # an optimizer of the user's own, which keeps its params elsewhere
        return
    if not isinstance(owned, Mapping):
        raise ValueError("the optimizer holds a list of params; build it on the dict "
                         "model.params, whose names train() passes the gradients under")
    for name, p in model.params.items():
        if name not in owned:
            raise ValueError(f"the optimizer has no param {name!r}; build it on model.params")
        o = owned[name]
        if o is not p and not (_arrays.shape_of(o) == _arrays.shape_of(p)
                               and _arrays.overlap(o, p) == "same"):
            raise ValueError(f"the optimizer's {name!r} is another array than the model's "
                             f"(built for another model?); build it on model.params")
    extra = next((k for k in owned if k not in model.params), None)
    if extra is not None:
        raise ValueError(f"the optimizer has a param {extra!r} that the model does not")


def _batch_size(mode, batch_size, n):
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode == "batch":
        return n
    if mode == "sgd":
        return 1
    if not _arrays.is_int(batch_size):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}] (the training set has {n} samples), "
                         f"got {batch_size}")
    return int(batch_size)


def accuracy(loss, out, y):
    """Classification accuracy of outputs ``out`` (NaN for regression losses)."""
    if not loss.classification:
        return math.nan
    out, y = to_host(out), to_host(y)
    if loss.rowwise:  # labels, or probabilities: their most likely class
        if y.ndim == 1 and loss.ignore_index is not None:  # of the rows not ignored
            kept = y != loss.ignore_index
            out, y = out[kept], y[kept]
            if not y.size:
                return math.nan
        return float(np.mean(out.argmax(axis=1) == (y if y.ndim == 1 else y.argmax(axis=1))))
    threshold = 0.5 if loss.name == "binary_cross_entropy" else 0.0  # else logits
    return float(np.mean((out > threshold) == (y > 0.5)))


def mean_loss(loss, **options) -> Loss:
    """The loss that training and evaluation average: by name, or a :class:`Loss` with
    reduction ``"mean"`` (a sum would make the step size depend on the batch size, and
    ``"none"`` gives no number to step on); options only with a name."""
    if isinstance(loss, Loss):
        if options:
            raise ValueError(f"{sorted(options)} go with a loss name, not with {loss!r}")
        if loss.reduction != "mean":
            raise ValueError(f"training and evaluation average the loss over each batch: "
                             f"they need reduction='mean', got {loss!r}")
        return loss
    return get_loss(loss, **options)  # an unknown name: Loss says so


def evaluate(model, x, y, loss="cross_entropy", chunk=4096):
    """``(mean loss, accuracy)`` of ``model`` in eval mode on ``(x, y)``, ``chunk`` samples
    at a time: NaN for no samples. The data are checked as ``train`` checks them."""
    loss = mean_loss(loss)
    _check_split(model, loss, x, y)
    return _evaluate(model, x, y, loss, count("chunk", chunk))


def _batch_statistics_in_eval(model) -> bool:
    """Whether an eval forward normalizes by the batch's own statistics (a batch norm with
    ``track_running_stats=False``): its result then depends on how the data are split."""
    return any(getattr(m, "track_running_stats", True) is False for m in model.modules())


def _evaluate(model, x, y, loss, chunk=4096):
    """The mean loss and accuracy over ``chunk``-row pieces, each piece counted by its rows,
    or with class weights or an ignored label by its rows' weights (the loss) and its rows
    not ignored (the accuracy), as one batch's mean would count them. A model that
    normalizes by batch statistics in eval sees the data whole (pieces would change the
    result, and a piece of one row cannot be normalized): its buffers of that size are
    dropped after."""
    if not _batch_statistics_in_eval(model):
        return _evaluate_chunks(model, x, y, loss, chunk)
    with new_workspaces_dropped(model):
        return _evaluate_chunks(model, x, y, loss, max(_arrays.shape_of(x)[0], 1))


def _evaluate_chunks(model, x, y, loss, chunk):
    n = _arrays.shape_of(x)[0]
    total = correct = weights = kept = 0.0
    for s in range(0, n, chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        out = model.forward(xb, train=False)
        value = loss.value(out, yb, backend=model.be.name, check=loss.checks_outputs)
        m = w = _arrays.shape_of(xb)[0]
        if loss.weighted:
            row_w, ignored, _ = loss.row_weights(yb)
            w, m = float(np.sum(row_w)), int(np.sum(~ignored))
        if w:
            total, weights = total + value * w, weights + w
        if m:
            correct, kept = correct + accuracy(loss, out, yb) * m, kept + m
    return (total / weights if weights else math.nan), (correct / kept if kept else math.nan)


def dead_fraction(model) -> float:
    """Fraction of hidden ReLU/leaky-ReLU units whose input was ≤ 0 for every sample of
    the last forward pass (NaN when the model has no such units)."""
    dead, total = 0, 0
    for layer in model.activation_layers():
        if layer.act.name not in ("relu", "leaky_relu") or layer.preact is None:
            continue
        z = to_host(layer.preact)
        dead += int(np.sum(z.max(axis=0) <= 0))
        total += z.shape[1]
    return dead / total if total else math.nan


def _norm(xp, g) -> float:
    flat = g.reshape(-1)
    return math.sqrt(float(xp.vdot(flat, flat)))


def grad_norms(model, x, y, loss="cross_entropy") -> dict:
    """Per-layer weight-gradient L2 norms ``{"fc1": ...}`` of one forward/backward on
    ``(x, y)`` in training mode (the data are checked first). The model's buffers are
    left as they were: a probe between epochs had moved batch norm's running statistics
    and the dropout layers' steps (their next masks)."""
    loss = mean_loss(loss)
    _check_split(model, loss, x, y)
    state = model.state_dict()
    try:
        out = model.forward(x, train=True)
        _, g = loss.value_and_grad(out, y, backend=model.be.name,  # data checked above
                                   check=loss.checks_outputs)
        model.backward(g)
    finally:
        model.load_state_dict(state)
    xp = array_module(model.be)
    return {k.rsplit(".", 1)[0]: _norm(xp, v) for k, v in model.grads.items()
            if k.endswith("weight")}


#: Products below this many multiply-adds run BLAS on one thread in ``blas_threads="auto"``.
SMALL_PRODUCT = 1 << 25


def _blas_limit(blas_threads, model, batch):
    """A context limiting BLAS threads. Small products lose more to waking (and, on a busy
    machine, waiting for) BLAS worker threads than they gain: "auto" uses one thread when
    the largest product of a step is below ``SMALL_PRODUCT`` multiply-adds."""
    if blas_threads == "auto":
        largest = batch * max((m.in_features * m.out_features for m in model.linear_layers()),
                              default=0)
        blas_threads = 1 if largest < SMALL_PRODUCT else None
    if blas_threads is None or model.be.name == "cuda":
        return nullcontext()
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:  # optional: without it BLAS keeps its own thread count
        return nullcontext()
    return _shared_blas_limit(int(blas_threads))


class _SharedBlasLimit:
    """threadpoolctl's BLAS limit is the process's: the first of overlapping trainings (in
    threads of one process) sets it, the last puts back the count from before the first.
    When each restored what it saw on entry, two that overlapped left BLAS on one thread for
    good; a training that starts inside another's limit runs under it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._limiter = None  # threadpoolctl's, while a training runs
        self._users = 0

    @contextmanager
    def __call__(self, threads):
        from threadpoolctl import threadpool_limits

        with self._lock:
            if not self._users:
                self._limiter = threadpool_limits(limits=threads, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_shared_blas_limit = _SharedBlasLimit()


def _progress(enabled, epochs):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return "print"
    return tqdm(total=epochs, unit="epoch", file=sys.stderr)


def train(model, data, loss="cross_entropy", optimizer=None, *, mode="minibatch",
          batch_size=32, epochs=10, seed=0, progress=True, profile=False,
          label_smoothing=0.0, eval_samples=2048, stop_on_divergence=True,
          track_grad_norms=True, blas_threads="auto", plateau=None) -> History:
    """Train ``model`` on ``data`` and return its :class:`History`.

    ``data``: a :class:`fastgd.nn.datasets.Dataset`, ``(x_train, y_train, x_test,
    y_test)``, or ``(x, y)`` (then no test loss or accuracy: those entries are NaN).
    ``optimizer`` is required: one built on ``model.params``, e.g.
    ``fastgd.Adam(model.params, lr=1e-3)``.

    ``mode``: ``"batch"`` (one step per epoch on the whole training set), ``"sgd"`` (one
    sample per step) or ``"minibatch"`` (``batch_size`` samples per step; the last batch of
    an epoch may be smaller, and is skipped when it is one sample and the model has batch
    norm). Samples are shuffled each epoch with ``seed``. Training stops
    early (``history.diverged``) when the loss stops being finite, before that batch's step:
    the parameters are the last finite ones (batch norm's running statistics have seen the
    batch). An optimizer with ``skip_nonfinite`` decides instead (it skips steps whose
    gradients are not finite). ``profile=True`` prints
    where the training time went: matrix products, fused kernels, loss, optimizer step.
    ``blas_threads``: threads for the CPU matrix products (``"auto"``: one for small
    products, see :func:`_blas_limit`; ``None``: BLAS's default; needs threadpoolctl).
    ``plateau``: a :class:`fastgd.schedules.ReduceLROnPlateau` on ``optimizer``, stepped
    after each epoch with its test loss (its training loss without a test set).

    Everything is checked before the first step: an unknown loss or mode, a bad batch size,
    labels out of range or of the wrong shape, data on another device or of another dtype.
    """
    loss = mean_loss(loss, **({"label_smoothing": label_smoothing} if label_smoothing else {}))
    if optimizer is None or not callable(getattr(optimizer, "step", None)):
        raise TypeError("train needs an optimizer with a step(grads) method, e.g. "
                        "fastgd.Adam(model.params, lr=1e-3)")
    count("epochs", epochs, 0)
    count("eval_samples", eval_samples)
    if not (seed is None or (_arrays.is_int(seed) and seed >= 0) or isinstance(
            seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence))):
        raise ValueError(f"seed must be None, an int >= 0 or a NumPy Generator, got {seed!r}")
    if not (blas_threads in ("auto", None) or (_arrays.is_int(blas_threads)
                                                 and blas_threads >= 1)):
        raise ValueError(f"blas_threads must be 'auto', None or an int >= 1, got "
                         f"{blas_threads!r}")
    _check_optimizer(model, optimizer)
    if plateau is not None and getattr(plateau, "optimizer", None) is not optimizer:
        raise ValueError("plateau must be a ReduceLROnPlateau built on this optimizer")
    x_tr, y_tr, x_te, y_te = _unpack(data)
    _check_split(model, loss, x_tr, y_tr, "train")
    if x_te is not None:
        _check_split(model, loss, x_te, y_te, "test")
    n = _arrays.shape_of(x_tr)[0]
    if n == 0:
        raise ValueError("the training set is empty")
    bs = _batch_size(mode, batch_size, n)
    has_bn = any(hasattr(m, "running_mean") for m in model.modules())
    if has_bn and (bs < 2 or n < 2):
        raise ValueError(f"a model with batch norm needs batches of at least 2 samples; mode "
                         f"{mode!r} gives {bs}")
    n_eval = min(n, eval_samples)
    if _batch_statistics_in_eval(model):  # found here, not after the first epoch's steps
        n_test = None if x_te is None else _arrays.shape_of(x_te)[0]
        if n_eval < 2 or n_test == 1:
            raise ValueError(f"a batch norm with track_running_stats=False normalizes the "
                             f"evaluation data by their own statistics: it needs 2 samples "
                             f"or more (eval_samples {eval_samples}, test set {n_test})")

    be = model.be
    xp = array_module(be)
    rng = np.random.default_rng(seed)
    hist = History(mode=mode, batch_size=bs)
    bar = _progress(progress, epochs)
    if profile:
        PROFILE.start(be.name)
    try:
        with _blas_limit(blas_threads, model, bs):
            for epoch in range(1, epochs + 1):
                t_epoch = time.perf_counter()
                order = None if mode == "batch" else rng.permutation(n)
                sums, steps, losses = {}, 0, []
                lr = math.nan
                for start in range(0, n, bs):
                    t0 = PROFILE.mark()
                    if order is None:
                        xb, yb = x_tr, y_tr
                    else:
                        idx = order[start:start + bs]
                        if has_bn and len(idx) < 2:
                            continue  # batch norm cannot train on one sample
                        idx = xp.asarray(idx)
                        xb, yb = x_tr[idx], y_tr[idx]
                    PROFILE.done("data", t0)
                    if loss.weighted and not np.any(loss.row_weights(yb)[0]):
                        continue  # no weight (every label ignored): no loss to step on
                    out = model.forward(xb, train=True)
                    value, grad = loss.value_and_grad(out, yb, backend=be.name,
                                                      check=loss.checks_outputs)
                    if (stop_on_divergence and not math.isfinite(value)
                            and not getattr(optimizer, "skip_nonfinite", False)):
                        hist.step_loss.append(value)  # the step it would have been, not taken
                        hist.step_grad_norm.append(math.nan)
                        losses.append(value)
                        hist.diverged = True
                        break
                    model.backward(grad)
                    norms = {}
                    if track_grad_norms:
                        t0 = PROFILE.mark()
                        norms = {key: _norm(xp, g) for key, g in model.grads.items()}
                        PROFILE.done("grad norms", t0)
                    t0 = PROFILE.mark()
                    info = optimizer.step(model.grads)
                    PROFILE.done("optimizer step", t0)
                    lr = float(getattr(info, "lr", getattr(optimizer, "lr", math.nan)))
                    norm = getattr(info, "grad_norm", None)
                    hist.step_grad_norm.append(math.nan if norm is None else float(norm))
                    hist.step_loss.append(value)  # every step's, skipped or not
                    if getattr(info, "skipped", False):  # skip_nonfinite left the model as it was
                        hist.skipped_steps += 1
                        continue
                    steps += 1
                    losses.append(value)
                    for key, v in norms.items():
                        sums[key] = sums.get(key, 0.0) + v
                    if not math.isfinite(value) and stop_on_divergence:  # skip_nonfinite let it
                        hist.diverged = True
                        break
                if not steps and stop_on_divergence:  # every step skipped: no progress
                    hist.diverged = True
                hist.time.append(time.perf_counter() - t_epoch)
                hist.steps += steps
                hist.epoch.append(epoch)
                hist.loss.append(float(np.mean(losses)) if losses else math.nan)
                hist.grad_norms.append({k: v / max(steps, 1) for k, v in sums.items()})
                hist.lr.append(lr)
                _evaluate_epoch(model, loss, hist, x_tr, y_tr, x_te, y_te, n_eval)
                if plateau is not None and not hist.diverged:
                    plateau.step(hist.test_loss[-1] if x_te is not None else hist.loss[-1])
                _report(bar, hist)
                if hist.diverged:
                    break
    finally:
        if profile:
            PROFILE.stop()
        if bar is not None and not isinstance(bar, str):
            bar.close()
    if profile:
        total = sum(hist.time)
        hist.profile = {"total": total, **PROFILE.totals}
        print(f"profile of {hist.steps} steps ({be.name}, {model.dtype}, batch {bs}):")
        print(PROFILE.table(total))
    return hist


def _evaluate_epoch(model, loss, hist, x_tr, y_tr, x_te, y_te, n_eval):
    t0 = time.perf_counter()
    was_on = PROFILE.on
    PROFILE.on = False  # evaluation is not training time
    try:
        if hist.diverged:
            test_loss = test_acc = train_acc = dead = math.nan
        else:
            if x_te is not None:
                test_loss, test_acc = _evaluate(model, x_te, y_te, loss)
            else:
                test_loss = test_acc = math.nan
            out = model.forward(x_tr[:n_eval], train=False)
            train_acc = accuracy(loss, out, y_tr[:n_eval])
            dead = dead_fraction(model)
    finally:
        PROFILE.on = was_on
    hist.test_loss.append(test_loss)
    hist.test_accuracy.append(test_acc)
    hist.train_accuracy.append(train_acc)
    hist.dead_relu.append(dead)
    hist.eval_time.append(time.perf_counter() - t0)


def _report(bar, hist):
    if bar is None:
        return
    text = {"loss": f"{hist.loss[-1]:.4f}", "test_acc": f"{hist.test_accuracy[-1]:.3f}"}
    if isinstance(bar, str):
        print(f"epoch {hist.epoch[-1]}: " + ", ".join(f"{k} {v}" for k, v in text.items()),
              file=sys.stderr)
    else:
        bar.set_postfix(text)
        bar.update(1)
