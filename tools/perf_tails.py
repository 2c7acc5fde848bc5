"""Activation time on float32 data of growing spread: N(0, s) for s = 1, 20, 50, 200. Where
an op's math forms subnormal numbers (a microcode assist for the whole vector on x86) the
wide columns show it. Then softmax and log_softmax on masked rows (256 rows of 256, the
second half of each set to -1e4, -1e9 or -inf, as an attention or vocabulary mask does),
beside PyTorch's when it is installed.

    PYTHONPATH=. python tools/perf_tails.py [threads] [op,op,...]
"""

import functools
import sys
import time

import numba
import numpy as np

import fastgd

OPS = ["sigmoid", "tanh", "silu", "softplus", "mish", "elu", "selu", "gelu", "gelu_tanh",
       "log_softmax", "softmax"]
SPREADS = (1, 20, 50, 200)


def best_us(f, reps=50):
    f()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def main():
    numba.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    ops = sys.argv[2].split(",") if len(sys.argv) > 2 else OPS
    n = 1 << 16
    rng = np.random.default_rng(0)
    data = {s: (rng.standard_normal(n) * s).astype(np.float32) for s in SPREADS}
    dy, out = np.ones(n, np.float32), np.empty(n, np.float32)
    print(f"us a call, {n} float32 of N(0, s), {numba.get_num_threads()} thread(s):",
          " ".join(f"s={s:>5}" for s in SPREADS))
    for op in ops:
        name, kw = ("gelu", {"approximate": "tanh"}) if op == "gelu_tanh" else (op, {})
        fwd, bwd = getattr(fastgd, name), getattr(fastgd, name + "_backward")
        f = [best_us(functools.partial(fwd, data[s], out=out, **kw)) for s in SPREADS]
        b = [best_us(functools.partial(bwd, dy, data[s], out=out, **kw)) for s in SPREADS]
        print(f"{op:12s} fwd " + " ".join(f"{t:7.1f}" for t in f)
              + "   bwd " + " ".join(f"{t:7.1f}" for t in b))
    if {"softmax", "log_softmax"} & set(ops):
        masked(rng)


def masked(rng):
    """softmax and log_softmax on rows half masked: forward, backward from x and from y."""
    x0 = (rng.standard_normal((256, 256)) * 3).astype(np.float32)
    dy, out = rng.standard_normal(x0.shape).astype(np.float32), np.empty_like(x0)
    try:
        import torch
        torch.set_num_threads(numba.get_num_threads())
    except ImportError:
        torch = None
    print("us a call, 256 rows of 256 float32, the second half masked: fwd, bwd from x, "
          "bwd from y" + ("; PyTorch fwd, bwd from y" if torch else ""))
    for value in (None, -1e4, -1e9, -np.inf):
        x = x0.copy()
        if value is not None:
            x[:, 128:] = value
        row = []
        for name in ("softmax", "log_softmax"):
            fwd, bwd = getattr(fastgd, name), getattr(fastgd, name + "_backward")
            y = fwd(x)
            row += [best_us(functools.partial(fwd, x, out=out)),
                    best_us(functools.partial(bwd, dy, x, out=out)),
                    best_us(functools.partial(bwd, dy, y=y, out=out))]
            if torch:
                tx, tdy, ty = (torch.from_numpy(a) for a in (x, dy, y))
                back = getattr(torch, f"_{name}_backward_data")
                row += [best_us(functools.partial(getattr(torch, name), tx, -1)),
                        best_us(functools.partial(back, tdy, ty, -1, torch.float32))]
        label = "unmasked" if value is None else f"mask {value:g}"
        print(f"{label:12s} " + " ".join(f"{t:7.1f}" for t in row))


if __name__ == "__main__":
    main()
