"""The GPU bandwidth probe's grid-stride kernels, compiled on first launch.

Imported only when a probe runs (``numba.cuda`` stays a lazy import). They sit at module
level so that ``cuda`` is a global: the CUDA simulator swaps a kernel's global ``cuda`` for
its own, but not one captured in a closure.
"""

from numba import cuda


@cuda.jit
def copy(a, b):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        b[i] = a[i]


@cuda.jit
def inplace(a, s):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = a[i] * s
