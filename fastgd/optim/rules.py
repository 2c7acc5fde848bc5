"""The math of every update rule, written once as scalar functions of one element.

Each rule takes one element of the parameter, the gradient and the optimizer state, then the
per-step scalars, and returns ``(new_p, new_state...)`` (a single value when there is no
state). The Numba CPU and CUDA backends compile it into one fused *map* loop whose outputs
are the parameter and state arrays themselves, so a step reads and writes each stream once.

Per-step scalars (learning rate, bias corrections, the clip coefficient) are computed on the
host in float64, in PyTorch's order of operations, by the optimizer classes
(:mod:`fastgd.optim.optimizers`) and passed here already combined: a rule never raises
``beta ** t``. Each rule follows the element-wise operations of ``torch.optim``'s
single-tensor implementation: ``addcdiv_(a, b, value=c)`` is ``p + (c*a)/b``,
``addcmul_(a, b, value=c)`` is ``p + (c*a)*b``, ``lerp`` is PyTorch's two-sided lerp.
Every rule is marked :func:`~fastgd.scalar.in_order`, so the Numba CPU backend keeps that order
(no ``reassoc``: ``(c*g)*g`` does not become ``c*(g*g)``, which overflows where PyTorch's
does not).

Every rule starts with :func:`grad_in`: the gradient clamped to ``±clip`` (``clip_value=``;
``inf`` when off) and multiplied by ``scale`` (the clip-by-norm coefficient, negated when
maximizing; ``1`` otherwise). Weight decay is skipped when ``wd == 0``, as in PyTorch.
"""

from math import inf, nan

from fastgd.scalar import F, fmax, in_order, lanes, lanes_max, lanes_sum, scalar, sqrt

# -- helpers ----------------------------------------------------------------------------


@scalar
def grad_in(g, clip, scale):
    """The gradient as the rule sees it: clamped to [-clip, clip] (NaN stays NaN), scaled."""
    if g > clip:
        g = clip
    elif g < -clip:
        g = -clip
    return scale * g


@scalar
def l2(g, p, wd):
    """``g + wd·p`` (coupled weight decay), skipped when ``wd == 0`` as in PyTorch."""
    if wd != F(0):
        return g + wd * p
    return g


@scalar
def lerp(a, b, w):
    """PyTorch's lerp: ``a + w·(b − a)`` for ``|w| < 0.5``, else ``b − (b − a)·(1 − w)``."""
    if abs(w) < F(0.5):
        return a + w * (b - a)
    return b - (b - a) * (F(1) - w)


@scalar
def centered_var(v, ga):
    """``v − ga²`` as torch's ``addcmul(v, ga, ga, value=-1)``, a fused multiply-add, has it
    where ga² overflows: v = inf (these averages keep v ≥ ga²) stays inf for a finite ga,
    where inf − inf would be NaN."""
    if v == F(inf) and abs(ga) < F(inf):
        return v
    return v - ga * ga


@scalar
def maximum(a, b):
    """``torch.maximum``: the larger value, NaN if either is NaN."""
    if a > b or a != a:
        return a
    return b


@scalar
def sign(x):
    """-1, 0 or 1 (NaN stays NaN)."""
    if x > F(0):
        return F(1)
    if x < F(0):
        return F(-1)
    return x


@scalar
def ema_sq(v, g, beta, omb):
    """``v·β + ((1 − β)·g)·g``: PyTorch's ``v.mul_(β).addcmul_(g, g, value=1 − β)``."""
    return beta * v + (omb * g) * g


@scalar
def sumsq_row(g, clip, strict, scale):
    """Sum of squares of one row of the gradient clamped to ±clip, times ``scale`` before it
    is squared; NaN if an element is NaN, and with ``strict`` (skip_nonfinite) inf if one is
    ±inf before the clamp. (Not ``acc += v - v``: with reassoc LLVM makes ``(acc + v) - v`` of
    it, then ``acc``.)"""
    acc = F(0)
    for i in lanes(g.size):
        v = F(g[i])
        c = (clip if v > clip else (-clip if v < -clip else v)) * scale
        acc += c * c
        if strict != F(0) and not abs(v) < F(inf):
            acc += F(inf)
    return lanes_sum(acc)


@scalar
def maxabs_row(g):
    """The largest |g| of one row, NaN if an element is NaN (``fmax`` alone ignores one)."""
    m = F(0)
    nans = F(0)
    for i in lanes(g.size):
        v = abs(F(g[i]))
        m = fmax(m, v)
        nans += F(0) if v == v else F(1)
    m = lanes_max(m)
    return m if lanes_sum(nans) == F(0) else F(nan)


# -- SGD --------------------------------------------------------------------------------


@in_order
def sgd(p, g, clip, scale, wd, lr):
    """Plain SGD: ``p ← p − lr·(g + wd·p)``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    return p - lr * g


@in_order
def sgd_momentum(p, g, buf, clip, scale, wd, lr, momentum, damp1, first, nesterov):
    """SGD with momentum: ``buf ← g`` on the first step (``first == 1``), else
    ``buf ← μ·buf + (1 − dampening)·g`` (``damp1``); then ``g + μ·buf`` (nesterov) or ``buf``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    if first != F(0):
        buf = g
    else:
        buf = momentum * buf + damp1 * g
    if nesterov != F(0):
        g = g + momentum * buf
    else:
        g = buf
    return p - lr * g, buf


# -- Adagrad ----------------------------------------------------------------------------


@in_order
def adagrad(p, g, acc, clip, scale, wd, clr, eps):
    """Adagrad: ``acc ← acc + g²``; ``p ← p − (clr·g)/(√acc + eps)``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    acc = acc + g * g
    return p - (clr * g) / (sqrt(acc) + eps), acc


# -- RMSprop ----------------------------------------------------------------------------


@in_order
def rmsprop(p, g, v, clip, scale, wd, alpha, oma, eps, lr):
    """RMSprop: ``v ← α·v + (1 − α)·g²``; ``p ← p − (lr·g)/(√v + eps)``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    v = ema_sq(v, g, alpha, oma)
    return p - (lr * g) / (sqrt(v) + eps), v


@in_order
def rmsprop_centered(p, g, v, ga, clip, scale, wd, alpha, oma, eps, lr):
    """Centered RMSprop: the denominator is ``√(v − ga²) + eps`` with ``ga`` the mean gradient."""
    g = l2(grad_in(g, clip, scale), p, wd)
    v = ema_sq(v, g, alpha, oma)
    ga = lerp(ga, g, oma)
    return p - (lr * g) / (sqrt(centered_var(v, ga)) + eps), v, ga


@in_order
def rmsprop_momentum(p, g, v, buf, clip, scale, wd, alpha, oma, eps, lr, momentum):
    """RMSprop with momentum: ``buf ← μ·buf + g/(√v + eps)``; ``p ← p − lr·buf``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    v = ema_sq(v, g, alpha, oma)
    buf = momentum * buf + g / (sqrt(v) + eps)
    return p - lr * buf, v, buf


@in_order
def rmsprop_centered_momentum(p, g, v, ga, buf, clip, scale, wd, alpha, oma, eps, lr, momentum):
    """Centered RMSprop with momentum."""
    g = l2(grad_in(g, clip, scale), p, wd)
    v = ema_sq(v, g, alpha, oma)
    ga = lerp(ga, g, oma)
    buf = momentum * buf + g / (sqrt(centered_var(v, ga)) + eps)
    return p - lr * buf, v, ga, buf


# -- Adam family ------------------------------------------------------------------------


@scalar
def adam_moments(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2):
    """Where every Adam-like rule starts: the gradient in, ``p ← decay·p`` (AdamW's
    ``1 − lr·wd``, else 1), Adam's L2 term, then ``m ← lerp(m, g, 1 − β1)`` and
    ``v ← β2·v + (1 − β2)·g²``. Returns ``(p, g, m, v)``."""
    g = grad_in(g, clip, scale)
    p = decay * p
    g = l2(g, p, wd)
    return p, g, lerp(m, g, w1), ema_sq(v, g, beta2, omb2)


@in_order
def adam(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2, bc2_sqrt, step_size, eps):
    """Adam / AdamW: ``p ← decay·p`` (AdamW's ``1 − lr·wd``, else 1); ``m ← lerp(m, g, 1 − β1)``;
    ``v ← β2·v + (1 − β2)·g²``; ``p ← p − (step_size·m)/(√v/√bc2 + eps)``,
    ``step_size = lr/bc1``."""
    p, g, m, v = adam_moments(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2)
    return p - (step_size * m) / (sqrt(v) / bc2_sqrt + eps), m, v


@in_order
def adam_amsgrad(p, g, m, v, vmax, clip, scale, wd, decay, w1, beta2, omb2, bc2_sqrt,
                 step_size, eps):
    """Adam / AdamW with AMSGrad: the denominator uses ``vmax ← max(vmax, v)``."""
    p, g, m, v = adam_moments(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2)
    vmax = maximum(vmax, v)
    return p - (step_size * m) / (sqrt(vmax) / bc2_sqrt + eps), m, v, vmax


@in_order
def nadam(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2, bc2, eps, coef_g, coef_m):
    """NAdam: ``denom = √(v/bc2) + eps``; ``p ← p + (coef_g·g)/denom + (coef_m·m)/denom`` with
    ``coef_g = −lr·(1 − μ_t)/(1 − Πμ)``, ``coef_m = −lr·μ_{t+1}/(1 − Πμ·μ_{t+1})``."""
    p, g, m, v = adam_moments(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2)
    denom = sqrt(v / bc2) + eps
    p = p + (coef_g * g) / denom
    return p + (coef_m * m) / denom, m, v


@in_order
def radam(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2, bc1, lr, bc2_sqrt, eps, rect,
          rectify):
    """RAdam: ``p ← p − ((m/bc1)·lr)·((1/(√v + eps))·√bc2)·r`` once the variance is tractable
    (``rectify == 1``, ρ_t > 5), else ``p ← p − (m/bc1)·lr``. The adaptive lr is a
    reciprocal times √bc2, as torch's ``√bc2 / tensor`` computes it (``__rtruediv__``)."""
    p, g, m, v = adam_moments(p, g, m, v, clip, scale, wd, decay, w1, beta2, omb2)
    step = (m / bc1) * lr
    if rectify != F(0):
        step = (step * ((F(1) / (sqrt(v) + eps)) * bc2_sqrt)) * rect
    return p - step, m, v


@in_order
def adamax(p, g, m, u, clip, scale, wd, w1, beta2, eps, clr):
    """Adamax: ``u ← max(β2·u, |g| + eps)``; ``p ← p − (clr·m)/u``, ``clr = lr/bc1``."""
    g = l2(grad_in(g, clip, scale), p, wd)
    m = lerp(m, g, w1)
    u = maximum(u * beta2, abs(g) + eps)
    return p - (clr * m) / u, m, u


# -- Lion -------------------------------------------------------------------------------


@in_order
def lion(p, g, m, clip, scale, decay, lr, beta1, omb1, beta2, omb2):
    """Lion: ``p ← decay·p − lr·sign(β1·m + (1 − β1)·g)``; ``m ← β2·m + (1 − β2)·g``."""
    g = grad_in(g, clip, scale)
    p = decay * p
    u = sign(beta1 * m + omb1 * g)
    return p - lr * u, beta2 * m + omb2 * g


def scale(x, c):
    """``x ← c·x`` (clip_grad_norm's in-place rescale)."""
    return c * x


def clamp(x, c):
    """``x ← min(max(x, −c), c)``, NaN kept (clip_grad_value)."""
    return grad_in(x, c, F(1))
