"""Float32 activation throughput: fastgd numba vs torch (preallocated outputs, own backward
kernels) vs the fastgd NumPy backend, plus a parallel Numba copy as the bandwidth roof.

    PYTHONPATH=. python tools/perf_act.py [op,op,...] [--n 24] [--reps 7]

GB/s counts bytes moved: forward 8 B/element (read x, write y), backward 12 (dy, x, dx);
softmax and log_softmax run on rows of 256, their backward from y (dy, y, dx).
Ratios are time ratios from the same run (>1: fastgd faster).
"""

import argparse
import time

import numba
import numpy as np
import torch

import fastgd
from fastgd.activation.formulas import SELU_ALPHA, SELU_SCALE

aten = torch.ops.aten
ROW = 256  # softmax and log_softmax: rows of this many elements


def best(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


@numba.njit(parallel=True)
def _copy(o, a):
    for i in numba.prange(a.size):
        o[i] = a[i]


def torch_cases(tx, tdy, tout):
    """name -> (params, torch forward, torch backward or None)."""
    ty = {}

    def y_of(f):  # forward output for backwards that take it
        if "y" not in ty:
            ty["y"] = f(tx)
        return ty["y"]

    def row_case(fwd, bwd, out_name):
        """Rows of ROW; the backward from the forward output y, as torch's autograd saves it."""
        x2, dy2, out2 = (t.view(-1, ROW) for t in (tx, tdy, tout))
        y2 = fwd(x2, -1, False)
        return ({}, lambda: fwd.out(x2, -1, False, out=out2),
                lambda: bwd.out(dy2, y2, -1, torch.float32, **{out_name: out2}))

    sig_y = torch.sigmoid(tx)
    tanh_y = torch.tanh(tx)
    return {
        "sigmoid": ({}, lambda: torch.sigmoid(tx, out=tout),
                    lambda: aten.sigmoid_backward.grad_input(tdy, sig_y, grad_input=tout)),
        "tanh": ({}, lambda: torch.tanh(tx, out=tout),
                 lambda: aten.tanh_backward.grad_input(tdy, tanh_y, grad_input=tout)),
        "silu": ({}, lambda: aten.silu.out(tx, out=tout),
                 lambda: aten.silu_backward.grad_input(tdy, tx, grad_input=tout)),
        "gelu": ({}, lambda: aten.gelu.out(tx, out=tout),
                 lambda: aten.gelu_backward.grad_input(tdy, tx, grad_input=tout)),
        "gelu_tanh": ({"approximate": "tanh"},
                      lambda: aten.gelu.out(tx, approximate="tanh", out=tout),
                      lambda: aten.gelu_backward.grad_input(tdy, tx, approximate="tanh",
                                                            grad_input=tout)),
        "softplus": ({}, lambda: aten.softplus.out(tx, 1.0, 20.0, out=tout),
                     lambda: aten.softplus_backward.grad_input(tdy, tx, 1.0, 20.0,
                                                               grad_input=tout)),
        "elu": ({}, lambda: aten.elu.out(tx, 1.0, 1, 1, out=tout),
                lambda: aten.elu_backward.grad_input(tdy, 1.0, 1, 1, False, tx,
                                                     grad_input=tout)),
        "selu": ({}, lambda: aten.elu.out(tx, SELU_ALPHA, SELU_SCALE, 1, out=tout),
                 lambda: aten.elu_backward.grad_input(tdy, SELU_ALPHA, SELU_SCALE, 1, False, tx,
                                                      grad_input=tout)),
        "mish": ({}, lambda: aten.mish.out(tx, out=tout),
                 lambda: aten.mish_backward(tdy, tx)),
        "softmax": row_case(aten._softmax, aten._softmax_backward_data, "grad_input"),
        "log_softmax": row_case(aten._log_softmax, aten._log_softmax_backward_data, "out"),
        "relu": ({}, lambda: torch.clamp_min(tx, 0, out=tout), None),
        "leaky_relu": ({}, lambda: aten.leaky_relu.out(tx, 0.01, out=tout), None),
        "hardsigmoid": ({}, lambda: aten.hardsigmoid.out(tx, out=tout), None),
        "hardswish": ({}, lambda: aten.hardswish.out(tx, out=tout), None),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ops", nargs="?", default="")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--no-numpy", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(2)
    n = 1 << a.n
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, n).astype(np.float32)
    dy = rng.normal(0, 1, n).astype(np.float32)
    out = np.empty_like(x)
    tc = best(lambda: _copy(out, x), a.reps)
    copy_gbs = 8 * n / tc / 1e9
    print(f"n=2^{a.n} float32, numba threads {numba.get_num_threads()}, torch threads "
          f"{torch.get_num_threads()}; parallel numba copy {copy_gbs:.1f} GB/s")
    tx, tdy, tout = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(out)
    cases = torch_cases(tx, tdy, tout)
    ops = a.ops.split(",") if a.ops else list(cases)
    print(f"{'op':11s} {'fwd GB/s':>8s} {'x torch':>7s} {'x numpy':>7s} {'/copy':>5s} | "
          f"{'bwd GB/s':>8s} {'x torch':>7s} {'x numpy':>7s}")
    for name in ops:
        run(name, cases[name], x, dy, out, n, copy_gbs, a)


def run(name, case, x, dy, out, n, copy_gbs, a):
    params, tfwd, tbwd = case
    act = fastgd.activations["gelu" if name == "gelu_tanh" else name]
    saved = {"x": x}
    if act.kind == "rowwise":  # rows of ROW; the backward from y, like torch's
        x, dy, out = (v.reshape(-1, ROW) for v in (x, dy, out))
        saved = {"y": act.forward(x)}
    tf = best(lambda: act.forward(x, out=out, **params), a.reps)
    tb = best(lambda: act.backward(dy, **saved, out=out, **params), a.reps)
    tt = best(tfwd, a.reps)
    ttb = best(tbwd, a.reps) if tbwd else float("nan")
    if a.no_numpy:
        tn = tnb = float("nan")
    else:
        tn = best(lambda: act.forward(x, out=out, backend="numpy", **params), 2)
        tnb = best(lambda: act.backward(dy, **saved, out=out, backend="numpy", **params), 2)
    fgbs, bgbs = 8 * n / tf / 1e9, 12 * n / tb / 1e9
    print(f"{name:11s} {fgbs:8.1f} {tt / tf:7.2f} {tn / tf:7.1f} {fgbs / copy_gbs:5.2f} | "
          f"{bgbs:8.1f} {ttb / tb:7.2f} {tnb / tb:7.1f}")


if __name__ == "__main__":
    main()
