"""Throughput of fastgd.backends.cpu_math vs NumPy, scalar-libm Numba loops and torch.

Run: ``python tools/bench_cpu_math.py [log2 n]`` (default 2**24 float32 elements).
Prints elements/s (and GB/s counting 8 bytes/element: 4 read + 4 written).
"""

import math
import os
import re
import sys
import time

import numpy as np
from numba import get_num_threads, njit, prange

from fastgd.backends import cpu_math as cm

FM = {"nsz", "arcp", "contract", "afn", "reassoc"}
F32, F64 = np.float32, np.float64


def loops(fn):
    """(single-thread, prange) float32 map loops over ``fn``."""

    @njit(fastmath=FM, error_model="numpy")
    def serial(out, x):
        for i in range(x.size):
            out[i] = fn(x[i])

    @njit(fastmath=FM, parallel=True)
    def par(out, x):
        for i in prange(x.size):
            out[i] = fn(x[i])

    return serial, par


def timeit(f, *args, reps=5):
    f(*args)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f(*args)
        best = min(best, time.perf_counter() - t)
    return best


@njit(inline="always")
def _sig(x):
    return F32(1) / (F32(1) + cm.exp(-x))


@njit(inline="always")
def _sig_libm(x):
    return F32(1) / (F32(1) + math.exp(-x))


@njit(inline="always")
def _gelu64(x):  # float32 in/out, float64 inside
    y = F64(x)
    return F32(0.5 * y * cm.erfc(y * -0.7071067811865476))


@njit(inline="always")
def _gelu64_libm(x):
    y = F64(x)
    return F32(0.5 * y * math.erfc(y * -0.7071067811865476))


def main():
    n = 1 << (int(sys.argv[1]) if len(sys.argv) > 1 else 24)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 3).astype(F32)
    xpos = np.abs(x) + F32(1e-3)
    out = np.empty_like(x)
    try:
        import torch

        torch.set_num_threads(get_num_threads())
    except ImportError:  # pragma: no cover
        torch = None
    print(f"n = {n}, numba threads = {get_num_threads()}, cpu count = {os.cpu_count()}")
    print(f"{'function':10s} {'variant':22s} {'Gelem/s':>8s} {'GB/s':>6s}  vectorized")
    cases = [
        ("exp", cm.exp, math.exp, np.exp, "exp", x),
        ("expm1", cm.expm1, math.expm1, np.expm1, "expm1", x),
        ("log", cm.log, math.log, np.log, "log", xpos),
        ("log1p", cm.log1p, math.log1p, np.log1p, "log1p", xpos),
        ("tanh", cm.tanh, math.tanh, np.tanh, "tanh", x),
        ("erf", cm.erf, math.erf, None, "erf", x),
        ("erfc", cm.erfc, math.erfc, None, "special.erfc", x),
        ("sigmoid", _sig, _sig_libm, None, "sigmoid", x),
        ("gelu(f64)", _gelu64, _gelu64_libm, None, "nn.functional.gelu", x),
    ]
    for name, ours, libm, npf, tname, data in cases:
        rows = []
        s, p = loops(ours)
        for label, f in (("fastgd 1 thread", s), ("fastgd prange", p)):
            t = timeit(f, out, data)
            asm = f.inspect_asm(f.signatures[0])
            rows.append((label, t, "ymm" if re.search(r"ymm|zmm", asm) else "scalar"))
        s, p = loops(libm)
        rows.append(("numba math.* 1 thread", timeit(s, out, data), ""))
        rows.append(("numba math.* prange", timeit(p, out, data), ""))
        if npf is not None:
            rows.append(("numpy", timeit(npf, data, out), ""))
        if torch is not None:
            tf = eval("torch." + tname)  # fixed names above
            args = (torch.from_numpy(data),)
            kw = {} if name == "gelu(f64)" else {"out": torch.from_numpy(out)}
            rows.append(("torch", timeit(lambda f=tf, a=args, k=kw: f(*a, **k)), ""))
        for label, t, vec in rows:
            print(f"{name:10s} {label:22s} {n / t / 1e9:8.3f} {8 * n / t / 1e9:6.1f}  {vec}")
    tx = torch.from_numpy(x) if torch else None
    t = timeit(np.copyto, out, x)
    print(f"{'copy':10s} {'np.copyto':22s} {n / t / 1e9:8.3f} {8 * n / t / 1e9:6.1f}")
    if tx is not None:
        print(f"(torch {torch.__version__}, threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
