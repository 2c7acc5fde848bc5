"""Float32 math for CUDA kernels: cpu_math's float32 kernels, compiled as device functions.

libdevice's float32 functions are within 1 to 4 ULP (expf and tanhf 2, erfcf 4), too loose
for the formulas that amplify their error (GELU, SiLU, softplus, mish, softmax...), so the
CUDA backend used to compute those on float32 data in float64: at half the float32 rate on
an H100/H200 (a 64th on consumer GPUs), with about 150 float64 instructions per element
for GELU: by that count, enough to make a memory-bound kernel compute-bound (not measured:
no GPU has run fastgd yet). cpu_math's float32 kernels are
plain Numba code that numba-cuda compiles as device functions (the build without
``llvm.ldexp``: :func:`cpu_math.portable_kernels`), so the CUDA backend computes float32 in
float32 with the accuracy the CPU backend has and tests (``float32_math_ulp``).

Each name here dispatches on its argument types: all float32 to cpu_math's kernel, anything
else (softmax's float64 sums) to the device's own math, as before. Under the CUDA simulator
the same jitted kernels run on the host, called from the Python kernels.
"""

from __future__ import annotations

import functools

import numpy as np

from fastgd.backends import cpu_math

#: name -> number of arguments
ARITY = {"exp": 1, "expm1": 1, "log": 1, "log1p": 1, "tanh": 1, "erf": 1, "erfc": 1,
         "normal_tail": 5, "mul_exp": 4}


def _source(name, arity, body):
    args = ", ".join(f"a{i}" for i in range(arity))
    return f"def {name}({args}):\n    return {body.format(args=args)}\n"


@functools.cache
def device_functions() -> dict:
    """name -> a function CUDA kernels call: one stub per name with a numba-cuda overload."""
    from numba import types
    from numba.cuda.extending import overload

    from fastgd.backends.cuda_backend import device_math

    kernels = cpu_math.portable_kernels(np.float32)
    out = {}
    for name, arity in ARITY.items():  # others: libdevice (math.*) or scalar.py's Python
        scope = {"k32": kernels[name], "other": device_math()[name]}
        exec(_source("impl32", arity, "k32({args})"), scope)
        exec(_source("impl_other", arity, "other({args})"), scope)
        exec(_source(name, arity, "None  # device code only"), scope)
        exec(_source("typer", arity, "choose({args})"), scope)
        scope["choose"] = functools.partial(_choose, scope["impl32"], scope["impl_other"], types)
        overload(scope[name], inline="always")(scope["typer"])
        out[name] = scope[name]
    return out


def _choose(impl32, impl_other, types, *args):
    if all(a == types.float32 for a in args):
        return impl32
    if all(isinstance(a, (types.Float, types.Integer)) for a in args):
        return impl_other
    return None


@functools.cache
def simulator_functions() -> dict:
    """The same dispatch for the CUDA simulator's Python kernels: NumPy float32 scalars to
    the jitted float32 kernels (run on the host), anything else to the fallback."""
    from fastgd.backends.cuda_backend import simulator_math

    kernels = cpu_math.portable_kernels(np.float32)
    simulated = simulator_math()

    def dispatch(k32, other):
        def call(*args):
            if all(type(a) is np.float32 for a in args):
                return np.float32(k32(*args))
            return other(*args)

        return call

    return {n: dispatch(kernels[n], simulated[n]) for n in ARITY}
