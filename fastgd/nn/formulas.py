"""The math of ``fastgd.nn``, written once in the scalar language of :mod:`fastgd.scalar`.

Three kinds of functions, each compiled for the Numba CPU and the CUDA backends:

* elementwise (**grid**) functions of one element, with optional per-column values
  (a bias, batch-norm statistics) and, for dropout, the element's flat index;
* **line** functions over one column of a batch (a line ``a[0, :, j]`` of a ``(1, N, C)``
  view): column sums for bias gradients, batch-norm statistics and backward;
* **row** functions over one sample (cross-entropy on a row of logits).

Templates call the activation through ``act_f(z, p0, p1)`` / ``act_b(dy, z, p0, p1)``;
:func:`fastgd.nn._kernels.bind` clones a template with these two names bound to one
activation's formulas, so ``bias + activation`` is one fused kernel for every activation.
The NumPy backend does not use this file: it runs ``fastgd.nn.reference``.
"""

from math import inf

import numpy as np

from fastgd.activation.formulas import (  # noqa: F401 (row_sum: column sums)
    at_least,
    exp_clamped,
    exp_stopped,
    row_max,
    row_sum,
    sigmoid,
    single,
)
from fastgd.scalar import F, W, exp, in_order, lanes, lanes_sum, log, log1p, scalar, sqrt

# -- activation slots (identity until bound) ----------------------------------------------


@scalar
def act_f(z, p0, p1):
    """The bound activation's forward; the identity when unbound."""
    return z


@scalar
def act_b(dy, z, p0, p1):
    """The bound activation's input gradient; the identity's when unbound."""
    return dy


#: Whether the bound act_b has transcendental math, for batch norm's backward: such math runs
#: in a loop of its own, as beside float64 sums it would run at W's vector width (gelu
#: 4096x256 on Zen 3: 2.6 -> 1.5 ms); cheap math such as relu's is recomputed where used, as
#: the extra pass over memory would cost more (relu on Sapphire Rapids: 0.6-0.7 -> 0.5 ms).
ACT_B_APART = False


# Wrappers giving every activation the same signature; ``ACT`` is bound by ``_kernels``.
def wrap0_f(z, p0, p1):
    return ACT(z)  # noqa: F821


def wrap1_f(z, p0, p1):
    return ACT(z, p0)  # noqa: F821


def wrap2_f(z, p0, p1):
    return ACT(z, p0, p1)  # noqa: F821


def wrap0_b(dy, z, p0, p1):
    return ACT(dy, z)  # noqa: F821


def wrap1_b(dy, z, p0, p1):
    return ACT(dy, z, p0)  # noqa: F821


def wrap2_b(dy, z, p0, p1):
    return ACT(dy, z, p0, p1)  # noqa: F821


# -- Linear: bias add + activation, and their backward --------------------------------------


def bias_act(h, b, p0, p1):
    """Grid, one value per column: ``z = h + b``, ``y = act(z)``."""
    z = h + b
    return z, act_f(z, p0, p1)


def bias_add(h, b):
    """Grid: ``h + b`` (a Linear layer without activation)."""
    return h + b


def act_only(h, p0, p1):
    """Grid: ``act(h)`` (a Linear layer without bias)."""
    return act_f(h, p0, p1)


def act_grad(dy, z, p0, p1):
    """Grid: ``dz = act'(z)·dy``."""
    return act_b(dy, z, p0, p1)


def act_grad_colsum(dy, z, dz, p0, p1):
    """Line (one column): ``dz = act'(z)·dy``; returns ``Σ dz``, the bias gradient, summed
    in W (a float32 sum down 2^20 rows, one thread's on CUDA, was 1.6e-4 off)."""
    s = W(0)
    for i in lanes(dy.size):
        g = act_b(F(dy[i]), F(z[i]), p0, p1)
        dz[i] = g
        s += W(g)
    return lanes_sum(s)


def add(a, b):
    """Grid: ``a + b`` (residual connections)."""
    return a + b


def mul(a, b):
    """Grid: ``a·b``."""
    return a * b


def weigh(x, w, kept):
    """Grid, two values per column: ``x·w`` where ``kept``, else 0 (a weighted loss's
    ignored row adds 0, also where its loss is inf or NaN)."""
    return x * w if kept != F(0) else F(0)


# -- BatchNorm1d ----------------------------------------------------------------------------


def bn_stats(h, stats, eps):
    """Line (one feature over the batch): ``stats = (mean, 1/sqrt(var + eps), var·n/(n-1))``,
    the biased variance normalizing, the unbiased one feeding the running estimate (torch).
    Both sums in the wide type W, as torch's CPU kernel (a float32 sum down a line of 2^18,
    mean 10, put the variance 8e-5 off)."""
    n = h.size
    total = W(0)
    for i in lanes(n):
        total += W(h[i])
    mw = lanes_sum(total) / W(n)
    m = F(mw)
    v = W(0)
    for i in lanes(n):
        d = F(h[i]) - m
        v += W(d * d)
    v = lanes_sum(v)
    stats[0] = mw
    stats[1] = W(1) / sqrt(v / W(n) + W(eps))
    stats[2] = v / W(n - 1) if n > 1 else v


def bn_act(h, mean, invstd, gamma, beta, p0, p1):
    """Grid, four values per column: ``z = gamma·(h - mean)·invstd + beta``, ``y = act(z)``."""
    z = gamma * ((h - mean) * invstd) + beta
    return z, act_f(z, p0, p1)


def bn_backward(dy, z, h, dx, grads, mean, invstd, gamma, p0, p1):
    """Line (one feature): batch norm's input gradient through the activation.

    With ``du = act'(z)·dy`` and ``xhat = (h - mean)·invstd``:
    ``dx = gamma·invstd/n · (n·du - Σdu - xhat·Σ du·xhat)``; ``grads = (Σ du·xhat, Σ du)``
    are the gamma and beta gradients, summed in the wide type W (torch's CPU kernel too).
    """
    n = dy.size
    # du into dx where apart, else no elements (``n if ACT_B_APART else 0`` as the count cost
    # gelu 1.0 -> 1.6 ms on Sapphire Rapids)
    for i in lanes(n * ACT_B_APART):
        dx[i] = act_b(F(dy[i]), F(z[i]), p0, p1)
    s_du = W(0)
    s_dux = W(0)
    for i in lanes(n):  # dx[i] is this thread's own, from the loop above
        du = F(dx[i]) if ACT_B_APART else act_b(F(dy[i]), F(z[i]), p0, p1)
        s_du += W(du)
        s_dux += W(du * ((F(h[i]) - mean) * invstd))
    s_du = lanes_sum(s_du)
    s_dux = lanes_sum(s_dux)
    grads[0] = s_dux
    grads[1] = s_du
    su = F(s_du)
    sux = F(s_dux)
    k = gamma * invstd / F(n)
    for i in lanes(n):  # dx[i] is this thread's own, as above
        du = F(dx[i]) if ACT_B_APART else act_b(F(dy[i]), F(z[i]), p0, p1)
        xhat = (F(h[i]) - mean) * invstd
        dx[i] = k * (F(n) * du - su - xhat * sux)


def bn_backward_eval(dy, z, h, dx, grads, mean, invstd, gamma, p0, p1):
    """Line (one feature): :func:`bn_backward` after an eval-mode forward, which normalized
    with the running estimates: constants, so ``dx = gamma·invstd·du``; ``grads`` as there."""
    for i in lanes(dy.size * ACT_B_APART):  # du into dx where apart, as in bn_backward
        dx[i] = act_b(F(dy[i]), F(z[i]), p0, p1)
    s_du = W(0)
    s_dux = W(0)
    k = gamma * invstd
    for i in lanes(dy.size):
        du = F(dx[i]) if ACT_B_APART else act_b(F(dy[i]), F(z[i]), p0, p1)
        dx[i] = k * du
        s_du += W(du)
        s_dux += W(du * ((F(h[i]) - mean) * invstd))
    grads[0] = lanes_sum(s_dux)
    grads[1] = lanes_sum(s_du)


def ema(running, stat, momentum):
    """Grid: the running-statistics update ``(1 - momentum)·running + momentum·stat``."""
    return (F(1) - momentum) * running + momentum * stat


def inv_std(var, eps):
    """Grid: ``1/sqrt(var + eps)``."""
    return F(1) / sqrt(var + eps)


# -- Dropout: a counter-based random mask -------------------------------------------------

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S27, S30, S31, S40 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(40)


@scalar
def mix64(z):
    """SplitMix64's finalizer: a bijective hash of a 64-bit counter (integer-only math, so
    every backend computes the same bits)."""
    z = z + GOLDEN
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


def dropout(i, x, base, threshold, scale):
    """Grid with the flat index ``i``: keep ``x·scale`` where the top 24 bits of
    ``mix64(base + i)`` reach ``threshold`` (= round(p·2²⁴)), else 0. The backward is the
    same function applied to the upstream gradient (same seed and step: same mask)."""
    keep = (mix64(base + np.uint64(i)) >> S40) >= threshold
    return x * (scale if keep else F(0))


# -- losses ---------------------------------------------------------------------------------


@scalar
def exp_sum(x):
    """(m, Σ e^(x_i - m)) in the wide type W, m the row's max: the losses compute their
    probabilities e^(x_i - m)/Σ in W. In the working type, a rounded logsumexp in
    exp(x_i - lse) put its rounding (an ULP of lse) into every exponent (64 ULP of float32 for
    logits near 150), and the gradient p - q cancels where p is near q. The exponentials
    stop short of an underflow (:func:`exp_stopped`; the gradients': :func:`exp_gradient`),
    whose assists made masked logits slow (1024 rows of 1000 float32 half masked with -1e9:
    5.3 ms for the loss instead of 1.0, 10.2 for the gradient instead of 1.6)."""
    m = W(row_max(x))
    s = W(0)
    for i in lanes(x.size):
        s += exp_stopped(W(x[i]) - m)
    return m, lanes_sum(s)


@scalar
def exp_gradient(d):
    """e^d (d = x - max, in W) for a gradient stored in the working type: float32 stops d at
    -200, where g·e^d·r is below float32's range for any float32 g (and is computed
    without subnormal numbers); float64 takes :func:`exp_clamped`, 0 past -746."""
    return exp(at_least(d, W(-200))) if single() else exp_clamped(d)


def cross_entropy_labels(x, dx, label, gscale, eps_hi, eps_lo):
    """Row: cross-entropy of logits ``x`` against class ``label`` with label smoothing
    ε = eps_hi + eps_lo (two working-type parts: a float32 ε would round 0.1 by 1.5e-9).

    Target q = (1 - ε)·onehot + ε/C; loss = Σ q_i·(m - x_i) + log Σ e^(x_i - m) (Σq = 1,
    m the row's max: each term m - x_i >= 0, so huge logits do not cancel);
    ``dx = gscale·(softmax(x) - q)``, computed in W (:func:`exp_sum`) and rounded once.
    Returns the row's loss. Without smoothing the other classes' terms are left out, as in
    torch: a masked logit (-inf) of another class adds nothing, not NaN.
    """
    n = x.size
    k = int(label)
    m, s = exp_sum(x)
    r = W(1) / s
    eps = W(eps_hi) + W(eps_lo)
    off = eps / W(n)
    g = W(gscale)
    gap = W(0)
    for i in lanes(n):
        v = W(x[i])
        gap += m - v
        q = off + (W(1) - eps if i == k else W(0))
        dx[i] = F(g * (exp_gradient(v - m) * r - q))
    return label_loss(x, k, m, s, lanes_sum(gap), eps, off)


def cross_entropy_labels_loss(x, label, eps_hi, eps_lo):
    """Row: :func:`cross_entropy_labels`' loss alone, without its gradient (one exponential
    per element instead of two: the loss's value for evaluation)."""
    n = x.size
    m, s = exp_sum(x)
    eps = W(eps_hi) + W(eps_lo)
    gap = W(0)
    for i in lanes(n):
        gap += m - W(x[i])
    return label_loss(x, int(label), m, s, lanes_sum(gap), eps, eps / W(n))


@scalar
def label_loss(x, k, m, s, gap, eps, off):
    """The loss of a row against label ``k`` from :func:`exp_sum`'s (m, s) and
    gap = Σ (m - x_i), with smoothing ε = ``eps`` and off = ε/C."""
    smooth = off * gap if eps != W(0) else W(0)
    if eps != W(0) and gap == W(inf):  # float64 logits near finfo.min: the sum overflowed
        scaled = W(0)  # before its scaling by ε/C; sum the scaled terms (inf only if one is)
        for i in lanes(x.size):
            scaled += off * (m - W(x[i]))
        smooth = lanes_sum(scaled)
    # the label's term only with weight: at ε = 1 a -inf label logit adds 0, not 0·inf (the
    # other terms' sum is inf then: the loss is inf, as the math has it)
    label_term = (W(1) - eps) * (m - W(x[k])) if eps != W(1) else W(0)
    return F(log(s) + smooth + label_term)


def cross_entropy_probs(x, t, dx, gscale, eps_hi, eps_lo):
    """Row: cross-entropy against a probability row ``t``: q = (1 - ε)·t + ε/C,
    loss = Σ q_i·(m - x_i) + Σq·log Σ e^(x_i - m), ``dx = gscale·(softmax(x)·Σq - q)``, in W
    (ε as in :func:`cross_entropy_labels`). A row of no classes (or of all-zero q) loses 0."""
    n = x.size
    m, s = exp_sum(x)
    eps = W(eps_hi) + W(eps_lo)
    off = eps / W(n) if n > 0 else W(0)
    sq, gap = probs_sums(x, t, m, eps, off)
    rs = sq / s
    g = W(gscale)
    for i in lanes(n):
        q = (W(1) - eps) * W(t[i]) + off
        dx[i] = F(g * (exp_gradient(W(x[i]) - m) * rs - q))
    return F(gap + (sq * log(s) if sq != W(0) else W(0)))


def cross_entropy_probs_loss(x, t, eps_hi, eps_lo):
    """Row: :func:`cross_entropy_probs`' loss alone, without its gradient."""
    m, s = exp_sum(x)
    eps = W(eps_hi) + W(eps_lo)
    sq, gap = probs_sums(x, t, m, eps, eps / W(x.size) if x.size > 0 else W(0))
    return F(gap + (sq * log(s) if sq != W(0) else W(0)))


@scalar
def probs_sums(x, t, m, eps, off):
    """(Σ q_i, Σ q_i·(m - x_i)) of :func:`cross_entropy_probs`, q = (1 - ε)·t + ε/C."""
    sq = W(0)
    gap = W(0)
    for i in lanes(x.size):
        q = (W(1) - eps) * W(t[i]) + off
        sq += q
        gap += q * (m - W(x[i]))
    return lanes_sum(sq), lanes_sum(gap)


@scalar
def bce_with_logits_loss(x, t):
    """Grid: ``max(x, 0) - x·t + log1p(exp(-|x|))``, the linear part as x·(1 - t) or -x·t,
    0 where that factor is 0: x = ±inf gives the loss's limit (inf, or 0 where the target
    agrees), not inf - inf or inf·0."""
    a = F(1) - t if x > F(0) else -t
    return (F(0) if a == F(0) else x * a) + log1p(exp(-abs(x)))


def bce_with_logits(x, t, gscale):
    """Grid: the loss and its gradient ``gscale·(sigmoid(x) - t)``."""
    return bce_with_logits_loss(x, t), gscale * (sigmoid(x) - t)


@in_order
@scalar
def bce_loss(p, t):
    """Grid: ``-(t·log p + (1 - t)·log(1 - p))`` of a probability ``p``, each log clamped at
    -100 as torch's (p = 0 or 1 gives 100, not inf; NaN stays NaN). In order: reassociated,
    as lq + t·(lp − lq), it lost the digits of a small log (2e-9 of -log(1 - 1e-7))."""
    lp = log(p)
    lq = log1p(-p)
    lp = F(-100) if lp < F(-100) else lp
    lq = F(-100) if lq < F(-100) else lq
    return -(t * lp + (F(1) - t) * lq)


#: torch's floor of BCE's gradient denominator: the float32 1e-12, in float64 too
BCE_EPS = float(np.float32(1e-12))


@in_order
def bce(p, t, gscale):
    """Grid: the loss and its gradient ``(p - t)/max(p·(1 - p), BCE_EPS)·gscale``, torch's
    order (scaled first, a subnormal p - t went to 0 before the division)."""
    d = p * (F(1) - p)
    return bce_loss(p, t), (p - t) / (F(BCE_EPS) if d < F(BCE_EPS) else d) * gscale


def nll_labels(x, dx, label, gscale):
    """Row: the negative log-likelihood of log-probabilities ``x`` at class ``label``,
    ``-x[label]``; ``dx = -gscale`` there and 0 elsewhere."""
    k = int(label)
    for i in lanes(x.size):
        dx[i] = F(-gscale) if i == k else F(0)
    return -F(x[k])


def nll_labels_loss(x, label):
    """Row: :func:`nll_labels`' loss alone."""
    return -F(x[int(label)])


@scalar
def mse_loss(x, t):
    """Grid: ``(x - t)²``."""
    d = x - t
    return d * d


def mse(x, t, gscale):
    """Grid: the loss and its gradient ``gscale·2·(x - t)``."""
    return mse_loss(x, t), gscale * F(2) * (x - t)
