"""Vectorizable transcendental functions for Numba CPU kernels.

The llvmlite wheels ship without SVML, so ``math.exp``/``np.exp``/``math.tanh``/
``math.erf`` inside an ``@njit`` loop become scalar libm calls and block the loop
vectorizer.  The functions here are written in plain Numba -- range reduction,
polynomial (or rational) kernel, bit tricks for 2**k -- without calls and without
branches (only selects), so LLVM turns a loop over them into AVX2/AVX-512 code.

Public functions (call them from ``@njit`` code exactly like ``math.exp``)::

    exp, expm1, log, log1p, tanh, erf, erfc, mul_exp (m*e**(a - b + c), a - b unrounded),
    normal_tail (m*Phi(-|x|) + c*phi(x) for GELU, one exponential)

The same kernels, built without ``llvm.ldexp`` (:func:`portable_kernels`), are the float32
math of the CUDA backend too: numba-cuda compiles them as device functions (``cuda_math``).

They are type generic: a float32 argument is computed with float32 arithmetic and
float32 constants and returns float32; float64 (and integers) give float64.  They
also work from plain Python on scalars and arrays (through a small jitted loop),
which is meant for debugging, not speed.

Accuracy: max error below 1.35 ULP of the result dtype for both dtypes, but 1.56 for
mul_exp and 2.46 for tanh, which trade accuracy for a quarter to a third fewer operations
(measured against long-double NumPy / mpmath / float64 libm; asserted <= 2 ULP, tanh <=
2.47, by ``tests/test_cpu_math.py``).  NaN, +-inf, +-0, overflow and underflow follow C99
(erfc(+inf) = 0, erfc(-inf) = 2, log(0) = -inf, log(<0) = NaN, expm1(-inf) = -1, ...).
Subnormal *results* (exp, erfc tail) come from one rounding of the scaled result (at
most ~1 ULP of the subnormal grid; never negative or NaN).  Subnormal *inputs*: log
rescales them exactly; the other functions treat them as the tiny numbers they are.
The error-free steps use ``llvm.fmuladd``; on a CPU without FMA they degrade to
plain multiply-add and erfc/exp may lose up to ~1 more ULP (still vectorized).

The kernels are compiled as separate subroutines with fastmath flag ``contract``
only and ``error_model="numpy"``, and are force-inlined at the call site
(``alwaysinline``), so a caller's ``reassoc``/``afn``/``arcp`` flags cannot undo the
Cody-Waite reductions, rounding-constant tricks or compensated sums, and the loop
still vectorizes.  The coefficient tables come from ``tools/fit_cpu_math.py``
(mpmath Chebyshev interpolation / near-minimax rational fits).
"""

import functools
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, compiler, cpu
from numba.extending import intrinsic, overload

from fastgd.backends import cpu_target

__all__ = ["exp", "expm1", "log", "log1p", "tanh", "erf", "erfc", "normal_tail", "mul_exp", "fma",
           "fmax"]

_FASTMATH = {"contract"}
#: x*2**k as one vscalef instruction (AVX-512) rather than two multiplies by built powers
SCALEF = cpu_target.has_avx512()
_jit = njit(inline="always", fastmath=_FASTMATH, error_model="numpy")  # no ZeroDivision checks


# ----------------------------------------------------------------------------- bits
@intrinsic
def _as_int(typingctx, x):
    """Bit pattern of a float32/float64 as int32/int64 (LLVM bitcast)."""
    if not isinstance(x, types.Float):
        return None
    rt = types.int32 if x.bitwidth == 32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(rt))

    return rt(x), codegen


@intrinsic
def _as_float(typingctx, i, like):
    """Reinterpret the low 32/64 bits of integer ``i`` as a float of ``like``'s type."""
    if not (isinstance(i, types.Integer) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        ity = ir.IntType(like.bitwidth)
        v = args[0]
        if i.bitwidth > like.bitwidth:
            v = builder.trunc(v, ity)
        elif i.bitwidth < like.bitwidth:
            v = builder.sext(v, ity)
        return builder.bitcast(v, context.get_value_type(like))

    return like(i, like), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a*b + c with one rounding (llvm.fmuladd: a real FMA wherever the CPU has one)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty] * 3), f"llvm.fmuladd.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _fma_exact(typingctx, a, b, c):
    """a*b + c with one rounding, always (llvm.fma: the FMA instruction, or libm's fma)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty] * 3), f"llvm.fma.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _ldexp(typingctx, x, k):
    """x*2**k with one rounding, subnormal and overflowing results included (llvm.ldexp: one
    ``vscalefps`` on AVX-512; elsewhere LLVM may call libm, so :data:`SCALEF` guards it)."""
    if not (isinstance(x, types.Float) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(x)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ir.IntType(32)]),
            f"llvm.ldexp.f{x.bitwidth}.i32")
        e, i32 = args[1], ir.IntType(32)
        if k.bitwidth != 32:
            e = builder.trunc(e, i32) if k.bitwidth > 32 else builder.sext(e, i32)
        return builder.call(fn, [args[0], e])

    return x(x, k), codegen


@intrinsic
def _maxnum(typingctx, a, b):
    """The larger of a and b, ignoring a NaN (llvm.maxnum: a vectorizable reduction)."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty] * 2), f"llvm.maxnum.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b), codegen


def _poly(coeffs, ft):
    """Jitted Horner evaluation ``c0 + x*(c1 + x*(...))`` with ``ft`` constants."""
    names = [f"c{i}" for i in range(len(coeffs))]
    expr = names[-1]
    for n in reversed(names[:-1]):
        expr = f"{n} + x * ({expr})"
    scope = {n: ft(c) for n, c in zip(names, coeffs, strict=True)}
    exec(f"def p(x):\n    return {expr}\n", scope)
    return _jit(scope["p"])


# ------------------------------------------------------------------- coefficients
# q(r) = (e^r - 1 - r) / r^2 on |r| <= 1.03*ln2/2 (tools/fit_cpu_math.py); float32 degree 4:
# its fit error, 7.5e-8 in q, is ~0.1 ULP of e^r, and degree 5 cost exp a tenth of its speed
_EXP_Q = {
    np.float32: (0.5, 0.16666565835475922, 0.04166654124855995, 0.008364993147552013,
                 0.0013928450644016266),
    np.float64: (0.5, 0.1666666666666667, 0.04166666666666667, 0.00833333333332422,
                 0.0013888888888882382, 0.00019841269881310777, 2.4801587330182392e-05,
                 2.7557247412720577e-06, 2.7557267939221374e-07, 2.510844347632036e-08,
                 2.0916990996535857e-09),
}
# R(z)/z = (2*atanh(s)/s - 2)/z, z = s^2 <= 1.03*(3-2*sqrt(2))^2 (tools/fit_cpu_math.py)
_LOG_R = {
    np.float32: (0.6666666865348816, 0.4000013470649719, 0.2854953706264496,
                 0.23364919424057007),
    np.float64: (0.6666666666666671, 0.39999999999879665, 0.2857142863483921,
                 0.22222209709563318, 0.18182991417095679, 0.1532837191614694,
                 0.14657241419755748),
}

# erf(x)/x - 1 in z = x^2, |x| <= 0.5 (tools/fit_cpu_math.py)
_ERF_P = {
    np.float32: (0.12837916612625122, -0.37612637877464294, 0.11283773928880692,
                 -0.02686314284801483, 0.005200413521379232, -0.0007694534142501652),
    np.float64: (0.1283791670955126, -0.3761263890318375, 0.1128379167095487, -0.02686617064499972,
                 0.0052239776220169365, -0.0008548326510724796, 0.00012055286202005714,
                 -1.4923003368152099e-05, 1.637123442577e-06, -1.462091340945175e-07),
}
# erfc(a) = exp(-a^2) / (sqrt(pi) * (a + h(a))), h = 1/sqrt(pi) + a*P(a)/Q(a): near-
# minimax rational for the relative error of erfc on [0, 10.1] (f32) / [0, 27.5] (f64)
# (tools/fit_cpu_math.py; its p0 is 1/sqrt(pi) = h(0))
_ERFC_HP = {
    np.float32: (-0.3633802533149719, -0.3848235309123993, -0.1958509236574173,
                 -0.05329109728336334, -0.006673368159681559),
    np.float64: (-0.3633802276324183, -0.7066313373147506, -0.6827265273374498,
                 -0.4212599845211735, -0.1811673851553066, -0.05607011010195032,
                 -0.012480851792504214, -0.001932181301190776, -0.00019007791706711794,
                 -9.176746085320687e-06),
}
_ERFC_HQ = {
    np.float32: (1.0, 1.4832473993301392, 1.0629292726516724, 0.4400137662887573,
                 0.10494542866945267, 0.011828065849840641),
    np.float64: (1.0, 2.3688417167771303, 2.778488210443226, 2.0871833789656797,
                 1.1020927259648028, 0.4255981477196904, 0.12159672377184184, 0.025418307682025958,
                 0.0037360506657782206, 0.00035131913510763374, 1.6265358937795093e-05),
}
_RSQPI = 0.5641895835477563
_RSQPI_LO64 = 7.66772980658294e-18  # 1/sqrt(pi) - _RSQPI
_INV_SQRT2 = 0.7071067811865476


# ------------------------------------------------------------------------ kernels
def _build(ft, scalef=None):
    """Create the jitted kernels for one float type (np.float32 or np.float64); ``scalef``
    (default :data:`SCALEF`): x*2**k as one ``llvm.ldexp``, else two multiplies."""
    scalef = SCALEF if scalef is None else scalef
    f32 = ft is np.float32
    it = np.int32 if f32 else np.int64
    mant = 23 if f32 else 52
    bias = 127 if f32 else 1023
    zero, one, two, half = ft(0), ft(1), ft(2), ft(0.5)
    inf, nan = ft(np.inf), ft(np.nan)
    tiny_normal = ft(np.finfo(ft).tiny)
    two_mant = ft(2.0**mant)
    sign_mask = it(-(2 ** (31 if f32 else 63)))
    mant_mask = it(2**mant - 1)
    # Cody-Waite split of ln2: k*LN2_HI is exact for |k| < 2**8 (f32) / 2**11 (f64)
    ln2_hi = ft(0.693145751953125 if f32 else 6.93147180369123816490e-01)
    ln2_lo = ft(1.428606765330187e-06 if f32 else 1.90821492927058770002e-10)
    log2e = ft(1.4426950408889634)
    shifter = ft(1.5 * 2.0**mant)  # x + shifter rounds x to an integer in the low bits
    shifter_bits = it(_bits(shifter))
    sqrt_half_bits = it(_bits(ft(math.sqrt(0.5))))
    exp_hi = ft(89.0 if f32 else 710.0)  # beyond: overflow to inf
    exp_lo = ft(-104.0 if f32 else -746.0)  # beyond: underflow to 0
    mul_lo = ft(-150.0 if f32 else -800.0)  # beyond: m*e**hi underflows for |m| < e**45
    expm1_lo = ft(-30.0 if f32 else -60.0)  # beyond: expm1 == -1 exactly
    tanh_hi = ft(9.1 if f32 else 19.5)  # beyond: tanh == 1 exactly
    q_exp = _poly(_EXP_Q[ft], ft)
    r_log = _poly(_LOG_R[ft], ft)

    @_jit
    def reduce(x):
        """x = k*ln2 + r + c, |r| <= ~ln2/2, |c| <= ulp(r)/2; returns (r, c, integer k)."""
        t = x * log2e + shifter
        kf = t - shifter
        rh = x - kf * ln2_hi  # exact
        r = rh - kf * ln2_lo
        c = (rh - r) - kf * ln2_lo  # rounding error of r
        return r, c, _as_int(t) - shifter_bits

    def exp_mul_kernel(compensated, clamped=True):
        """exp(hi + lo) * (m + m_lo) for exact hi, |lo| << 1 and |m_lo| <= ulp(m), the
        2**k scaling exact (subnormal results: one rounding of the scaled product).
        compensated: e**r = e_hi + e_lo (Fast2Sum of 1 + r, the reduction's rounding
        included) and m*e_hi + exact FMA remainder, so the product is rounded once (~0.55
        ULP; erfc). Otherwise m + (m*(e**r - 1) + m_lo), ~1 ULP, a third fewer operations
        (normal_tail, mul_exp: the time of GELU, GELU-tanh and softmax). clamped=False:
        for a caller whose hi is within [mul_lo, exp_hi] (normal_tail's), no clamps."""

        @_jit
        def exp_mul(hi, lo, m, m_lo):
            if clamped:
                hi = exp_hi if hi > exp_hi else hi
                hi = mul_lo if hi < mul_lo else hi  # 2**k: a product of two normal factors
            t = (hi + lo) * log2e + shifter
            kf = t - shifter
            k = _as_int(t) - shifter_bits
            rh = hi - kf * ln2_hi  # exact
            if compensated:
                rm = rh + lo
                c = (rh - rm) + lo
                r = rm - kf * ln2_lo
                c = ((rm - r) - kf * ln2_lo) + c
                e_hi = one + r
                e_lo = ((one - e_hi) + r) + ((r * r) * q_exp(r) + c)
                prod = m * e_hi
                y = prod + (_fma(m, e_hi, -prod) + (m * e_lo + m_lo * e_hi))
            else:
                r = (rh + lo) - kf * ln2_lo
                y = m + (m * (r + (r * r) * q_exp(r)) + m_lo)
            return scale2(y, k)

        return exp_mul

    exp_mul, exp_mul_fast = exp_mul_kernel(True), exp_mul_kernel(False)
    exp_mul_in_range = exp_mul_kernel(False, clamped=False)

    @_jit
    def pow2(k, like):
        return _as_float((k + bias) << mant, like)

    if scalef:

        @_jit
        def scale2(y, k):
            return _ldexp(y, k)

    else:

        @_jit
        def scale2(y, k):
            h = k >> 1  # 2**k = 2**h * 2**(k-h): both factors stay normal
            return y * pow2(h, y) * pow2(k - h, y)

    @_jit
    def exp_k(x):
        x = exp_hi if x > exp_hi else x
        x = exp_lo if x < exp_lo else x
        p, k = exp_parts(x)
        return scale2(one + p, k)

    @_jit
    def exp_parts(x):
        """e**x = (1 + p) * 2**k, p = r + r**2*q plainly, reduce's rounding error c left out:
        exp 1.08 ULP over every float32 (0.76 with c and a Fast2Sum of 1 + r, as exp_mul
        keeps them), a fifth fewer operations."""
        r, _, k = reduce(x)
        return r + (r * r) * q_exp(r), k

    @_jit
    def expm1_k(x):
        x = exp_hi if x > exp_hi else x
        x = expm1_lo if x < expm1_lo else x
        r, c, k = reduce(x)
        small = (r * r) * q_exp(r) + (c + c * r)  # expm1(r + c) = r + small
        big = k > bias  # 2**k itself would overflow: use 2**(k-1) and double
        s = pow2(k - 1 if big else k, x)
        # 2^k*(1 + r + small) - 1: for |k| <= 1 s*r + (s-1) is exact, add s*small last;
        # for larger k that sum rounds, so round r + small first instead.
        e1 = (s * r + (s - one)) + s * small
        e2 = s * (r + small) + (s - one)
        e = e1 if abs(k) <= 1 else e2
        e = e + e if big else e
        return x if x == zero else e  # keep the sign of -0

    @_jit
    def log_k(u, corr, kadj):
        """log(u) + corr for normal positive u (corr: small additive correction)."""
        iu = _as_int(u) - sqrt_half_bits
        k = (iu >> mant) + kadj
        m = _as_float((iu & mant_mask) + sqrt_half_bits, u)  # m in [sqrt(.5), sqrt(2))
        f = m - one
        hfsq = half * f * f
        s = f / (two + f)
        z = s * s
        rz = z * r_log(z)
        kf = ft(np.int32(k))
        lo = kf * ln2_lo + corr
        return kf * ln2_hi + (f - (hfsq - (s * (hfsq + rz) + lo)))

    @_jit
    def log_(x):
        sub = x < tiny_normal
        y = log_k(x * two_mant if sub else x, zero, -mant if sub else 0)
        y = nan if x < zero else y
        y = -inf if x == zero else y
        return y if x < inf else x

    @_jit
    def log1p_(x):
        u = one + x
        c = ((x - u) + one) if abs(x) > one else ((one - u) + x)  # u + c == 1 + x exactly
        y = log_k(u, c / u, 0)
        y = nan if x < -one else y
        y = -inf if x == -one else y
        y = y if x < inf else x
        return x if x == zero else y

    @_jit
    def tanh_(x):
        """tanh(|x|) = e/(e + 2) for e = e**(2|x|) - 1 = 2**k*p + (2**k - 1), p = r + r**2*q(r):
        one path for every x (no polynomial for small |x| to blend with), as k = 0 there and
        e = p carries r's digits. 2.46 ULP at most in float32 (every float32 checked; the
        roundings of p, e + 2 and the division add up). Against an odd polynomial below 0.625
        blended with 1 - 2/(e**(2|x|) + 1) above (1.34 ULP): 3.0 -> 3.9 Gelem/s per thread
        in cache on the Sapphire Rapids VM."""
        a = abs(x)
        a = tanh_hi if a > tanh_hi else a  # 2|x| <= 18.2 (f32) / 39 (f64): 2**k is normal
        p, k = exp_parts(a + a)
        s = pow2(k, x)
        e = s * p + (s - one)
        t = e / (e + two)
        return _as_float(_as_int(t) | (_as_int(x) & sign_mask), x)  # copysign(t, x)

    erf_p = _poly(_ERF_P[ft], ft)
    h_p, h_q = _poly(_ERFC_HP[ft], ft), _poly(_ERFC_HQ[ft], ft)
    rsqpi = ft(_RSQPI)  # 1/sqrt(pi) = rsqpi + rsqpi_lo
    rsqpi_lo = ft(_RSQPI - float(rsqpi)) if f32 else ft(_RSQPI_LO64)
    sqpi = ft(math.sqrt(math.pi))
    erf_amax = ft(10.1 if f32 else 27.5)  # beyond: erfc(x) underflows to 0
    split_mask = it(-(2 ** (12 if f32 else 27)))  # (a with these bits cleared)**2 is exact

    @_jit
    def erfcx_parts(a):
        """erfcx(a) = e**(a**2)*erfc(a) as q + g_lo for a = |x| <= erf_amax."""
        d = a * (h_p(a) / h_q(a))  # h - h(0), in (-h(0), 0]
        h = rsqpi + d  # h(0) = 1/sqrt(pi) = rsqpi + rsqpi_lo
        h_lo = ((rsqpi - h) + d) + rsqpi_lo
        s = a + h
        big = a > h
        s_lo = (((a if big else h) - s) + (h if big else a)) + h_lo  # a + h(a) ~ s + s_lo
        q = rsqpi / s
        g_lo = ((_fma(-q, s, rsqpi) + rsqpi_lo) - q * s_lo) * (q * sqpi)  # erfcx = q + g_lo
        return q, g_lo

    @_jit
    def erfc_abs(a):
        """erfc(a) for a = |x| >= 0 (NaN propagates)."""
        a = erf_amax if a > erf_amax else a
        q, g_lo = erfcx_parts(a)
        ah = _as_float(_as_int(a) & split_mask, a)  # a**2 = ah**2 + (a-ah)(a+ah)
        return exp_mul(-(ah * ah), -((a - ah) * (a + ah)), q, g_lo)

    # erfcx(|x|/sqrt2) in x directly: erfc's h in the scaled variable, H(a) = sqrt2*h(a/sqrt2)
    # = sqrt(2/pi) + a*P(a/sqrt2)/Q(a/sqrt2), the coefficients scaled by powers of 1/sqrt2
    hx_p = _poly([c * _INV_SQRT2**i for i, c in enumerate(_ERFC_HP[ft])], ft)
    hx_q = _poly([c * _INV_SQRT2**i for i, c in enumerate(_ERFC_HQ[ft])], ft)
    c2 = ft(_RSQPI / _INV_SQRT2)  # sqrt(2/pi)
    inv_sqrt_2pi = ft(_RSQPI * _INV_SQRT2)
    tail_amax = ft(float(erf_amax) / _INV_SQRT2)

    @_jit
    def normal_tail_(m, c, x, hi, lo):
        """(m*erfcx(|x|/sqrt2)/2 + c/sqrt(2pi))*e**(hi + lo) for exact hi and small lo:
        m*Phi(-|x|) + c*phi(x) for hi + lo = -x**2/2. GELU's forward (m = x, c = 0) is
        within 3.74 ULP over every float32, its derivative within 5.01.
        erfcx(a/sqrt2) = sqrt(2/pi)/(a + H), H = sqrt(2/pi) + a*P/Q, as one fraction,
        sqrt(2/pi)*Q/(a*Q + a*P + sqrt(2/pi)*Q): one division where two in a row (P/Q,
        then sqrt(2/pi)/(a + H)) cost GELU 10-20 % of its speed; the same rounded Q above
        and below, so its own error cancels. The rounding of m*erfcx/2 goes into exp_mul's
        m_lo. hi must lie in [mul_lo, exp_hi] (GELU's: -105.1 or more in float32, -760.5
        in float64): the exponential has no clamps, a tenth of GELU's instructions."""
        a = abs(x)
        a = tail_amax if a > tail_amax else a
        qa = hx_q(a)
        num = c2 * qa
        q = num / _fma(a, qa, _fma(a, hx_p(a), num))
        mh = half * m
        v = mh * q
        return exp_mul_in_range(hi, lo, v + c * inv_sqrt_2pi, _fma(mh, q, -v))

    @_jit
    def mul_exp_(m, a, b, c):
        """m*e**(a - b + c) for small c, 1.56 ULP at most: the exact a - b is d + d_lo
        (TwoSum), and exp_mul_fast takes d + (d_lo + c) without rounding their sum first.
        (The compensated exp_mul, 0.55 ULP, cost softmax's forward a fifth of its speed.)"""
        d = a - b
        bb = d - a
        d_lo = (a - (d - bb)) - (b + bb)
        # lo only where exp_mul leaves d unclamped: beyond, the result is 0 or inf whatever
        # lo, and the remainder of a huge d (-1e10 - -200: 200) added after the clamp moved
        # it (softmax gave NaN beside finfo.min); no NaN from inf - inf either
        lo = d_lo + c if abs(d) <= -mul_lo else zero
        return exp_mul_fast(d, lo, m, zero)

    @_jit
    def erf_(x):
        a = abs(x)
        r = a + a * erf_p(a * a) if a < half else one - erfc_abs(a)
        return _as_float(_as_int(r) | (_as_int(x) & sign_mask), x)  # copysign(r, x)

    @_jit
    def erfc_(x):
        e = erfc_abs(abs(x))
        return two - e if x < zero else e

    return {"exp": exp_k, "expm1": expm1_k, "log": log_, "log1p": log1p_, "tanh": tanh_,
            "erf": erf_, "erfc": erfc_, "normal_tail": normal_tail_, "mul_exp": mul_exp_}


def _bits(v):
    return int(np.asarray(v).view(np.int32 if v.dtype == np.float32 else np.int64))


_K32 = _build(np.float32)
_K64 = _build(np.float64)


@functools.cache
def portable_kernels(ft) -> dict:
    """The kernels of float type ``ft`` (name -> jitted function, as :func:`_build` makes
    them) in code that every Numba target compiles: x*2**k as two multiplies, never
    ``llvm.ldexp`` (a libm call where the target has no such instruction). numba-cuda
    compiles these as device functions (``cuda_math``)."""
    if not SCALEF:
        return _K32 if ft is np.float32 else _K64
    return _build(ft, scalef=False)


# ------------------------------------------------------------------ public layer
_py_loops = {}


def _py_call(name, stub, x):
    """Plain-Python entry: run the jitted kernel over a scalar or array."""
    a = np.asarray(x)
    a = a.astype(np.float32 if a.dtype == np.float32 else np.float64)
    loop = _py_loops.get(name)
    if loop is None:

        @njit
        def loop(out, v):
            for i in range(v.size):
                out[i] = stub(v[i])

        _py_loops[name] = loop
    flat = np.ascontiguousarray(a).ravel()
    out = np.empty_like(flat)
    loop(out, flat)
    return out.reshape(a.shape) if a.ndim else out.dtype.type(out[0])


def _kernel_flags():
    flags = compiler.Flags()
    flags.fastmath = cpu.FastMathOptions(_FASTMATH)
    flags.error_model = "numpy"
    return flags


def _inlined_call(kernels, arity=1):
    """Intrinsic calling ``kernels[argtype]`` (``arity`` arguments of one float type): the
    kernel is compiled as its own subroutine with this module's flags (so the caller's
    fastmath flags never touch it) and called with a call-site ``alwaysinline``, so LLVM
    inlines it into the caller's loop and can vectorize it."""

    def codegen(context, builder, sig, args):
        impl = kernels[sig.args[0]]
        cres = context.compile_subroutine(builder, impl, sig, flags=_kernel_flags())
        fn = context.declare_function(builder.module, cres.fndesc)
        _, res = context.call_conv.call_function(
            builder, fn, sig.return_type, sig.args, args, attrs=("alwaysinline",))
        return res  # the kernels never raise

    def typer(typingctx, *xs):
        if len(xs) != arity or xs[0] not in kernels or any(x != xs[0] for x in xs):
            return None
        return xs[0](*xs), codegen

    # intrinsic needs the arguments spelled out
    if arity == 1:
        return intrinsic(lambda typingctx, x: typer(typingctx, x))
    if arity == 4:
        return intrinsic(lambda typingctx, m, a, b, c: typer(typingctx, m, a, b, c))
    return intrinsic(lambda typingctx, m, c, x, hi, lo: typer(typingctx, m, c, x, hi, lo))


def _public(name):
    k32, k64 = _K32[name], _K64[name]
    call = _inlined_call({types.float32: lambda x: k32(x), types.float64: lambda x: k64(x)})

    def register(stub):
        @overload(stub, inline="always")
        def _ov(x):
            if x == types.float32 or x == types.float64:
                return lambda x: call(x)
            if isinstance(x, (types.Float, types.Integer, types.Boolean)):
                return lambda x: call(np.float64(x))
            return None

        return stub

    return register


@_public("exp")
def exp(x):
    """e**x.  x = k*ln2 + r (Cody-Waite, rounding via the 1.5*2**p shifter),
    e**r = 1 + r + r**2*q(r) with q of degree 5 (f32) / 10 (f64), times 2**k: one
    ``vscalef`` on AVX-512, elsewhere two factors built in the exponent field (so 2**128 /
    2**1024 and subnormals work)."""
    return _py_call("exp", exp, x)


@_public("expm1")
def expm1(x):
    """e**x - 1.  Same reduction and q(r) as exp; expm1(r) = r + r**2*q(r) and
    expm1(x) = 2**k*expm1(r) + (2**k - 1) evaluated as one FMA (exact for k = 0)."""
    return _py_call("expm1", expm1, x)


@_public("log")
def log(x):
    """Natural log.  x = 2**k*m, m in [sqrt(.5), sqrt(2)) by integer ops (subnormals
    are pre-scaled by 2**p); f = m - 1, s = f/(2+f), log(1+f) = f - f**2/2 +
    s*(f**2/2 + R(s**2)) with R(z)/z of degree 3 (f32) / 6 (f64) (fdlibm scheme)."""
    return _py_call("log", log, x)


@_public("log1p")
def log1p(x):
    """log(1 + x).  u = 1 + x plus its exact rounding error c (Fast2Sum), then the
    log kernel on u with the first-order correction c/u."""
    return _py_call("log1p", log1p, x)


@_public("tanh")
def tanh(x):
    """Hyperbolic tangent.  e/(e + 2) with e = e**(2|x|) - 1 from exp's reduction and
    polynomial, without the 1 that would cancel for small |x| (|x| clamped where tanh rounds
    to 1; 2.46 ULP at most in float32, every float32 checked).  Sign copied from x bitwise
    (tanh(-0) = -0)."""
    return _py_call("tanh", tanh, x)


@_public("erf")
def erf(x):
    """Error function.  |x| < 0.5: x + x*P(x**2), P of degree 5 (f32) / 9 (f64);
    otherwise 1 - erfc(|x|) (see erfc), sign copied from x (erf(-0) = -0)."""
    return _py_call("erf", erf, x)


@_public("erfc")
def erfc(x):
    """Complementary error function.  a = |x|: erfc(a) = exp(-a**2) / (sqrt(pi)*(a + h))
    with h(a) = 1/sqrt(pi) + a*P(a)/Q(a), a near-minimax rational of degree 5/5 (f32) / 10/10
    (f64) on [0, 10.1] / [0, 27.5] (h is a small, slowly varying correction; a + h
    and the division are compensated).  exp(-a**2) uses the exact split a**2 = ah**2 +
    (a-ah)(a+ah), so the far tail keeps full relative accuracy down to the underflow
    threshold; erfc(-a) = 2 - erfc(a)."""
    return _py_call("erfc", erfc, x)


def fmax(a, b):
    """The larger of a and b, ignoring a NaN (C's fmax), for float arguments of one type."""
    from fastgd.scalar import fmax as py_fmax

    return py_fmax(a, b)


@overload(fmax, inline="always")
def _ov_fmax(a, b):
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _maxnum(a, b)
    return None


_TAIL32, _TAIL64 = _K32["normal_tail"], _K64["normal_tail"]
_normal_tail_call = _inlined_call({
    types.float32: lambda m, c, x, hi, lo: _TAIL32(m, c, x, hi, lo),
    types.float64: lambda m, c, x, hi, lo: _TAIL64(m, c, x, hi, lo),
}, arity=5)


def normal_tail(m, c, x, hi, lo):
    """(m·erfcx(|x|/√2)/2 + c/√(2π))·e**(hi + lo) for exact ``hi`` and small ``lo``: with
    hi + lo = -x²/2 split exactly, m·Φ(-|x|) + c·φ(x) (Φ, φ: the standard normal cdf and
    pdf) with one exponential, and without a subnormal factor where the result is normal
    (GELU: x·Φ(x) for x < 0 is m = x, c = 0; its derivative Φ(x) + x·φ(x) is m = 1, c = x).
    ``hi`` must lie in [-150, 89] in float32, [-800, 710] in float64: the kernel's
    exponential has no clamps."""
    from fastgd.scalar import normal_tail as py_normal_tail

    return py_normal_tail(m, c, x, hi, lo)


@overload(normal_tail, inline="always")
def _ov_normal_tail(m, c, x, hi, lo):
    if isinstance(m, types.Float) and m == c == x == hi == lo:
        return lambda m, c, x, hi, lo: _normal_tail_call(m, c, x, hi, lo)
    return None


_MULEXP32, _MULEXP64 = _K32["mul_exp"], _K64["mul_exp"]
_mul_exp_call = _inlined_call({
    types.float32: lambda m, a, b, c: _MULEXP32(m, a, b, c),
    types.float64: lambda m, a, b, c: _MULEXP64(m, a, b, c),
}, arity=4)


def mul_exp(m, a, b, c):
    """m*e**(a - b + c) for small c, within 1.56 ULP (a subnormal result rounded once),
    without rounding a - b first (exp would amplify that rounding by |a - b|: up to ~100 ULP
    for float32 softmax inputs), for floats of one type."""
    from fastgd.scalar import mul_exp as py_mul_exp

    return py_mul_exp(m, a, b, c)


@overload(mul_exp, inline="always")
def _ov_mul_exp(m, a, b, c):
    if isinstance(m, types.Float) and m == a == b == c:
        return lambda m, a, b, c: _mul_exp_call(m, a, b, c)
    return None


def fma(a, b, c):
    """a*b + c rounded once (one FMA instruction in jitted code), for float32 or float64
    arguments of one type: ``fma(a, b, -(a*b))`` is the exact rounding error of ``a*b``."""
    from fastgd.scalar import fma as py_fma

    return py_fma(a, b, c)


@overload(fma, inline="always")
def _ov_fma(a, b, c):
    if isinstance(a, types.Float) and a == b == c:
        return lambda a, b, c: _fma_exact(a, b, c)
    return None
