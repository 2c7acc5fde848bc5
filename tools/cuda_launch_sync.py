"""Whether a CUDA launch on CuPy arrays makes the host wait for the GPU.

A CuPy array's ``__cuda_array_interface__`` names its stream, and Numba synchronizes on that
stream for every such array argument of a launch unless ``NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0``
(numba-cuda's ``_to_strided_memory_view``; versions that read CuPy arrays through DLPack
first may not). If it does, the host cannot run ahead of the GPU: ``calls`` back-to-back
launches cost each launch's overhead plus its kernel time, where an asynchronous launch
costs the larger of the two. This times a loop of small calls with one synchronization at
its end, and one call synchronized, beside CuPy's own elementwise kernel. Run it twice,
with and without the variable, and compare:

    python3 tools/cuda_launch_sync.py
    NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 python3 tools/cuda_launch_sync.py
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fastgd
import fastgd  # noqa: E402


def per_call_us(call, sync, calls=1000, repeats=3) -> tuple[float, float]:
    """(µs a call in a loop of ``calls`` synchronized once, µs of one call synchronized)."""
    call()
    sync()
    looped, single = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        looped.append((time.perf_counter() - start) / calls * 1e6)
        start = time.perf_counter()
        call()
        sync()
        single.append((time.perf_counter() - start) * 1e6)
    return min(looped), min(single)


def cases(cp, n: int) -> dict:
    """name -> a call on CuPy arrays of ``n`` float32 elements."""
    x = cp.asarray(np.random.default_rng(0).standard_normal(n, dtype=np.float32))
    dy, out = cp.ones_like(x), cp.empty_like(x)
    opt = fastgd.Adam({"w": cp.zeros(n, cp.float32)}, lr=1e-3)
    grads = {"w": dy}
    return {
        "fastgd.relu(x, out=)": lambda: fastgd.relu(x, out=out),
        "fastgd.sigmoid_backward(dy, x, out=)": lambda: fastgd.sigmoid_backward(dy, x, out=out),
        "fastgd.Adam step": lambda: opt.step(grads),
        "cupy.maximum(x, 0, out=) (peer)": lambda: cp.maximum(x, 0, out=out),
    }


def main() -> int:
    try:
        import cupy as cp
    except ImportError:
        print("no CuPy: nothing to measure (Numba device arrays announce no stream)")
        return 0
    from numba import cuda

    setting = os.environ.get("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "1 (the default)")
    print(f"NUMBA_CUDA_ARRAY_INTERFACE_SYNC={setting}")
    for n in (1 << 10, 1 << 16, 1 << 20):
        for name, call in cases(cp, n).items():
            looped, single = per_call_us(call, cuda.synchronize)
            print(f"n=2^{n.bit_length() - 1:<2} {name:<40} {looped:8.1f} µs a call in a loop, "
                  f"{single:8.1f} µs alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
