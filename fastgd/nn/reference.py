"""The NumPy backend of ``fastgd.nn``: plain vectorized NumPy, written independently of
``formulas`` and used as the oracle in the tests (which check it against finite
differences and PyTorch's formulas)."""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1


def batch_norm_stats(h, eps):
    """(mean, 1/sqrt(biased var + eps), unbiased var) over the batch axis."""
    n = h.shape[0]
    mean = h.mean(axis=0)
    var = ((h - mean) ** 2).mean(axis=0)
    unbiased = var * n / (n - 1) if n > 1 else var
    return mean, 1 / np.sqrt(var + eps), unbiased


def batch_norm_backward(du, h, mean, invstd, gamma, train=True):
    """(dx, dgamma, dbeta) from the gradient ``du`` at batch norm's output; ``train=False``
    after an eval-mode forward, whose mean and invstd (the running ones) are constants."""
    n = h.shape[0]
    xhat = (h - mean) * invstd
    dgamma = (du * xhat).sum(axis=0)
    dbeta = du.sum(axis=0)
    if not train:
        return gamma * invstd * du, dgamma, dbeta
    dx = gamma * invstd / n * (n * du - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


# -- dropout ------------------------------------------------------------------------------


def mix64(z):
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_int(z: int) -> int:
    """The same hash on a Python int (for host-side seeds)."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_base(seed: int, step: int) -> int:
    """The counter offset of one dropout call: a hash of the seed and the step."""
    return mix64_int(mix64_int(seed & MASK64) ^ (step & MASK64))


def dropout_threshold(p: float) -> int:
    """An element is kept where the top 24 bits of its hash are >= round(p·2²⁴)."""
    return int(round(p * (1 << 24)))


def dropout_scale(p: float) -> float:
    """What a kept element is multiplied by: 1/(1 - p); none is kept at p = 1 (torch's
    x·0 there: NaN for an inf, as here)."""
    return 1.0 / (1.0 - p) if p < 1 else 0.0


def dropout_keep(size, p, seed, step):
    """The boolean keep-mask of ``size`` elements (flat, C order)."""
    with np.errstate(over="ignore"):
        counters = np.uint64(dropout_base(seed, step)) + np.arange(size, dtype=np.uint64)
        bits = mix64(counters) >> np.uint64(40)
    return bits >= np.uint64(dropout_threshold(p))


def dropout(x, p, seed, step):
    keep = dropout_keep(x.size, p, seed, step).reshape(x.shape)
    with np.errstate(invalid="ignore"):  # a dropped inf: inf·0 = NaN, as in torch
        return (x * np.where(keep, x.dtype.type(dropout_scale(p)), x.dtype.type(0))
                ).astype(x.dtype)


# -- losses ---------------------------------------------------------------------------------


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True, initial=-np.inf)
    with np.errstate(divide="ignore"):  # a row of no classes: log 0
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _smoothed_targets(target, n_classes, smoothing, dtype):
    if target.ndim == 1:
        q = np.zeros((target.shape[0], n_classes), dtype)
        q[np.arange(target.shape[0]), target] = 1
    else:
        q = target.astype(dtype)
    return (1 - smoothing) * q + smoothing / max(n_classes, 1)  # no classes: no q


def cross_entropy(x, target, smoothing):
    """Per-row loss and the per-row gradient ``softmax·Σq - q`` (before any reduction)."""
    q = _smoothed_targets(target, x.shape[1], smoothing, x.dtype)
    logp = _log_softmax(x)
    if target.ndim == 1 and smoothing == 0:  # the label's term alone, as torch: a masked
        loss = -logp[np.arange(x.shape[0]), target]  # (-inf) logit elsewhere adds nothing
    else:
        with np.errstate(invalid="ignore"):  # 0·(-inf): NaN, as in torch
            loss = -(q * logp).sum(axis=1)
    grad = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
    return loss, grad


def binary_cross_entropy_with_logits(x, t):
    with np.errstate(over="ignore"):
        a = np.where(x > 0, 1 - t, -t)  # max(x, 0) - x·t, with the limits at x = ±inf
        with np.errstate(invalid="ignore"):
            linear = np.where(a == 0, 0.0, x * a)
        loss = linear + np.log1p(np.exp(-np.abs(x)))
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return loss, sig - t


def binary_cross_entropy(p, t):
    """Of probabilities ``p``, the logs clamped at -100 as torch's; the gradient's
    denominator p·(1 - p) at torch's 1e-12 at least (a float32 1e-12: 1 - 4e-9 of it)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.maximum(np.log(p), -100.0)  # NaN stays NaN
        lq = np.maximum(np.log1p(-p), -100.0)
    return -(t * lp + (1 - t) * lq), (p - t) / np.maximum(p * (1 - p), float(np.float32(1e-12)))


def nll(x, labels):
    """Of log-probabilities ``x`` (N, C) at integer ``labels`` (N,)."""
    rows = np.arange(x.shape[0])
    grad = np.zeros_like(x)
    grad[rows, labels] = -1.0
    return -x[rows, labels], grad


def mse(x, t):
    return (x - t) ** 2, 2 * (x - t)
