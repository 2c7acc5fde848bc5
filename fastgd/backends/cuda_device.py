"""Device-side helpers for the CUDA backend, imported only on a real GPU (they need numba.cuda).

``cuda.fma`` is an intrinsic stub: Numba types it as ``cuda.fma(...)`` but not as a bare
global, which is how specialized op math calls the scalar name ``fma``; this device function
gives it a callable name.
"""

from numba import cuda


@cuda.jit(device=True)
def fma(a, b, c):
    """a*b + c rounded once (the FMA instruction)."""
    return cuda.fma(a, b, c)
