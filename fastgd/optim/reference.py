"""The NumPy backend of the update rules: each rule written again, independently, in NumPy.

These functions are what ``backend="numpy"`` runs, and an oracle for the compiled kernels
(which come from :mod:`fastgd.optim.rules`). They take the raw hyperparameters and the
step count ``t`` and derive the bias corrections themselves, so the host-side scalar math
of the optimizer classes is checked too. They update ``p`` and the state in place with
``out=`` and two work buffers (``gbuf``, ``tmp``, shaped like ``p``, distinct from ``g``);
``g`` is never written.
Python-float scalars keep float32 arithmetic in float32 (NumPy's weak scalars).
"""

from __future__ import annotations

import numpy as np


def _decayed_grad(p, g, weight_decay, gbuf, tmp):
    """``g + wd·p`` in ``gbuf`` (``g`` itself when ``wd == 0``)."""
    if not weight_decay:
        return g
    np.multiply(p, weight_decay, out=tmp)
    return np.add(g, tmp, out=gbuf)


def _ema(avg, x, beta, tmp):
    """``avg ← β·avg + (1 − β)·x`` (Lion's form)."""
    avg *= beta
    np.multiply(x, 1.0 - beta, out=tmp)
    avg += tmp


def _lerp(avg, x, w, tmp):
    """``avg ← avg + w·(x − avg)``, PyTorch's ``avg.lerp_(x, w)`` (for |w| ≥ 0.5 it computes
    ``x − (x − avg)·(1 − w)``): the same average as :func:`_ema` with w = 1 − β, and the same
    NaN where avg is ±inf (inf + w·(x − inf)). As torch, w is rounded to avg's dtype first,
    and the test and 1 − w are done in that dtype."""
    w = avg.dtype.type(w)
    np.subtract(x, avg, out=tmp)
    if abs(w) < 0.5:
        tmp *= w
        avg += tmp
    else:
        tmp *= 1 - w
        np.subtract(x, tmp, out=avg)


def _ema_square(avg, x, beta, tmp):
    """``avg ← β·avg + (1 − β)·x²``."""
    avg *= beta
    np.multiply(x, 1.0 - beta, out=tmp)
    tmp *= x
    avg += tmp


def _adam_moments(p, g, m, v, lr, beta1, beta2, weight_decay, decoupled, gbuf, tmp):
    """The start every Adam-family step shares: weight decay, decoupled (``p ← (1 − lr·wd)·p``,
    AdamW) or L2 (``g ← g + wd·p``), then both moments. Returns the gradient used."""
    if decoupled:
        if weight_decay:
            p *= 1.0 - lr * weight_decay
    else:
        g = _decayed_grad(p, g, weight_decay, gbuf, tmp)
    _lerp(m, g, 1.0 - beta1, tmp)
    _ema_square(v, g, beta2, tmp)
    return g


def sgd(p, g, buf, *, lr, momentum, dampening, weight_decay, nesterov, t, gbuf, tmp):
    g = _decayed_grad(p, g, weight_decay, gbuf, tmp)
    if buf is not None:
        if t == 1:
            buf[...] = g
        else:
            buf *= momentum
            np.multiply(g, 1.0 - dampening, out=tmp)
            buf += tmp
        if nesterov:
            np.multiply(buf, momentum, out=tmp)
            g = np.add(g, tmp, out=gbuf)
        else:
            g = buf
    np.multiply(g, lr, out=tmp)
    p -= tmp


def adagrad(p, g, acc, *, lr, lr_decay, weight_decay, eps, t, gbuf, tmp):
    g = _decayed_grad(p, g, weight_decay, gbuf, tmp)
    np.multiply(g, g, out=tmp)
    acc += tmp
    np.sqrt(acc, out=tmp)
    tmp += eps
    # torch's addcdiv(g, std, value=-clr): (clr·g)/std, clr·g rounded first
    np.divide(np.multiply(g, lr / (1.0 + (t - 1) * lr_decay), out=gbuf), tmp, out=tmp)
    p -= tmp


def rmsprop(p, g, v, grad_avg, buf, *, lr, alpha, eps, weight_decay, momentum, gbuf, tmp):
    g = _decayed_grad(p, g, weight_decay, gbuf, tmp)
    _ema_square(v, g, alpha, tmp)
    if grad_avg is not None:
        _lerp(grad_avg, g, 1.0 - alpha, tmp)
        np.multiply(grad_avg, grad_avg, out=tmp)
        np.subtract(v, tmp, out=tmp)
        # torch's addcmul(v, ga, ga, value=-1) is a fused multiply-add: v = inf stays inf
        # where ga² overflows, not inf - inf
        np.copyto(tmp, v, where=np.isposinf(v) & np.isfinite(grad_avg))
        np.sqrt(tmp, out=tmp)
    else:
        np.sqrt(v, out=tmp)
    tmp += eps
    if buf is not None:
        buf *= momentum
        np.divide(g, tmp, out=tmp)
        buf += tmp
        np.multiply(buf, lr, out=tmp)
    else:  # torch's addcdiv(g, avg, value=-lr): (lr·g)/avg, lr·g rounded first
        np.divide(np.multiply(g, lr, out=gbuf), tmp, out=tmp)
    p -= tmp


def adam(p, g, m, v, vmax, *, lr, betas, eps, weight_decay, decoupled, t, gbuf, tmp):
    """Adam (``decoupled=False``, L2 weight decay) or AdamW (``decoupled=True``)."""
    beta1, beta2 = betas
    _adam_moments(p, g, m, v, lr, beta1, beta2, weight_decay, decoupled, gbuf, tmp)
    second = v
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
        second = vmax
    np.sqrt(second, out=tmp)
    tmp /= (1.0 - beta2**t) ** 0.5  # torch's bias_correction2**0.5: not always math.sqrt's
    tmp += eps
    # addcdiv(m, denom, value=-step_size): (step_size·m)/denom
    np.divide(np.multiply(m, lr / (1.0 - beta1**t), out=gbuf), tmp, out=tmp)
    p -= tmp


def nadam(p, g, m, v, *, lr, betas, eps, weight_decay, decoupled, momentum_decay, t,
          mu_product, gbuf, tmp):
    """NAdam; returns the new product of the momentum coefficients ``μ_1…μ_t``."""
    beta1, beta2 = betas
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = mu_product * mu
    g = _adam_moments(p, g, m, v, lr, beta1, beta2, weight_decay, decoupled, gbuf, tmp)
    np.divide(v, 1.0 - beta2**t, out=tmp)  # tmp: the denominator
    np.sqrt(tmp, out=tmp)
    tmp += eps
    # two addcdivs, (c·g)/denom and (c·m)/denom; g is no longer needed: gbuf may hold it
    np.multiply(g, lr * (1.0 - mu) / (1.0 - mu_product), out=gbuf)
    p -= np.divide(gbuf, tmp, out=gbuf)
    np.multiply(m, lr * mu_next / (1.0 - mu_product * mu_next), out=gbuf)
    p -= np.divide(gbuf, tmp, out=gbuf)
    return mu_product


def radam(p, g, m, v, *, lr, betas, eps, weight_decay, decoupled, t, gbuf, tmp):
    beta1, beta2 = betas
    _adam_moments(p, g, m, v, lr, beta1, beta2, weight_decay, decoupled, gbuf, tmp)
    bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2**t / bc2
    np.divide(m, bc1, out=gbuf)  # torch's bias-corrected m, times lr
    gbuf *= lr
    if rho_t > 5.0:
        r = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        np.sqrt(v, out=tmp)
        tmp += eps
        np.reciprocal(tmp, out=tmp)  # the adaptive lr: torch's √bc2 / tensor is
        tmp *= bc2**0.5  # the tensor's reciprocal times √bc2 (Tensor.__rtruediv__)
        gbuf *= tmp
        gbuf *= r
    p -= gbuf


def adamax(p, g, m, u, *, lr, betas, eps, weight_decay, t, gbuf, tmp):
    beta1, beta2 = betas
    g = _decayed_grad(p, g, weight_decay, gbuf, tmp)
    _lerp(m, g, 1.0 - beta1, tmp)
    u *= beta2
    np.abs(g, out=tmp)
    tmp += eps
    np.maximum(u, tmp, out=u)
    # addcdiv(m, u, value=-clr): (clr·m)/u; g is no longer needed
    np.divide(np.multiply(m, lr / (1.0 - beta1**t), out=gbuf), u, out=tmp)
    p -= tmp


def lion(p, g, m, *, lr, betas, weight_decay, gbuf, tmp):
    """Lion (Chen et al. 2023, as in optax and lion-pytorch): decoupled decay, sign update."""
    beta1, beta2 = betas
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    np.multiply(m, beta1, out=tmp)
    np.multiply(g, 1.0 - beta1, out=gbuf)
    tmp += gbuf
    np.sign(tmp, out=tmp)
    tmp *= lr
    p -= tmp
    _ema(m, g, beta2, tmp)
