"""fastgd's kernels beside NumPy's BLAS, and its thread pool's waits: the numbers behind
``config.PARALLEL_THRESHOLD`` and the GOMP_SPINCOUNT that ``import fastgd`` sets.

    PYTHONPATH=. python tools/perf_threads.py [--spin N] [--threshold N] [--cheap N]

Each setting runs in a process of its own (libgomp reads its spin count when the pool
starts; without ``--spin``, the count ``import fastgd`` sets; libgomp's own is 300000).
Four workloads, float32:

* ``loop``: a training step as a NumPy user writes it, matrix products with ``@`` (OpenBLAS,
  its own threads) and fastgd's gelu, gelu_backward and Adam: MLP [64, w, w, 10], batch b;
* ``chain``: gelu, gelu_backward, sigmoid and an Adam step back to back, no BLAS;
* ``idle``: one gelu 2 ms after the last call (the workers have gone to sleep);
* ``trap``: that gelu back to back right after the idle calls (a worker woken onto the
  calling thread's CPU makes every later parallel call wait out the caller's barrier spin).
"""

import argparse
import functools
import os
import subprocess
import sys
import time

import numpy as np


def best_us(f, reps, rounds=5):
    f()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def median_us(f, calls, sleep=0.0):
    ts = []
    for _ in range(calls):
        if sleep:
            time.sleep(sleep)
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e6


def user_loop_us(fastgd, rng, batch, width):
    sizes = [64, width, width, 10]
    ws = [rng.standard_normal((a, b), dtype=np.float32) * np.float32(a ** -0.5)
          for a, b in zip(sizes, sizes[1:])]
    opt = fastgd.Adam(ws, lr=1e-3)
    x = rng.standard_normal((batch, 64), dtype=np.float32)

    def step():
        hs, zs = [x], []
        for i, w in enumerate(ws):
            zs.append(hs[-1] @ w)
            hs.append(fastgd.gelu(zs[-1]) if i < len(ws) - 1 else zs[-1])
        d = hs[-1] * np.float32(1 / batch)
        grads = [None] * len(ws)
        for i in reversed(range(len(ws))):
            grads[i] = hs[i].T @ d
            if i:
                d = fastgd.gelu_backward(d @ ws[i].T, zs[i - 1])
        opt.step(grads)

    return best_us(step, max(10, 20000 // width))


def chain_us(fastgd, rng, n):
    x, p, g = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    y, d = np.empty_like(x), np.empty_like(x)
    opt = fastgd.Adam([p], lr=1e-3)

    def chain():
        fastgd.gelu(x, out=y)
        fastgd.gelu_backward(y, x, out=d)
        fastgd.sigmoid(x, out=y)
        opt.step([g])

    return best_us(chain, max(5, (1 << 20) // n))


def measure(args):
    import fastgd
    from fastgd import config

    config.PARALLEL_THRESHOLD = args.threshold or config.PARALLEL_THRESHOLD
    config.CHEAP_PARALLEL_THRESHOLD = args.cheap or config.CHEAP_PARALLEL_THRESHOLD
    rng = np.random.default_rng(0)
    cols = [f"spin {os.environ.get('GOMP_SPINCOUNT', 'unset')}",
            f"thresholds 2^{config.PARALLEL_THRESHOLD.bit_length() - 1}"
            f"/2^{config.CHEAP_PARALLEL_THRESHOLD.bit_length() - 1}"]
    for batch, width in ((64, 128), (256, 512)):
        cols.append(f"loop b{batch} w{width} {user_loop_us(fastgd, rng, batch, width):.0f}")
    for k in (14, 16, 20):
        cols.append(f"chain 2^{k} {chain_us(fastgd, rng, 1 << k):.0f}")
    for k in (14, 17):
        gelu = functools.partial(fastgd.gelu, rng.standard_normal(1 << k, dtype=np.float32))
        cols.append(f"idle 2^{k} {median_us(gelu, 30, 0.002):.0f}")
    cols.append(f"trap 2^17 {median_us(gelu, 300):.0f}")
    print(" | ".join(cols), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spin", default=None, help="GOMP_SPINCOUNT for the run")
    ap.add_argument("--threshold", type=int, default=0, help="config.PARALLEL_THRESHOLD")
    ap.add_argument("--cheap", type=int, default=0, help="config.CHEAP_PARALLEL_THRESHOLD")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return measure(args)
    env = dict(os.environ)
    if args.spin is not None:
        env["GOMP_SPINCOUNT"] = args.spin
    subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env, check=True)


if __name__ == "__main__":
    main()
