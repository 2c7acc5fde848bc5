"""The two training measurements of the nn layer:

1. one epoch of the digits MLP [64, 128, 128, 10] (Adam, mini-batch 64) on the numba and
   numpy backends and in a plain PyTorch loop, trained alternately so all see the same
   machine state;
2. where the time of a wide MLP [1024, 4096, 4096, 10] (batch 1024, random data) goes:
   ``nn.train(..., profile=True)`` prints matrix products vs fused kernels vs optimizer.

    PYTHONPATH=. python tools/profile_mlp.py [--epochs 6] [--wide-batches 8]
"""

import argparse
import time

import numpy as np

import fastgd
from fastgd import nn


def digits_epoch_ms(backend, activation, epochs, data):
    model = nn.MLP([64, 128, 128, 10], activation=activation, backend=backend, seed=0)
    hist = nn.train(model, data, loss="cross_entropy", optimizer=fastgd.Adam(model.params),
                    mode="minibatch", batch_size=64, epochs=epochs, progress=False)
    return 1e3 * float(np.min(hist.time[1:])), hist.test_accuracy[-1]  # epoch 1 compiles


def torch_epoch_ms(activation, epochs, data):
    """The same training in PyTorch (CPU, as many threads as Numba): the same layers, Adam
    (fused), mini-batch 64 shuffled each epoch, cross-entropy; the loop a user writes."""
    import numba
    import torch

    torch.set_num_threads(numba.get_num_threads())
    torch.manual_seed(0)
    act = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU}[activation]
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), act(), torch.nn.Linear(128, 128),
                                act(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            idx = order[start:start + 64]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        acc = (model(torch.from_numpy(data.x_test)).argmax(1).numpy() == data.y_test).mean()
    return 1e3 * min(times[1:]), acc


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
        times, accs = {}, {}
        for _ in range(2):
            for backend in ("numpy", "numba", "torch"):
                if backend == "torch":
                    ms, acc = torch_epoch_ms(activation, args.epochs, data)
                else:
                    ms, acc = digits_epoch_ms(backend, activation, args.epochs, data)
                times[backend], accs[backend] = min(ms, times.get(backend, ms)), acc
        print(f"  {activation:5s} numpy {times['numpy']:6.2f}  numba {times['numba']:6.2f}"
              f"  torch {times['torch']:6.2f}  numpy/numba {times['numpy'] / times['numba']:.2f}"
              f"  torch/numba {times['torch'] / times['numba']:.2f}  (test accuracy numba "
              f"{accs['numba']:.3f}, torch {accs['torch']:.3f})")
    print()
    wide_profile(args.wide_batches)


if __name__ == "__main__":
    main()
