"""Python-side cost of ``step()`` on a small tensor (the kernel itself is ~1 µs at n=1000).

Usage: python tools/step_overhead.py [n] [backend]
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fastgd
import fastgd  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
backend = sys.argv[2] if len(sys.argv) > 2 else "numba"
for name in ("SGD", "Adam", "AdamW", "NAdam", "Lion"):
    for dtype in (np.float32,):
        p = {"w": np.random.randn(n).astype(dtype)}
        g = {"w": (np.random.randn(n) * 1e-3).astype(dtype)}
        extra = {"momentum": 0.9} if name == "SGD" else {}
        opt = getattr(fastgd, name)(p, lr=1e-3, backend=backend, **extra)
        opt.step(g)  # compile
        best = []
        for _ in range(5):
            reps = 20000
            t0 = time.perf_counter()
            for _ in range(reps):
                opt.step(g)
            best.append((time.perf_counter() - t0) / reps)
        print(f"{name:6s} {np.dtype(dtype).name} n={n} {backend}: step() {min(best) * 1e6:.2f} µs")
