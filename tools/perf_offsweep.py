"""The cases the benchmark sweep's 1-D contiguous arrays leave out, fastgd (numba) against
PyTorch in the same process: layouts, axes, BatchNorm1d, prelu of (N, C), a short-row loss,
many small gradients. The "Off the sweep" table of docs/performance.md comes from this script.

    PYTHONPATH=. python tools/perf_offsweep.py [--reps 7]

Each figure is the best of ``--reps`` calls after a warm-up call, in ms. New outputs are
allocated at every call, as a user's calls allocate them: at these sizes the page faults of
fresh memory are part of the time, and vary from process to process.
"""

import argparse

import numba
import numpy as np
import torch
from perf_act import best  # (tools/ is on sys.path when this script runs)

import fastgd
from fastgd import nn


def cases(rng):
    a = rng.standard_normal((2000, 2000)).astype(np.float32)
    s = rng.standard_normal((256, 4096)).astype(np.float32)
    r = rng.standard_normal((64, 10, 4096)).astype(np.float32)
    c = rng.standard_normal((32, 64, 56, 56)).astype(np.float32)  # an image batch's channels
    h = rng.standard_normal((4096, 256)).astype(np.float32)
    p = rng.standard_normal((4096, 1024)).astype(np.float32)
    w = rng.uniform(0.1, 0.3, 1024).astype(np.float32)
    z = rng.standard_normal(65536).astype(np.float32)
    t = (rng.random(65536) > 0.5).astype(np.float32)
    grads = [rng.standard_normal(int(n)).astype(np.float32)
             for n in rng.integers(16, 4096, 200)]
    at, st, rt, ct, pt, wt = map(torch.from_numpy, (a, s, r, c, p, w))
    zt, tt = torch.from_numpy(z), torch.from_numpy(t)
    gt = [torch.from_numpy(g) for g in grads]

    bn = nn.BatchNorm1d(256, backend="numba")
    tbn = torch.nn.BatchNorm1d(256)
    ht = torch.from_numpy(h).requires_grad_()

    def torch_bn():
        tbn(ht).backward(torch.from_numpy(h))

    pg, wg = pt.clone().requires_grad_(), wt.clone().requires_grad_()

    def torch_prelu():
        torch.nn.functional.prelu(pg, wg).backward(pt)

    bce = nn.get_loss("binary_cross_entropy_with_logits")
    zg = zt.clone().requires_grad_()

    def torch_bce():
        torch.nn.functional.binary_cross_entropy_with_logits(zg, tt).backward()

    wide = rng.standard_normal((4096, 2048)).astype(np.float32)
    half, half_t = wide[:, :1024], torch.from_numpy(wide)[:, :1024]
    return [
        ("relu(a.T), 2000x2000", lambda: fastgd.relu(a.T), lambda: torch.relu(at.T)),
        ("relu(x[:, :1024]), x 4096x2048", lambda: fastgd.relu(half),
         lambda: torch.relu(half_t)),
        ("sigmoid(x[:, :1024]), x 4096x2048", lambda: fastgd.sigmoid(half),
         lambda: torch.sigmoid(half_t)),
        ("relu(x[:, ::2]), x 4096x2048", lambda: fastgd.relu(wide[:, ::2]),
         lambda: torch.relu(torch.from_numpy(wide)[:, ::2])),
        ("softmax along axis 0, 256x4096", lambda: fastgd.softmax(s, axis=0),
         lambda: torch.softmax(st, 0)),
        ("log_softmax along axis 1 of (64, 10, 4096)", lambda: fastgd.log_softmax(r, axis=1),
         lambda: torch.log_softmax(rt, 1)),
        ("softmax along the channels of (32, 64, 56, 56)", lambda: fastgd.softmax(c, axis=1),
         lambda: torch.softmax(ct, 1)),
        ("BatchNorm1d forward + backward, 4096x256",
         lambda: (bn.forward(h), bn.backward(h)), torch_bn),
        ("prelu forward, (4096, 1024)", lambda: fastgd.prelu(p, w),
         lambda: torch.nn.functional.prelu(pt, wt)),
        ("prelu forward + backward, (4096, 1024)",
         lambda: (fastgd.prelu(p, w), fastgd.prelu_backward(p, p, w)), torch_prelu),
        ("BCE with logits value and grad, 65,536 of shape (N,)",
         lambda: bce.value_and_grad(z, t), torch_bce),
        ("clip_grad_norm (inf) of 200 tensors of 16-4096",
         lambda: fastgd.clip_grad_norm(grads, float("inf")),
         lambda: torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                       for g in gt]))),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(numba.get_num_threads())  # the same threads for both
    print(f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()}; "
          f"ms, best of {args.reps}")
    print(f"{'case':55s} {'fastgd':>8s} {'torch':>8s}")
    for name, ours, theirs in cases(np.random.default_rng(0)):
        ms = [1e3 * best(fn, args.reps) for fn in (ours, theirs)]
        print(f"{name:55s} {ms[0]:8.2f} {ms[1]:8.2f}")


if __name__ == "__main__":
    main()
