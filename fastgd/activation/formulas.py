"""The math of every activation, written once as scalar functions.

Each ``NAME(x, *params)`` is the forward value and ``NAME_backward(dy, x, *params)`` the
input gradient, computed from the forward *input* (PyTorch computes several backwards from
the output, which loses every digit in the tails). Float type and transcendental functions
come from :mod:`fastgd.scalar`, bound per backend and dtype; the Numba CPU and CUDA kernels
are generated from these functions (see :mod:`fastgd.backends.codegen`).

Conventions: NaN in gives NaN out; ±inf give the mathematical limit (hence the ``clip`` of
``x`` where ``x * 0`` would turn a limit into NaN); at kinks the backward follows PyTorch.
Row-wise ops (softmax, log_softmax) are written over one row.
"""

import math
from fractions import Fraction
from math import inf

from fastgd.scalar import (
    F,
    W,
    exp,
    expm1,
    fma,
    fmax,
    grouped,
    lanes,
    lanes_max,
    lanes_sum,
    log,
    log1p,
    mul_exp,
    normal_tail,
    output_first,
    scalar,
    tanh,
)

SQRT_2_OVER_PI = 0.79788456080286535588
GELU_TANH_C = 0.044715
GELU_TANH_A = 2 * SQRT_2_OVER_PI  # z = 2u = A·x + B·x³
GELU_TANH_B = 2 * SQRT_2_OVER_PI * GELU_TANH_C
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# scale·alpha of the float64 constants (those the forward multiplies by, as torch's) =
# SELU_SA + SELU_SA_LO exactly: the product's rounding, 1 ULP of 1.76, is 2e-13 of
# y + scale·alpha where it cancels to 1e-3
SELU_SA = SELU_SCALE * SELU_ALPHA
SELU_SA_LO = float(Fraction(SELU_SCALE) * Fraction(SELU_ALPHA) - Fraction(SELU_SA))
BIG = 800.0  # |x| beyond which every smooth activation sits at its limit, in float64 too
# Tails: e^x = e^(x + SHIFT)·e^-SHIFT keeps e^(x + SHIFT) normal where e^x is subnormal in
# float32; x + SHIFT is exact for x in [-2·SHIFT, -SHIFT/2], and the e^-SHIFT constants are
# applied as hi + lo parts with one final fma.
SHIFT = 64.0
SUM_BLOCK = 64  # elements a row sum adds in the working type before it adds them into W
#: log_softmax sums its terms times this (exact: a power of 2), so that terms that would be
#: subnormal in the working type keep their digits (e^-100 in float32 kept 4 bits)
TERM_SCALE = 2.0**64
EXP_NEG_SHIFT, EXP_SHIFT = math.exp(-SHIFT), math.exp(SHIFT)  # constants: numba-cuda
# would compute math.exp(SHIFT) in the kernel, in float64

# Fitted tables, from tools/fit_formulas.py. softplus's log1p(e), e in [0, 1], in float32:
LOG1P_UNIT = (  # log1p(e)/e on [0, 1], relative error ~8.4e-10
    0.9999999991556823, -0.4999997949139123, 0.3333249754352652, -0.24986496459409926,
    0.19885820285008451, -0.16087623009295732, 0.12377995867871511, -0.08188040923582843,
    0.041006573693958395, -0.013187826565578388, 0.0019866965936534606)
# Near a simple zero x0 of a derivative its formula cancels: the float32 kernels use
# dx = d(h) + t·P(t), t = x - h, there (see :func:`near_root`).
ROOTS = {  # name: (h = x0 in float32, a, b, d(h) then P lowest degree first)
    # x0 = -1.2784645427610737951, relative error of P ~4.5e-10
    "silu": (-1.2784645557403564, -1.8, -1.0, (
        -2.8270396683554365e-09, 0.21781170185057971, 0.1466487951180805, 0.018874826617131437,
        -0.01522254688856036, -0.006606812323922808, 0.00012398217520985104,
        0.0007964923910782827, 0.00020266298806187387)),
    # x0 = -1.1924312145154952121, relative error of P ~3.7e-9
    "mish": (-1.1924312114715576, -2.75, -0.55, (
        8.12572793365832e-10, 0.26694791522124917, 0.2047312657256978, 0.041907825520675415,
        -0.020271863727535734, -0.015821190692572675, -0.0033603205750178076, 0.001092882110261342,
        0.0009885102560192372, 0.00025207881420111016, -4.033558701613872e-05,
        -5.1544369658273175e-05, -1.6234992783631716e-05, -1.953875380389837e-06)),
    # x0 = -0.75246142207101625849, relative error of P ~9.1e-10
    "gelu_tanh": (-0.7524614334106445, -1.6, -0.35, (
        -4.880576990954944e-09, 0.4304000821886158, 0.3875184459796547, -0.015782838954965277,
        -0.11394444452163828, -0.016619602593541234, 0.019681604202853673, 0.0052636606285319945,
        -0.0024164826654555546, -0.0009361421817965315, 0.00023880208779662846,
        0.00012722039971730734)),
    # x0 = -0.75179152469356445746, relative error of P ~4.3e-10
    "gelu": (-0.7517915368080139, -1.6, -0.35, (
        -5.227312104575155e-09, 0.4314939828790502, 0.38828498325123173, -0.018199665728409954,
        -0.1140082089376912, -0.014771664556634187, 0.01942122449064675, 0.004540413221541951,
        -0.0022356774908607368, -0.000747390604845867, 0.00017305577657916794,
        8.145224103992313e-05)),
}
SILU_ROOT, MISH_ROOT = ROOTS["silu"], ROOTS["mish"]
GELU_TANH_ROOT, GELU_ROOT = ROOTS["gelu_tanh"], ROOTS["gelu"]


@scalar
def clip(x, lo, hi):
    """``x`` limited to ``[lo, hi]``; NaN stays NaN."""
    return lo if x < lo else (hi if x > hi else x)


@scalar
def at_least(t, lo):
    """max(t, lo), keeping a NaN t (x86's ``maxps`` in one instruction)."""
    return lo if t < lo else t


@scalar
def x_times(x, gate):
    """x·gate for a gate that tends to 1 as x → +inf and to 0 as x → -inf.

    Equal to ``x * gate`` for finite x; gives the limits (x, and 0) instead of inf·0 = NaN.
    """
    return x * gate if not (abs(x) > F(BIG)) else (x if x > F(0) else F(-0.0))


@scalar
def times_const(m, c):
    """m·c for a float64 constant ``c`` as hi + lo parts of the working type, rounded once."""
    hi = F(c)
    return fma(m, hi, m * F(c - W(hi)))


@scalar
def single():
    """True when the working type is float32 (1 + 2^-30 rounds to 1)."""
    return F(1) + F(2.0**-30) == F(1)


@scalar
def exp_neg_abs(x):
    """exp(-|x|), or exp(x + SHIFT) below -SHIFT (one exp call for both, so a vectorized
    loop pays for one): the scaled value that :func:`x_exp_x` needs there. The argument
    stops at -:func:`exp_normal` (x > 87 in float32: the callers' results are their limits
    there), and it is 0 where x·e^x rounds to 0 (:func:`x_exp_x_zero`), computed on 0."""
    zero = x < -x_exp_x_zero()
    t = clip(x, F(-BIG), F(0)) + F(SHIFT) if x < F(-SHIFT) else -abs(x)
    e = exp(F(0) if zero else at_least(t, -exp_normal()))
    return F(0) if zero else e


@scalar
def x_exp_x_zero():
    """-x past which x·e^x rounds to -0: 109 in float32, 752 in float64."""
    return F(109) if single() else F(752)


@scalar
def x_exp_x(x, e):
    """x·e^x for x < -SHIFT given e = exp_neg_abs(x) = e^(x + SHIFT): (x·e)·e^-SHIFT, no
    factor subnormal, one rounding into a subnormal result at most (mish's tail)."""
    return times_const(clip(x, F(-BIG), F(0)) * e, EXP_NEG_SHIFT)


@scalar
def near_root(x, d, root):
    """``d``, or in float32 near the zero x0 of a derivative, its local expansion.

    ``root`` is ``(h, a, b, c)`` from :data:`ROOTS`: h is x0 rounded to float32, so t = x - h
    has one rounding at most (none on [2h, h/2]), and c0 + t·(c1 + t·(...)) has no
    cancellation on [a, b], where ``d``'s terms cancel and their float32 roundings would be
    amplified (c0 = d(h), ~1e-9). float64 keeps ``d``: its error there is below 1e-13,
    inside the contract.
    """
    h, a, b, c = root
    t = x - F(h)
    p = F(c[len(c) - 1])
    for k in range(len(c) - 2, -1, -1):
        p = F(c[k]) + t * p
    return p if single() and x >= F(a) and x <= F(b) else d


@scalar
def if_positive(x, a, b):
    """``a`` where ``x > 0``, ``b`` where ``x <= 0``, and NaN where ``x`` is NaN."""
    return a if x > F(0) else (b if x <= F(0) else x)


# -- tails past the normal numbers ------------------------------------------------------
# A subnormal number, as the input or the result of a vector instruction in any lane, costs
# x86 CPUs a microcode assist for the whole vector (Sapphire Rapids VM, 2^16 float32, one
# thread: sigmoid took 26 us on N(0, 1) data and 322 on N(0, 50); tanh's backward 30 and 283
# on N(0, 20)). Where an op's result is its limit, or a backward's |dx| is below the
# contract's absolute error, but its math would form one, the lane computes on a harmless
# value and takes the limit.


@scalar
def exp_normal():
    """t up to which e^-t is a normal number: 87 in float32 (e^-87.34 is the smallest),
    708 in float64."""
    return F(87) if single() else F(708)


@scalar
def exp_zero():
    """t past which e^-t rounds to 0: 104 in float32, 746 in float64."""
    return F(104) if single() else F(746)


@scalar
def backward_tail():
    """-x past which a backward's factor e^x (and x·e^x) is dropped: in float32 where it
    leaves the normal numbers (|dx| < 1.5e-36·|dy| there, within the contract's absolute
    error 1e-6·|dy|), in float64 where the factor rounds to 0 (:func:`x_exp_x_zero`: the
    float64 contract is relative)."""
    return F(87) if single() else x_exp_x_zero()


@scalar
def exp_backward(x):
    """exp(-|x|) for the backwards, its argument stopped at -:func:`backward_tail` (the
    callers drop it past there); a NaN stays."""
    return exp(at_least(-abs(x), -backward_tail()))


# -- sigmoid family ---------------------------------------------------------------------


@scalar
def sigmoid(x):
    """1/(1+e) or e/(1+e) with e = exp(-|x|): never overflows, and for x < 0 keeps the
    result's digits down into the subnormals; 1 past :func:`exp_normal`, 0 past
    -:func:`exp_zero`."""
    far = x > exp_normal() or x < -exp_zero()
    e = exp(-abs(exp_normal() if far else x))  # r = 1 exactly from exp_normal() on
    r = F(1) / (F(1) + e)
    y = r if x >= F(0) else e * r
    return F(0) if x < -exp_zero() else y


@scalar
def sigmoid_slope(x):
    """sigmoid(x)·sigmoid(-x) = e/(1+e)² with e = exp(-|x|): no cancellation in the tails;
    0 past ±:func:`backward_tail`, where exp's argument stops."""
    e = exp_backward(x)
    d = e / ((F(1) + e) * (F(1) + e))
    return F(0) if abs(x) > backward_tail() else d


def sigmoid_backward(dy, x):
    return dy * sigmoid_slope(x)


def sigmoid_backward_from_output(dy, y):
    """σ' = y·(1 - y); 1 - y is exact for y >= 1/2."""
    return dy * (y * (F(1) - y))


def tanh_(x):
    return tanh(x)


def tanh_backward(dy, x):
    """1 - tanh² = 4e/(1+e)² with e = exp(-2|x|); 0 past ±:func:`backward_tail`/2 (in
    float64 past 374, where 4e rounds to 0), where exp's argument stops."""
    t = F(-2) * abs(x)
    lo = -backward_tail() if single() else F(-748)
    e = exp(at_least(t, lo))
    d = F(4) * e / ((F(1) + e) * (F(1) + e))
    return dy * (F(0) if t < lo else d)


def tanh_backward_from_output(dy, y):
    """1 - y² as (1 - y)(1 + y): no cancellation where |y| is near 1."""
    return dy * ((F(1) - y) * (F(1) + y))


def silu(x):
    """x/(1 + e) or x·e/(1 + e), e = exp(-|x|) (one division). Below -SHIFT, where e would be
    subnormal in float32 but silu is not, exp's argument is raised by SHIFT and the
    denominator by e^SHIFT: x·e^(x+S)/(e^S + e^(x+S)) is the same fraction, rounded once.
    exp's argument stops at -:func:`exp_normal` (x/(1 + e) = x there; below -SHIFT - that,
    x·e^x rounds to -0 all the same)."""
    deep = x < F(-SHIFT)
    t = (F(SHIFT) if deep else F(0)) - abs(x)
    e = exp(at_least(t, -exp_normal()))
    num = x if x >= F(0) else (F(-BIG) if x < F(-BIG) else x) * e  # no -inf·0
    return num / ((F(EXP_SHIFT) if deep else F(1)) + e)


def silu_backward(dy, x):
    """σ(x)·(1 + x·σ(-x)) as one fraction of e = exp(-|x|): (1 + e + x·e)/(1 + e)² for
    x >= 0, e·(1 + x + e)/(1 + e)² for x < 0 (1 + x is exact near the zero x0 ≈ -1.278,
    where :func:`near_root` takes over in float32). Past ±:func:`backward_tail` exp's
    argument stops there (the fraction is 1 for x > 0), and e is 0 for x < 0."""
    e = F(0) if x < -backward_tail() else exp_backward(x)
    xc = clip(x, F(-BIG), F(BIG))
    q = F(1) + e
    num = e * ((F(1) + xc) + e) if x < F(0) else q + xc * e
    return dy * near_root(x, num / (q * q), SILU_ROOT)


# -- rectifiers -------------------------------------------------------------------------


def relu(x):
    return if_positive(x, x, F(0))


def relu_backward(dy, x):
    return if_positive(x, dy, F(0))


def relu_backward_from_output(dy, y):
    return if_positive(y, dy, F(0))


@scalar
def leaky_relu(x, negative_slope):
    """x, or negative_slope·x: NaN at x = -inf for a slope of 0, as in torch (a select that
    gave the limit there cost a fifth of leaky_relu's 49 GB/s at 2^24, streaming stores
    lost)."""
    return if_positive(x, x, negative_slope * x)


@scalar
def leaky_relu_backward(dy, x, negative_slope):
    return if_positive(x, dy, negative_slope * dy)


def leaky_relu_backward_from_output(dy, y, negative_slope):
    """y > 0 exactly where x > 0, for negative_slope >= 0."""
    return if_positive(y, dy, negative_slope * dy)


@scalar
def prelu_dweight(dy, x):
    """One element's contribution to PReLU's weight gradient: x·dy where x <= 0."""
    return if_positive(x, F(0), x * dy)


def prelu_row(x, y, slope):
    """PReLU on one row of one channel: leaky_relu with that channel's slope."""
    for i in lanes(x.size):
        y[i] = leaky_relu(F(x[i]), slope)


def prelu_backward_row(dy, x, dx, slope):
    """dx for one row of one channel; returns the row's share of that channel's dweight."""
    acc = F(0)
    for i in lanes(x.size):
        g, v = F(dy[i]), F(x[i])
        dx[i] = leaky_relu_backward(g, v, slope)
        acc += prelu_dweight(g, v)
    return lanes_sum(acc)


def prelu_dweight_row(dy, x):
    """One row's share of its channel's dweight (a row per channel: the whole of it)."""
    acc = F(0)
    for i in lanes(x.size):
        acc += prelu_dweight(F(dy[i]), F(x[i]))
    return lanes_sum(acc)


def elu(x, alpha):
    return if_positive(x, x, alpha * expm1(x))


@scalar
def exp_left(x):
    """e^x for x <= 0, and 1 above, where the elu family's backward discards it: those lanes
    form no large e^x (with them, elu's backward ran at a third of its speed on N(0, 3) data
    at 2^24 when Numba loaded it from its cache, for reasons not found; see reports/NOTES.md);
    0 past -:func:`backward_tail`."""
    deep = x < -backward_tail()
    e = exp(F(0) if x > F(0) or deep else x)
    return F(0) if deep else e


def elu_backward(dy, x, alpha):
    """dy·(alpha·e^x) for x <= 0: (dy·alpha)·e^x overflowed for |dy| near the float maximum
    and alpha > 1, where the gradient is finite."""
    return if_positive(x, dy, dy * (alpha * exp_left(x)))


def elu_backward_from_output(dy, y, alpha):
    """alpha·e^x = y + alpha for x <= 0 (alpha >= 0). y + alpha cancels as y → -alpha: it
    is exact there (Sterbenz) when alpha is exact in the working type, so float32 computes
    it in float32 only for such alphas (``narrow``), others in float64."""
    return if_positive(y, dy, dy * (y + alpha))


@scalar
def times_selu_scale(v):
    """scale·v as v + (scale - 1)·v in one fma: rounded once, so finite wherever scale·v
    rounds to a finite value (float32's scale rounds up: v·F(scale) overflowed to inf for
    v = 3.2386e38, where scale·v rounds to the float32 maximum); ±inf and NaN pass."""
    return fma(v, F(SELU_SCALE - 1.0), v)


@grouped  # with reassoc LLVM folded times_selu_scale's fma(v, c, v) back into v·(c + 1)
def selu(x):
    return times_selu_scale(if_positive(x, x, F(SELU_ALPHA) * expm1(x)))


def selu_backward(dy, x):
    return times_selu_scale(if_positive(x, dy, dy * (F(SELU_ALPHA) * exp_left(x))))


def selu_backward_from_output(dy, y):
    """scale·alpha·e^x = y + scale·alpha for x <= 0, with scale·alpha as hi + lo parts of
    the working type: y + hi is exact where it cancels (y → -scale·alpha, as for elu), and
    dy·lo is added in the fma that multiplies it by dy (a plain sum would be reassociated
    into y + (hi + lo), and lo lost)."""
    lo = F((SELU_SA - W(F(SELU_SA))) + SELU_SA_LO)
    return if_positive(y, times_selu_scale(dy), fma(dy, y + F(SELU_SA), dy * lo))


# -- smooth rectifiers ------------------------------------------------------------------


@scalar
def normal_parts(x):
    """(xc, hi, lo): x clipped to ±BIG, and -x²/2 = hi + lo split exactly (exp would amplify
    a rounding of x² by x²/2)."""
    xc = clip(x, F(-BIG), F(BIG))
    p = xc * xc
    return xc, F(-0.5) * p, F(-0.5) * fma(xc, xc, -p)


#: x past which GELU rounds to x and its derivative to 1, in float32 and float64
#: (x·Φ(-x) < 1e-22·x)
GELU_ONE = 10.0


@scalar
def gelu_zero():
    """-x past which GELU and its derivative round to -0 (|x·Φ(x)| below half the smallest
    subnormal from x = -14.41 in float32, -38.6 in float64)."""
    return F(14.5) if single() else F(39)


@scalar
def gelu_backward_zero():
    """-x past which GELU's derivative is taken as -0: in float32 13, where it is -1.0e-36
    (within the contract's absolute error; past 13.2 its e^(-x²/2) leaves the normal
    numbers), in float64 :func:`gelu_zero`, where it rounds to -0."""
    return F(13) if single() else gelu_zero()


@scalar
def gelu_inside(x, zero):
    """Whether GELU computes x (False for NaN): beyond [-zero, GELU_ONE] its math would form
    subnormal numbers for results that are their limits, and a subnormal costs x86 CPUs a
    microcode assist for the whole vector (8,192 float32 of -20 or 20: 45-48 against 10 us,
    one thread, Sapphire Rapids VM); such lanes compute on 1 and take the limit. It also keeps
    :func:`normal_tail`'s -x²/2 within the range its CPU kernel takes (no clamps there)."""
    return x >= -zero and x <= F(GELU_ONE)


def gelu(x):
    """x·Φ(x): for x < 0 one :func:`normal_tail` with m = x, rounded about once also where
    Φ(x) alone would be subnormal; for x >= 0, x - x·Φ(-x) in one fma; beyond
    :func:`gelu_inside`, -0 or x."""
    inside = gelu_inside(x, gelu_zero())
    xc, hi, lo = normal_parts(x if inside else F(1))
    neg = xc < F(0)
    t = normal_tail(xc if neg else F(1), F(0), xc, hi, lo)
    return (t if neg else fma(-xc, t, xc)) if inside else (F(-0.0) if x < F(0) else x)


def gelu_backward(dy, x):
    """Φ(x) + x·φ(x) from one :func:`normal_tail`: m = 1, c = x for x < 0, and
    1 - (Φ(-x) - x·φ(x)) for x >= 0; float32 uses :func:`near_root` around the zero
    x0 ≈ -0.752; beyond :func:`gelu_inside` (left of -:func:`gelu_backward_zero`), -0
    or 1. In the far left tail |dx| < 1e-3·|dy|: the contract asks an absolute error there,
    so nothing is rescaled."""
    inside = gelu_inside(x, gelu_backward_zero())
    xc, hi, lo = normal_parts(x if inside else F(1))
    neg = xc < F(0)
    r = normal_tail(F(1), xc if neg else -xc, xc, hi, lo)
    d = near_root(x, r if neg else F(1) - r, GELU_ROOT)
    return dy * (d if inside else (F(-0.0) if x < F(0) else (F(1) if x > F(0) else x)))


@scalar
def gelu_tanh_mul_exp(m, xc, left):
    """m·e^(-|z|) as one :func:`mul_exp`, for z = 2u = A·x + B·x³
    (0.5·x·(1 + tanh(u)) = x·σ(z)): the roundings of both products and of their sum are put
    back (``fma``, :func:`mul_exp`), as
    exp would amplify each by |z|, up to ~100 in float32; and no factor is subnormal where
    the product is not (x·σ(z) is normal down to x ≈ -10.3, e^z only to x ≈ -10.1)."""
    a_hi, b_hi = F(GELU_TANH_A), F(GELU_TANH_B)
    t1 = a_hi * xc
    t1_lo = fma(a_hi, xc, -t1) + F(GELU_TANH_A - W(a_hi)) * xc
    p = xc * xc
    c3 = p * xc
    c3_lo = fma(p, xc, -c3) + fma(xc, xc, -p) * xc  # x³ = c3 + c3_lo
    t3 = b_hi * c3
    t3_lo = fma(b_hi, c3, -t3) + (b_hi * c3_lo + F(GELU_TANH_B - W(b_hi)) * c3)
    lo = t1_lo + t3_lo  # t1 and t3 have x's sign, so -|z| = -|t1| - |t3| - sign(x)·lo
    # Beyond these |z| the callers' results are their limits (x·σ(z) = x or 0, σ' = 0), or
    # for x < 0 (``left``) within the contract's absolute error; m = 0 there keeps the lane
    # from forming subnormal numbers (x86 takes a slow assist for each)
    live = abs(t1) + abs(t3) < (left if xc < F(0) else (F(30) if single() else F(60)))
    return mul_exp(m if live else F(0), -abs(t1), abs(t3), lo if xc < F(0) else -lo)


def gelu_tanh(x):
    """x·σ(z) as (x·e)/(1 + e) or x/(1 + e), e = e^(-|z|): x·e as one product
    (:func:`gelu_tanh_mul_exp`), e from it by one division; beyond ±BIG the limits."""
    xc = clip(x, F(-BIG), F(BIG))
    # x·e^z rounds to 0 from |z| = 106.4 in float32 (x ≈ -10.8)
    xe = gelu_tanh_mul_exp(xc, xc, F(107) if single() else F(800))
    e = xe / xc if xc != F(0) else F(1)
    y = (xe if xc < F(0) else xc) / (F(1) + e)
    return y if abs(x) <= F(BIG) else x_times(x, F(1))


def gelu_tanh_backward(dy, x):
    """σ(z) + x·σ'(z)·z' as one fraction of e = e^(-|z|) and we = w·e, w = 1 + x·z',
    z' = A + 3B·x²: (we + e²)/(1 + e)² for x < 0, (1 + we)/(1 + e)² for x >= 0; we as one
    product (:func:`gelu_tanh_mul_exp`: it keeps its digits where e^z is subnormal), e from it
    by one division; float32 uses :func:`near_root` around the zero x0 ≈ -0.752 (where w
    can be 0, and e with it NaN)."""
    xc = clip(x, F(-BIG), F(BIG))
    # z' with the constants' and x²'s roundings put back: none is amplified, but each would
    # bias every result the same way
    a_hi, b3_hi, p = F(GELU_TANH_A), F(3 * GELU_TANH_B), xc * xc
    dz_lo = F(GELU_TANH_A - W(a_hi)) + (F(3 * GELU_TANH_B - W(b3_hi)) * p
                                        + b3_hi * fma(xc, xc, -p))
    dz = fma(b3_hi, p, a_hi) + dz_lo
    w = fma(xc, dz, F(1))
    # |z| < 87 in float32: past it e^z leaves the normal numbers, and |dx| < 4e-36·|dy|
    we = gelu_tanh_mul_exp(w, xc, backward_tail() if single() else F(800))
    e = we / w
    q2 = fma(e, e + F(2), F(1))  # (1 + e)² without the rounding of 1 + e, squared
    d = (fma(e, e, we) if xc < F(0) else F(1) + we) / q2
    return dy * near_root(x, d, GELU_TANH_ROOT)


@scalar
def log1p_unit(e):
    """log1p(e) for e in [0, 1]: e·P(e) in float32 (P from :data:`LOG1P_UNIT`, no division),
    ``log1p`` in float64 (the choice is a constant, so the other branch is compiled away)."""
    p = F(LOG1P_UNIT[len(LOG1P_UNIT) - 1])
    for k in range(len(LOG1P_UNIT) - 2, -1, -1):
        p = F(LOG1P_UNIT[k]) + e * p
    return e * p if single() else log1p(e)


@scalar
def div_by(a, b):
    """a/b for a parameter b, rounded about once and the same in every lane: a·(1/b) with
    1/b as r + r·(1 - r·b), the reciprocal's error from an exact fma, all in the working type
    (no float64 in a float32 GPU kernel). (With ``arcp`` LLVM made a/b two roundings,
    a·(1/b), in vector loops and left it a division elsewhere: an element's last bit
    depended on its position in the array.)"""
    r = F(1) / b
    if abs(r) < F(inf):
        return fma(a, r, a * (r * fma(-r, b, F(1))))
    # 1/b overflows: a float64 subnormal b (float32 ones compute in float64, see
    # Activation._compute), where a/b overflows too for softplus's a; inf, not fma's NaN
    return (a * (F(1) / (b * F(2.0**64)))) * F(2.0**64)


@scalar
def scaled_input(x, beta):
    """(z, z_lo) = beta·x as a rounded product and its exact remainder (0 where the product
    is out of range: not inf - inf)."""
    z = beta * x
    return z, fma(beta, x, -z) if abs(z) < F(BIG) else F(0)


@scalar
def above(z, z_lo, threshold):
    """The exact z + z_lo > threshold: only a z that rounded onto the threshold needs z_lo
    (softplus's branch is that of the exact beta·x, as float64 math has it)."""
    return z > threshold or (z == threshold and z_lo > F(0))


@scalar
def softplus_(x, beta, threshold):
    """(max(z, 0) + log1p(e))/beta, z = beta·x, e = exp(-|z|) (x itself for max(z, 0)/beta);
    x above the threshold. The rounding of z (z_lo, by fma) is put back into e, which
    amplifies it by |z| in the left tail; below -SHIFT the result is e^z/beta, scaled so
    that it keeps its digits where e^z is subnormal in float32."""
    z, z_lo = scaled_input(x, beta)
    deep = z < F(-SHIFT)
    # e stops at e^-exp_normal() for z > 0: x + log1p(e)/beta = x there all the same
    t = clip(z, F(-BIG), F(0)) + F(SHIFT) if deep else at_least(-abs(z), -exp_normal())
    e = exp(t)  # one exp for both cases
    e = fma(e, z_lo if z <= F(0) else -z_lo, e)  # e^(∓z_lo) to first order
    base = x if z > F(0) else F(0)
    # the deep tail's product only in lanes near it (z < -SHIFT/2): elsewhere e·e^-SHIFT is
    # subnormal, and x86 takes a slow assist for a vector instruction with a subnormal result
    # in any lane
    tail = times_const(div_by(e, beta) if z < F(-0.5 * SHIFT) else F(0), EXP_NEG_SHIFT)
    y = tail if deep else base + div_by(log1p_unit(e), beta)
    return x if above(z, z_lo, threshold) else y


def softplus(x, beta, threshold):
    return softplus_(x, beta, threshold)


@scalar
def sigmoid_gate(z):
    """sigmoid(z) for a backward: 0 past -:func:`backward_tail`, where it leaves the normal
    numbers in float32 (|dx| < 1.7e-38·|dy|), computed on that bound."""
    return F(0) if z < -backward_tail() else sigmoid(at_least(z, -backward_tail()))


def softplus_backward(dy, x, beta, threshold):
    """sigmoid(beta·x), with the rounding of beta·x put back to first order:
    σ(z + z_lo) = σ(z) + σ(z)·σ(-z)·z_lo (in the left tail |z| amplifies it); 0 past
    -:func:`backward_tail` (:func:`sigmoid_gate`). For beta 1, the default, z = x and
    z_lo = 0: the same bits without that work (LLVM takes the test out of the loop: float32
    in cache, 1.44 -> 1.10 ns an element on one Zen 3 core)."""
    if beta == F(1):
        return dy if x > threshold else dy * sigmoid_gate(x)
    z, z_lo = scaled_input(x, beta)
    s = sigmoid_gate(z)
    s = fma(s * (F(1) - s), z_lo, s)
    return dy if above(z, z_lo, threshold) else dy * s


def mish(x):
    """x·tanh(softplus(x)) with one exp: tanh(log(1 + e^x)) = n/(n + 2), n = e^x(e^x + 2);
    for x >= 0 in terms of w = e^-x: (1 + 2w)/(1 + 2w + 2w²). Below -SHIFT, x·e^x; -0 past
    -:func:`x_exp_x_zero`, selected (x_exp_x's product of -0 came out +0 on CUDA, whose fma
    adds its +0 remainder term)."""
    e = exp_neg_abs(x)
    neg = x < F(0)
    two_e = F(2) * e
    num = fma(e, e, two_e) if neg else F(1) + two_e
    gate = num / (F(2) + num if neg else fma(two_e, e, num))
    y = x_exp_x(x, e) if x < F(-SHIFT) else x_times(x, gate)
    return F(-0.0) if x < -x_exp_x_zero() else y


def mish_backward(dy, x):
    """tanh(sp) + x·sech²(sp)·σ(x), sp = softplus(x), as one fraction of e = exp(-|x|)
    (the forward's forms of tanh(sp)): for x < 0, with m = e(e + 2) + 2,
    e·((e + 2)·m + 4x(1 + e)) / m² (sech²·σ's factor 1 + e cancelled, (e + 2)·m + 4x and its
    + 4x·e each rounded once, m² from m and its rounding error: the relative error, which
    bounds dy·dx's for any dy, 8.85 → 6.55·2^-24 at most over every float32);
    for x >= 0, with a = 1 + 2e, b = a + 2e², (a·b(1 + e) + 4x·e²(a + e²)) / (b²(1 + e)).
    Near the zero x0 ≈ -1.192 :func:`near_root` takes over in float32. In the far left tail
    |dx| is below 1e-37·|dy| (the contract asks an absolute error there, as for silu)."""
    # e is 0 where the fraction is 1 (x > exp_normal()/2, whose e² is subnormal) and past
    # -backward_tail(); e² only for x >= 0 (it is a subnormal below -exp_normal()/2)
    e = F(0) if x > F(0.5) * exp_normal() or x < -backward_tail() else exp_backward(x)
    x4 = F(4) * clip(x, F(-BIG), F(BIG))
    two_e = F(2) * e
    q = F(1) + e
    m = fma(e, e + F(2), F(2))
    m_lo = fma(e, e + F(2), F(2) - m)  # m's rounding error (2 - m is exact): m² rounded once
    a = F(1) + two_e
    b = fma(two_e, e, a)
    e_right = e if x >= F(0) else F(0)
    e2 = e_right * e_right
    neg = x < F(0)
    num = e * fma(x4, e, fma(e + F(2), m, x4)) if neg else a * b * q + x4 * e2 * (a + e2)
    den = fma(m, m, (m + m) * m_lo) if neg else b * b * q
    return dy * near_root(x, num / den, MISH_ROOT)


# -- piecewise-linear -------------------------------------------------------------------


def hardsigmoid(x):
    return clip(x + F(3), F(0), F(6)) / F(6)


def hardsigmoid_backward(dy, x):
    inside = x > F(-3) and x < F(3)
    return dy / F(6) if inside else (F(0) if x == x else x)


def hardswish(x):
    return F(0) if x <= F(-3) else (x if x >= F(3) else x * (x + F(3)) / F(6))


def hardswish_backward(dy, x):
    """(2x + 3)/6 rather than torch's x/3 + 0.5: 2x + 3 is exact near its zero x = -1.5
    (Sterbenz), so float32 keeps its digits there; as an ``fma``, which the compiler's
    fast-math flags cannot turn back into x·(1/3) + 0.5."""
    inside = dy * (fma(x, F(2), F(3)) / F(6))
    return F(0) if x <= F(-3) else (dy if x >= F(3) else inside)  # torch's at the kinks


# -- row-wise ---------------------------------------------------------------------------
# A row function loops over its row only with ``lanes(n)`` and combines what it summed or
# maximized with ``lanes_sum``/``lanes_max`` before it uses it: on a GPU a block of threads
# then shares each row, each thread taking every T-th element (``backends/cuda_rows``). A
# thread may read an element another thread wrote only after a ``lanes_*`` call (a barrier).


@scalar
def row_max(x):
    """The largest element, NaNs ignored (a row with NaN gives NaN through its sum). A NaN
    is given to ``fmax`` as -inf: LLVM vectorizes an fmax (maxnum) reduction with a check
    that leaves the vector loop at the first NaN and goes on one element at a time (a row
    of 65,536 float32 with one NaN: 115 us for the max instead of 3; softmax 112 instead of
    35), unless it knows its operands are never NaN."""
    m = F(-inf)
    for i in lanes(x.size):
        v = F(x[i])
        m = fmax(m, v if v == v else F(-inf))
    return lanes_max(m)


def row_sum(x):
    s = F(0)
    for i in lanes(x.size):
        s += F(x[i])
    return lanes_sum(s)


@scalar
def term_zero():
    """-(x - max) past which log_softmax's terms e^(x - max)·TERM_SCALE are taken as 0: in
    float32 125, where a row of 2^30 of them adds less than half the smallest subnormal to
    log Σ; in float64 where they underflow."""
    return F(125) if single() else F(BIG)


@scalar
def row_term(scale, xi, m, zero):
    """scale·e^(xi - m), or 0 past -``zero``, computed there on xi = m: such lanes would
    otherwise form numbers below the normal range (a slow assist on x86 for the whole
    vector, also for a result that then rounds to 0). NaN stays NaN."""
    far = xi - m < -zero
    return F(0) if far else mul_exp(scale, m if far else xi, m, F(0))


@scalar
def exp_stopped(d):
    """e^d in the wide type W for d = x - max, as a term of a sum whose largest term is 1
    (softmax's and log_softmax's from-input backwards, the cross-entropy losses), its
    argument stopped at -650: a smaller term adds nothing to such a sum, and the product
    dy·e^-650 that softmax's backward adds is still a normal number (for |dy| > 1e-25).
    Below, e^d would form subnormal numbers, or underflow through ``vscalef``: an assist for
    the whole vector each (rows spread past 720, masked logits such as -1e9 or -inf; with
    a stop at -707.5 a block of masked rows summed dy·e into a subnormal partial sum:
    softmax's backward along axis 0, 256x256 half masked, 276 instead of 143 us)."""
    return exp(at_least(d, W(-650)))


@scalar
def exp_clamped(d):
    """e^d in W for d = x - max as a value, not a sum's term: 0 past -746, where it rounds to
    0 (a masked logit's gradient is exactly 0), and stopped at e^-707.5, the smallest
    normal results, between there: times factors of at most ~1e38 it is below float32's
    range (float64 data: at most e^-707.5 times the factor off, where the float64
    reference's own subnormal e^d has lost its digits). Rows of 256 half masked took 5.5x
    the time of unmasked ones in softmax's backward from x. Its bound is not the stop's:
    LLVM merged the two comparisons and computed e^d on d itself."""
    return W(0) if d < W(-746) else exp(at_least(d, W(-707.5)))


def softmax_row(x, y):
    """e_i = e^(x_i - max) in the working type (:func:`mul_exp`: x_i - max is not rounded
    first), their sum in the wide type W, and y_i = e_i·(1/Σ) with 1/Σ split into two
    working-type floats r_hi + r_lo: fma(e_i, r_hi, e_i·r_lo) rounds y_i once after e_i's,
    as a product in W would, at the working type's vector width. The sum has its own loop: a
    loop mixing float32 and float64 runs at float64's width."""
    m = row_max(x)
    for i in lanes(x.size):
        y[i] = row_term(F(1), F(x[i]), m, exp_zero())
    s = W(0)
    for i in lanes(x.size):
        s += W(y[i])
    r = W(1) / lanes_sum(s)
    r_hi = F(r)
    r_lo = F(r - W(r_hi))
    for i in lanes(x.size):
        e = F(y[i])
        y[i] = fma(e, r_hi, e * r_lo)


def softmax_backward_row(dy, y, dx):
    """dx = (dy - Σ dy·y)·y, from the forward output: Σ in the wide type W (dy_i - Σ cancels,
    and a float32 sum's error would come through it amplified), split into two working-type
    floats s_hi + s_lo; dx_i = fma(y_i, dy_i - s_hi, -y_i·s_lo), where dy_i - s_hi is exact
    where it cancels (Sterbenz), so dx_i is rounded about once, at the working type's width.
    """
    s = W(0)
    for i in lanes(y.size):
        s += W(dy[i]) * W(y[i])
    s = lanes_sum(s)
    s_hi = F(s)
    s_lo = F(s - W(s_hi))
    for i in lanes(y.size):
        yi = F(y[i])
        dx[i] = fma(yi, F(dy[i]) - s_hi, -(yi * s_lo))


def softmax_backward_row_from_input(dy, x, dx):
    """The same from the forward input, with y recomputed in the compute type (a rounded
    float32 y would lose digits to the cancellation in dy - Σ dy·y): one pass sums e_i =
    e^(x_i - max) and dy_i·e_i, so Σ dy·y = Σ dy·e / Σ e, and one computes dx (two
    exponentials an element; dx may be dy or x, so e is not kept in it between the passes)."""
    m = row_max(x)
    z = F(0)
    t = F(0)
    for i in lanes(x.size):
        e = exp_stopped(F(x[i]) - m)
        z += e
        t += F(dy[i]) * e
    r = F(1) / lanes_sum(z)
    s = lanes_sum(t) * r
    for i in lanes(x.size):
        dx[i] = (F(dy[i]) - s) * (exp_clamped(F(x[i]) - m) * r)


@scalar
def sum_block(b, n):
    """(start, length) of block ``b`` of ``SUM_BLOCK`` elements of a row of ``n`` (the last
    block: the rest, maybe none): the blocks a row sum adds before it adds their sums."""
    start = b * SUM_BLOCK
    return start, (SUM_BLOCK if start + SUM_BLOCK <= n else n - start)


@output_first
def log_softmax_row(x, y):
    """(x_i - max) - log Σ e^(x_i - max), with Σ = k + t: k elements equal to the max (1 each)
    and t, the others' sum. log Σ = log1p(t) for one max keeps its digits where Σ is near 1,
    so y_i has the accuracy of x_i - max where both are tiny (for k >= 2, Σ >= 2). t's terms
    are taken times ``TERM_SCALE`` (those subnormal in the working type kept few digits, and
    a thousand of them made y_max 3.7 % off in float32) and kept in y, then summed in W
    (float32 terms summed in float32 put y_max 6.3 ULP off, rows of 52 of scale 10; in W,
    1.4). Two loops, as softmax's: one that computed each term and added it into W ran the
    exponentials at W's vector width (float32 at 2^24, rows of 256: 5 GB/s, against 9 in
    two). y holds the terms while x is read again: the op does not run in place
    (:func:`output_first`). Lines along another axis, walked one by one or swapped into
    rows, compute in float64 (``wide_lines``; their terms are rounded to y's type in y:
    1.5 ULP at most on lines of 10-200, as before); side by side (``backends.columns``)
    their sums add blocks in float64."""
    m = row_max(x)
    for i in lanes(x.size):
        y[i] = row_term(F(TERM_SCALE), F(x[i]), m, term_zero())
    t = W(0)
    k = W(0)
    for i in lanes(x.size):  # the same lanes as the loop before: a thread reads its own terms
        at_max = F(x[i]) - m == F(0)  # x_i == max; not a NaN, nor +inf at max +inf (t NaN)
        t += W(0) if at_max else W(y[i])
        k += W(1) if at_max else W(0)
    t = lanes_sum(t) * W(1 / TERM_SCALE)
    k = lanes_sum(k)
    c = F(log1p(t) if k == W(1) else log(k + t))  # no k - 1 + t: reassociation
    for i in lanes(x.size):  # x - max stored first: no reassociation to x - (max + log Σ)
        y[i] = F(x[i]) - m
    for i in lanes(x.size):
        y[i] = F(y[i]) - c


def log_softmax_backward_row(dy, y, dx):
    """dx = dy - exp(y)·Σ dy, from the forward output."""
    s = F(0)
    for i in lanes(y.size):
        s += F(dy[i])
    s = lanes_sum(s)
    for i in lanes(y.size):
        dx[i] = F(dy[i]) - exp(F(y[i])) * s


def log_softmax_backward_row_from_input(dy, x, dx):
    """The same with exp(y) = exp(x - max)/Σ exp(x - max) recomputed from the input. Both
    sums in blocks of ``SUM_BLOCK``: their rounding comes through dy - exp(y)·Σ dy amplified
    where it cancels (a running float64 sum along a line of 695 put dx 1.3e-12 off)."""
    m = row_max(x)
    z = F(0)
    s = F(0)
    for b in range(x.size // SUM_BLOCK + 1):
        start, length = sum_block(b, x.size)
        zb = F(0)
        sb = F(0)
        for j in lanes(length):
            zb += exp_stopped(F(x[start + j]) - m)
            sb += F(dy[start + j])
        z += zb
        s += sb
    r = F(1) / lanes_sum(z)
    s = lanes_sum(s)
    for i in lanes(x.size):
        dx[i] = F(dy[i]) - exp_clamped(F(x[i]) - m) * r * s
