"""The NumPy backend's activations: plain vectorized NumPy, written independently.

Readable like a textbook and used as the oracle in the tests (which in turn check it against
float64 math and finite differences). Each function computes in the dtype of its input;
callers pass float64 where the float32 tails need it (see ``Activation.wide``).
Limits at ±inf are taken with ``np.where`` after the arithmetic, under ``np.errstate``.
"""

import math
from fractions import Fraction

import numpy as np


def _erfc(x):
    """Vectorized erfc: SciPy's when installed (imported on first use), else math.erfc."""
    try:
        from scipy.special import erfc
    except ImportError:  # pragma: no cover - depends on the environment
        return np.frompyfunc(math.erfc, 1, 1)(x).astype(x.dtype)
    return erfc(x)


def _quiet(fn):
    """Run ``fn`` with floating-point warnings off: inf and NaN are expected values here."""

    def wrapped(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


def _erfcx(x):
    """SciPy's erfcx(x) = e^(x²)·erfc(x), or None without SciPy."""
    try:
        from scipy.special import erfcx
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return erfcx(x)


def _exp_neg_half_square(x):
    """e^(-x²/2) with x² = p + p_lo split exactly (Dekker): a rounded x² would come through
    e^ amplified by x²/2 (1e-13 relative at x = -37)."""
    p = x * x
    e = np.exp(-0.5 * p)
    far = np.asarray(p > 16)  # few elements: a cheap repair (one pass to find them)
    if x.dtype == np.float64 and far.any():
        v = np.asarray(x)[far]
        e = np.asarray(e)  # np.exp's own array (or a 0-d one), changed in place
        e[far] *= np.where(np.isfinite(v * v), 1 - 0.5 * _product_error(v, v), 1.0)
    return e


def _deep_tail(y, x, where, fn):
    """``y`` with ``fn(x)`` recomputed in np.longdouble where ``where``, for float64: left
    tails where e^x is subnormal in float64 and took the result's digits with it (silu's
    x·σ(x) at x = -745 gave -0 for -1.8e-321). x86's long double has 15 exponent bits;
    where long double is float64 this changes nothing."""
    where = np.asarray(where)
    if y.dtype != np.float64 or not where.any():
        return y
    v = np.asarray(x)[where]
    y = np.asarray(y)  # the caller's new array (or a 0-d one), changed in place
    y[where] = np.where(np.isfinite(v), fn(v.astype(np.longdouble)).astype(np.float64),
                        y[where])  # ±inf: the limits y has
    return y


def _limit_times(x, gate):
    """x·gate with the limits at x = ±inf (x and 0) where inf·0 would give NaN."""
    y = x * gate
    return np.where(np.isinf(x), np.where(x > 0, x, 0), y).astype(x.dtype)


def _pos(x, a, b):
    """a where x > 0, b where x <= 0, NaN where x is NaN."""
    return np.where(x > 0, a, np.where(x <= 0, b, x)).astype(x.dtype)


def _sigmoid(x):
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


@_quiet
def sigmoid(x):
    return _sigmoid(x)


@_quiet
def sigmoid_backward(dy, x):
    s = _sigmoid(x)
    return dy * (s * _sigmoid(-x))


@_quiet
def sigmoid_backward_from_output(dy, y):
    return dy * (y * (1 - y))


@_quiet
def tanh(x):
    return np.tanh(x)


@_quiet
def tanh_backward(dy, x):
    return dy / np.cosh(x) ** 2


@_quiet
def tanh_backward_from_output(dy, y):
    return dy * ((1 - y) * (1 + y))  # 1 - y² without cancellation near |y| = 1


@_quiet
def silu(x):
    return _deep_tail(_limit_times(x, _sigmoid(x)), x, x < -700,
                      lambda v: v * np.exp(v) / (1 + np.exp(v)))


@_quiet
def silu_backward(dy, x):
    s, sm = _sigmoid(x), _sigmoid(-x)
    return dy * (s + np.where(np.isinf(x), 0, x * s * sm))


@_quiet
def relu(x):
    return _pos(x, x, 0)


@_quiet
def relu_backward(dy, x):
    return _pos(x, dy, 0)


@_quiet
def relu_backward_from_output(dy, y):
    return _pos(y, dy, 0)


@_quiet
def leaky_relu(x, negative_slope):
    return _pos(x, x, negative_slope * x)


@_quiet
def leaky_relu_backward(dy, x, negative_slope):
    return _pos(x, dy, negative_slope * dy)


@_quiet
def leaky_relu_backward_from_output(dy, y, negative_slope):
    return _pos(y, dy, negative_slope * dy)


def _channel_weight(weight, x):
    """PReLU's weight broadcast along axis 1 of ``x``."""
    if weight.size == 1 or x.ndim < 2:
        return weight.reshape(()) if weight.size == 1 else weight
    return weight.reshape((1, -1) + (1,) * (x.ndim - 2))


@_quiet
def prelu(x, weight):
    return _pos(x, x, _channel_weight(weight, x) * x)


@_quiet
def prelu_backward(dy, x, weight):
    """(dx, dweight): dweight sums x·dy over x <= 0 per channel (axis 1), products and sum
    in float64 (as the kernels do; a float32 sum down 5000 rows was 2e-5 off, float32
    products of a cancelling sum 1.6e-4), rounded to x's dtype."""
    w = _channel_weight(weight, x)
    dx = _pos(x, dy, w * dy)
    wide = x.astype(np.float64, copy=False)
    contrib = _pos(wide, 0, wide * dy)
    if weight.size == 1:
        dw = np.asarray(contrib.sum(dtype=np.float64)).reshape(weight.shape)  # 0-d: an array
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        dw = contrib.sum(axis=axes, dtype=np.float64).reshape(weight.shape)
    return dx, dw.astype(x.dtype)


@_quiet
def elu(x, alpha):
    return _pos(x, x, alpha * np.expm1(x))


@_quiet
def elu_backward(dy, x, alpha):
    return _pos(x, dy, dy * (alpha * np.exp(x)))  # dy·alpha could overflow where dx does not


@_quiet
def elu_backward_from_output(dy, y, alpha):
    return _pos(y, dy, dy * (y + alpha))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@_quiet
def selu(x):
    return SELU_SCALE * elu(x, SELU_ALPHA)


@_quiet
def selu_backward(dy, x):
    return SELU_SCALE * elu_backward(dy, x, SELU_ALPHA)


# scale·alpha = _SA + _SA_LO exactly: y + _SA is exact where it cancels (y → -scale·alpha)
_SA = SELU_SCALE * SELU_ALPHA
_SA_LO = float(Fraction(SELU_SCALE) * Fraction(SELU_ALPHA) - Fraction(_SA))


@_quiet
def selu_backward_from_output(dy, y):
    return _pos(y, SELU_SCALE * dy, dy * ((y + _SA) + _SA_LO))


def _gelu_tail(x):
    """Where float64 x < -3 (and SciPy is there): Φ(x) = erfcx(-x/√2)/2·e^(-x²/2), for
    erfc(-x/√2) loses digits there and is 0 from x = -37.7 on, where gelu is a subnormal
    down to -38.6 (and its slope Φ + x·φ then lost its Φ: 1/x² relative). Returns the mask
    and, there, (x, erfcx(-x/√2)/2, e^(-x²/2), x finite), or None."""
    tail = np.asarray(x < -3)
    if x.dtype != np.float64 or not tail.any():
        return None
    v = np.asarray(x)[tail]
    erfcx = _erfcx(-v / np.sqrt(2))
    if erfcx is None:
        return None
    return tail, v, 0.5 * erfcx, _exp_neg_half_square(v), np.isfinite(v)


@_quiet
def gelu(x):
    y = _limit_times(x, 0.5 * _erfc(-x / np.sqrt(2)))
    deep = _gelu_tail(x)
    if deep is not None:
        tail, v, half_erfcx, e, finite = deep
        y = np.asarray(y)  # _limit_times's new array, changed in place
        y[tail] = np.where(finite, (v * half_erfcx) * e, y[tail])  # -inf: the limit
    return y


@_quiet
def gelu_backward(dy, x):
    cdf = 0.5 * _erfc(-x / np.sqrt(2))
    pdf = _exp_neg_half_square(x) / np.sqrt(2 * np.pi)
    slope = cdf + np.where(np.isinf(x), 0, x * pdf)
    deep = _gelu_tail(x)
    if deep is not None:
        tail, v, half_erfcx, e, finite = deep
        slope = np.asarray(slope)  # a new array, changed in place
        slope[tail] = np.where(finite, (half_erfcx + v / np.sqrt(2 * np.pi)) * e, slope[tail])
    return dy * slope


_K = math.sqrt(2 / math.pi)


@_quiet
def gelu_tanh(x):
    u = _K * (x + 0.044715 * x**3)
    return _limit_times(x, _sigmoid(2 * u))  # (1 + tanh u)/2 = sigmoid(2u)


@_quiet
def gelu_tanh_backward(dy, x):
    u = _K * (x + 0.044715 * x**3)
    du = _K * (1 + 3 * 0.044715 * x**2)
    s, sm = _sigmoid(2 * u), _sigmoid(-2 * u)
    tail = np.where(np.abs(x) > 800, 0, x * s * sm * 2 * du)  # the tail's limit is 0
    return dy * (s + tail)


@_quiet
def softplus(x, beta, threshold):
    z = beta * x
    e = np.exp(-np.abs(z))
    far = np.asarray(z < -4)
    if x.dtype == np.float64 and far.any():  # e^z with beta·x's rounding put back (e^z_lo)
        v = np.asarray(x)[far]
        e = np.asarray(e)  # np.exp's own array, changed in place
        e[far] *= np.where(np.isfinite(v), 1 + _product_error(beta, v), 1.0)
    stable = np.maximum(z, 0) + np.log1p(e)  # log(1 + e^z), no overflow
    stable = _deep_tail(stable / beta, x, z < -700,  # e^z subnormal
                        lambda v: np.exp(np.longdouble(beta) * v) / np.longdouble(beta))
    return np.where(_above(z, x, beta, threshold), x, stable).astype(x.dtype)


@_quiet
def softplus_backward(dy, x, beta, threshold):
    z = beta * x
    return np.where(_above(z, x, beta, threshold), dy, dy * _sigmoid(z)).astype(x.dtype)


def _above(z, x, beta, threshold):
    """Whether the exact beta·x exceeds the threshold; z = beta·x rounded decides it except
    where it rounded onto the threshold, where the sign of its rounding error decides."""
    out = np.asarray(z > threshold)
    ties = np.asarray(z == threshold)
    if ties.any():
        out = out.copy()
        out[ties] = _product_error(np.float64(beta), np.asarray(x, np.float64)[ties]) > 0
    return out


def _product_error(a, b):
    """a·b - fl(a·b) exactly (Dekker's product with Veltkamp's splitting, float64)."""
    def split(v):
        c = 134217729.0 * v  # 2^27 + 1
        hi = c - (c - v)
        return hi, v - hi
    p = a * b
    (ah, al), (bh, bl) = split(a), split(b)
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_quiet
def mish(x):
    return _deep_tail(_limit_times(x, np.tanh(softplus(x, 1.0, 20.0))), x, x < -700,
                      lambda v: v * np.tanh(np.log1p(np.exp(v))))


@_quiet
def mish_backward(dy, x):
    sp = softplus(x, 1.0, 20.0)
    t = np.tanh(sp)
    tail = np.where(np.isfinite(x), x * _sigmoid(x) / np.cosh(sp) ** 2, 0)
    return dy * (t + tail)


@_quiet
def hardsigmoid(x):
    return np.clip(x + 3, 0, 6) / 6


@_quiet
def hardsigmoid_backward(dy, x):
    return np.where((x > -3) & (x < 3), dy / 6, np.where(np.isnan(x), x, 0)).astype(x.dtype)


@_quiet
def hardswish(x):
    return np.where(x <= -3, 0, np.where(x >= 3, x, x * (x + 3) / 6)).astype(x.dtype)


@_quiet
def hardswish_backward(dy, x):
    mid = dy * ((2 * x + 3) / 6)
    return np.where(x <= -3, 0, np.where(x >= 3, dy, mid)).astype(x.dtype)


def _sum(a, axis):
    """Σ along ``axis``, kept as a dimension of 1, pairwise: NumPy sums pairwise only along
    a contiguous axis (the last of a C-ordered array); elsewhere a running sum lost digits
    that dy - exp(y)·Σ amplifies where it cancels (log_softmax's backward, float64: 1.3e-12
    off along a line of 695, 2.8e-12 along the rows of a Fortran-ordered array)."""
    if a.ndim <= 1 or (axis in (-1, a.ndim - 1) and a.flags.c_contiguous):
        return np.sum(a, axis=axis, keepdims=True)
    return np.expand_dims(np.sum(np.ascontiguousarray(np.moveaxis(a, axis, -1)), axis=-1),
                          axis)


@_quiet
def softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / _sum(e, axis)


@_quiet
def softmax_backward(dy, y, axis):
    return (dy - _sum(dy * y, axis)) * y


@_quiet
def log_softmax(x, axis):
    """(x - max) - log Σ with log Σ = log1p(k - 1 + t) (k elements at the max, t the others'
    sum): log(Σ) itself loses every digit where Σ is within rounding of 1."""
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    at_max = shifted == 0
    k = _sum(at_max.astype(x.dtype), axis)
    t = _sum(np.where(at_max, 0.0, np.exp(shifted)), axis)
    return shifted - np.log1p((k - 1) + t)


@_quiet
def log_softmax_backward(dy, y, axis):
    return dy - np.exp(y) * _sum(dy, axis)


@_quiet
def log_softmax_backward_from_input(dy, x, axis):
    """dy - softmax(x)·Σ dy: exp of a rounded log_softmax(x) is off by ~|y| ULP, which the
    cancellation of dy - exp(y)·Σ amplifies."""
    return dy - softmax(x, axis) * _sum(dy, axis)
