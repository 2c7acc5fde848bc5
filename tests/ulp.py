"""ULP distance helper shared by the numerical tests."""

import numpy as np

_PARAMS = {np.dtype(np.float32): (24, -125), np.dtype(np.float64): (53, -1021)}


def ulp_error(actual, expected_float64, dtype):
    """|actual - expected| in ULPs of ``dtype`` at the expected value.

    ``expected_float64`` is a higher-precision reference (float64 for float32
    results; float64 or np.longdouble for float64 results).  The ULP is that of
    ``dtype`` at |expected| (subnormal spacing below the normal range).  NaN vs NaN
    and equal infinities count as 0; an expected value that overflows ``dtype``
    counts as infinite, so an ``inf`` result there is 0 ULP.  Returns float64 array.
    """
    dtype = np.dtype(dtype)
    digits, emin = _PARAMS[dtype]
    act = np.asarray(actual)
    exp = np.asarray(expected_float64)
    wide = np.longdouble if exp.dtype == np.longdouble else np.float64
    exp = exp.astype(wide)
    with np.errstate(over="ignore", invalid="ignore"):
        exp_r = exp.astype(dtype)  # rounded into dtype: overflow -> inf
        big = np.isinf(exp_r) & np.isfinite(exp)
        exp = np.where(big, exp_r.astype(wide), exp)
        e = np.frexp(exp)[1]
        ulp = np.ldexp(np.ones_like(exp), np.maximum(e, emin) - digits)
        err = (np.abs(act.astype(wide) - exp) / ulp).astype(np.float64)
    same = (np.isnan(act) & np.isnan(exp)) | (act.astype(wide) == exp)
    err[same] = 0.0
    err[np.isnan(err)] = np.inf
    return err
