"""The two training measurements of the nn layer:

1. one epoch of the digits MLP [64, 128, 128, 10] (Adam, mini-batch 64) on the numba and
   numpy backends, the two trained alternately so both see the same machine state;
2. where the time of a wide MLP [1024, 4096, 4096, 10] (batch 1024, random data) goes:
   ``nn.train(..., profile=True)`` prints matrix products vs fused kernels vs optimizer.

    PYTHONPATH=. python tools/profile_mlp.py [--epochs 6] [--wide-batches 8]
"""

import argparse

import numpy as np

import fastgd
from fastgd import nn


def digits_epoch_ms(backend, activation, epochs, data):
    model = nn.MLP([64, 128, 128, 10], activation=activation, backend=backend, seed=0)
    hist = nn.train(model, data, loss="cross_entropy", optimizer=fastgd.Adam(model.params),
                    mode="minibatch", batch_size=64, epochs=epochs, progress=False)
    return 1e3 * float(np.min(hist.time[1:])), hist.test_accuracy[-1]  # epoch 1 compiles


def wide_profile(batches):
    rng = np.random.default_rng(0)
    n = 1024 * batches
    x = rng.standard_normal((n + 1024, 1024), dtype=np.float32)
    y = rng.integers(0, 10, n + 1024)
    data = nn.datasets.Dataset("random", x[:n], y[:n], x[n:], y[n:], 10)
    model = nn.MLP([1024, 4096, 4096, 10], activation="gelu", backend="numba", seed=0)
    opt = fastgd.Adam(model.params)
    warm = nn.datasets.Dataset("warm-up", x[:1024], y[:1024], x[n:], y[n:], 10)
    nn.train(model, warm, loss="cross_entropy", optimizer=opt, mode="minibatch",
             batch_size=1024, epochs=1, progress=False)  # compiles outside the profile
    nn.train(model, data, loss="cross_entropy", optimizer=opt,
             mode="minibatch", batch_size=1024, epochs=2, progress=False, profile=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--wide-batches", type=int, default=8)
    args = ap.parse_args()
    data = nn.datasets.digits()
    print("digits MLP [64, 128, 128, 10], Adam, mini-batch 64: best epoch (ms)")
    for activation in ("relu", "gelu"):
        times = {}
        for _ in range(2):
            for backend in ("numpy", "numba"):
                ms, acc = digits_epoch_ms(backend, activation, args.epochs, data)
                times[backend] = min(ms, times.get(backend, ms))
        print(f"  {activation:5s} numpy {times['numpy']:6.2f}  numba {times['numba']:6.2f}"
              f"  numpy/numba {times['numpy'] / times['numba']:.2f}  (test accuracy {acc:.3f})")
    print()
    wide_profile(args.wide_batches)


if __name__ == "__main__":
    main()
