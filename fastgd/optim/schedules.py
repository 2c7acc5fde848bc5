"""Learning-rate schedules: functions of the step count ``s = 0, 1, 2, ...`` to a learning rate.

An optimizer given ``lr=schedule`` uses ``schedule(s)`` for its ``s``-th step (counting from
0, as ``torch.optim.lr_scheduler`` counts epochs), so the first step runs at
``schedule(0)``. Any callable ``step -> lr`` works the same way. The closed forms are
PyTorch's (``StepLR``, ``MultiStepLR``, ``ExponentialLR``, ``CosineAnnealingLR``: their
``_get_closed_form_lr``, bit for bit; stepped, those schedulers update the lr recursively and
drift from it by up to ~4e-15 relative; ``OneCycleLR``)::

    opt = fastgd.AdamW(params, lr=fastgd.schedules.warmup_cosine(3e-4, warmup=100, total=10_000))

A schedule that follows a measured metric instead of the step count is an object that sets
the optimizer's ``lr``: :class:`ReduceLROnPlateau`, called once an epoch with the metric.
"""

from __future__ import annotations

import bisect
import math

from fastgd._arrays import is_number
from fastgd._checks import count, in_range, positive

__all__ = ["constant", "step", "multistep", "exponential", "cosine", "warmup_cosine",
           "warmup_linear", "one_cycle", "ReduceLROnPlateau"]


def _min_lr(min_lr, lr):
    if not (is_number(min_lr) and 0 <= min_lr <= lr):
        raise ValueError(f"min_lr must be in [0, lr={lr}], got {min_lr!r}")
    return float(min_lr)


class Schedule:
    """A named ``step -> lr`` function (named so that it prints usefully)."""

    def __init__(self, fn, description):
        self._fn, self._description = fn, description

    def __call__(self, s: int) -> float:
        return self._fn(s)

    def __repr__(self):
        return f"schedules.{self._description}"


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    lr = positive("lr", lr)
    return Schedule(lambda s: lr, f"constant({lr})")


def step(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr·gamma^(s // step_size)`` (``StepLR``)."""
    lr, gamma = positive("lr", lr), positive("gamma", gamma)
    step_size = count("step_size", step_size)
    return Schedule(lambda s: lr * gamma ** (s // step_size),
                    f"step({lr}, step_size={step_size}, gamma={gamma})")


def multistep(lr: float, milestones, gamma: float = 0.1) -> Schedule:
    """``lr·gamma^k`` with k the number of milestones ``<= s`` (``MultiStepLR``)."""
    lr, gamma = positive("lr", lr), positive("gamma", gamma)
    milestones = [count("milestones", m, 0) for m in milestones]
    if milestones != sorted(milestones):
        raise ValueError(f"milestones must be increasing, got {milestones}")
    return Schedule(lambda s: lr * gamma ** bisect.bisect_right(milestones, s),
                    f"multistep({lr}, {milestones}, gamma={gamma})")


def exponential(lr: float, gamma: float) -> Schedule:
    """``lr·gamma^s`` (``ExponentialLR``)."""
    lr, gamma = positive("lr", lr), positive("gamma", gamma)
    return Schedule(lambda s: lr * gamma**s, f"exponential({lr}, gamma={gamma})")


def _cos(lr, min_lr, done, span):
    """Cosine from ``lr`` to ``min_lr`` over ``span`` steps, ``done`` of them done, in
    CosineAnnealingLR's closed form: ``cos(π·done/span)``, not ``cos(π·(done/span))``, which
    differs in the last bit at a quarter of the steps."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * done / span)) / 2


def cosine(lr: float, total: int, min_lr: float = 0.0) -> Schedule:
    """Cosine from ``lr`` at s = 0 to ``min_lr`` at s = total, then ``min_lr``
    (``CosineAnnealingLR(T_max=total, eta_min=min_lr)`` up to ``total``)."""
    lr = positive("lr", lr)
    total, min_lr = count("total", total), _min_lr(min_lr, lr)
    return Schedule(lambda s: _cos(lr, min_lr, min(s, total), total),
                    f"cosine({lr}, total={total}, min_lr={min_lr})")


def _warmup(lr, warmup, total, min_lr, decay, name):
    lr = positive("lr", lr)
    total, min_lr = count("total", total), _min_lr(min_lr, lr)
    warmup = count("warmup", warmup, 0)
    if warmup >= total:
        raise ValueError(f"warmup ({warmup}) must be less than total ({total})")

    def fn(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        return decay(lr, min_lr, min(s - warmup, total - warmup), total - warmup)

    return Schedule(fn, f"{name}({lr}, warmup={warmup}, total={total}, min_lr={min_lr})")


def warmup_cosine(lr: float, warmup: int, total: int, min_lr: float = 0.0) -> Schedule:
    """Linear warmup ``lr·(s + 1)/warmup`` for s < warmup (reaching ``lr`` at its last step),
    then cosine decay to ``min_lr`` at s = total, then ``min_lr``."""
    return _warmup(lr, warmup, total, min_lr, _cos, "warmup_cosine")


def warmup_linear(lr: float, warmup: int, total: int, min_lr: float = 0.0) -> Schedule:
    """Linear warmup as :func:`warmup_cosine`, then linear decay to ``min_lr`` at s = total."""
    return _warmup(lr, warmup, total, min_lr,
                   lambda hi, lo, done, span: hi + (lo - hi) * (done / span), "warmup_linear")


def one_cycle(max_lr: float, total: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos") -> Schedule:
    """``OneCycleLR`` (two phases): from ``max_lr/div_factor`` up to ``max_lr`` over the first
    ``pct_start·total`` steps, then down to ``max_lr/div_factor/final_div_factor`` at step
    ``total − 1``; ``anneal`` is ``"cos"`` or ``"linear"``. The learning rate only, as
    ``OneCycleLR(..., cycle_momentum=False)``: momentum and betas are not cycled."""
    max_lr = positive("max_lr", max_lr)
    total = count("total", total)
    pct_start = in_range("pct_start", pct_start, 0, 1, lo_open=True, hi_open=True)
    div_factor = positive("div_factor", div_factor)
    final_div_factor = positive("final_div_factor", final_div_factor)
    if anneal not in ("cos", "linear"):
        raise ValueError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    up_end, down_end = float(pct_start * total) - 1, total - 1
    if not 0 < up_end < down_end:
        raise ValueError(f"one_cycle needs pct_start*total > 1 and < total, "
                         f"got pct_start={pct_start}, total={total}")

    def mix(start, end, pct):
        if anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def fn(s):
        s = min(s, down_end)
        if s <= up_end:
            return mix(initial, max_lr, s / up_end)
        return mix(max_lr, final, (s - up_end) / (down_end - up_end))

    return Schedule(fn, f"one_cycle({max_lr}, total={total}, pct_start={pct_start})")


class ReduceLROnPlateau:
    """Multiply the optimizer's learning rate by ``factor`` (not below ``min_lr``) once a
    metric has not improved for more than ``patience`` calls of :meth:`step`, then wait
    ``cooldown`` calls: torch's ``ReduceLROnPlateau``, its arguments and arithmetic (an
    improvement beats the best by ``threshold``, relative or absolute; a reduction smaller
    than ``eps`` is skipped; a NaN metric is no improvement)::

        plateau = fastgd.schedules.ReduceLROnPlateau(opt, patience=3)
        for epoch in ...:
            ...train an epoch...
            plateau.step(validation_loss)

    The optimizer's ``lr`` must be a number (a schedule of the step count would overrule
    it)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        # each group's learning rate of fastgd.Groups, as torch's reduces each param group's
        self._targets = tuple(getattr(optimizer, "optimizers", (optimizer,)))
        if any(getattr(t, "_lr_fn", None) is not None or not hasattr(t, "lr")
               for t in self._targets):
            raise TypeError("ReduceLROnPlateau sets the optimizer's lr: give it an optimizer "
                            "whose lr is a number, not a schedule")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = in_range("factor", factor, 0, 1, hi_open=True)
        self.patience = count("patience", patience, minimum=0)
        self.threshold = in_range("threshold", threshold, 0, math.inf)
        self.cooldown = count("cooldown", cooldown, minimum=0)
        self.min_lr = in_range("min_lr", min_lr, 0, math.inf)
        self.eps = in_range("eps", eps, 0, math.inf)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0

    def _better(self, a: float) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return a > (self.best * (self.threshold + 1.0) if rel else self.best + self.threshold)

    def step(self, metric) -> float:
        """Record one epoch's ``metric``; returns the learning rate from now on."""
        current = float(metric)
        self.last_epoch += 1
        if self._better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for target in self._targets:
                old = float(target.lr)
                new = max(old * self.factor, self.min_lr)
                if old - new > self.eps:
                    target.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return float(self.optimizer.lr)

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best})")
