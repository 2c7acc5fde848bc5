"""Row kernels on a GPU: a block per row (backends/cuda_rows) against a thread per row.

    PYTHONPATH=. python tools/perf_rows_cuda.py [--n 24] [--lengths 10,64,256,4096] [--reps 10]

For float32 arrays of 2^n elements in rows of each length: softmax forward, softmax backward
from y, log_softmax forward and cross-entropy (labels: loss and gradient), each run with
``config.ROW_THREADS`` threads per row ("block") and with one thread per row ("thread", as
before cuda_rows), plus torch's softmax on the same device where torch has CUDA. GB/s counts
the bytes that must move (8 per element forward, 12 backward; cross-entropy reads x and
writes the gradient); "roof" is the device copy's GB/s measured in the same run. The two
modes' results are compared too (they sum in a different order). Runs under the CUDA
simulator with a small --n, to check the script.
"""

import argparse
import time

import numpy as np

import fastgd
from fastgd import config, nn
from fastgd.bench import bandwidth


def best(fn, reps, sync):
    fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def cases(x, dy, y, labels):
    """name -> (bytes per element, call)."""
    ce = nn.get_loss("cross_entropy", "none")
    return {
        "softmax fwd": (8, lambda: fastgd.softmax(x)),
        "softmax bwd(y)": (12, lambda: fastgd.softmax_backward(dy, y=y)),
        "log_softmax fwd": (8, lambda: fastgd.log_softmax(x)),
        # check=False: the label check (a copy to the host, min and max) would dominate
        "cross_entropy": (8, lambda: ce.value_and_grad(x, labels, check=False)[1]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--lengths", default="10,64,256,4096")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    from numba import cuda

    n = 1 << args.n
    probe = bandwidth.probe_gpu(n, repeats=args.reps)
    copy = bandwidth.roof(probe)
    figures = ", ".join(f"{k} {v:.0f}" for k, v in probe.items() if k != "n")
    print(f"{fastgd.backends()['cuda']}: 2^{args.n} float32, roof {copy:.0f} GB/s ({figures}); "
          f"a block of {config.ROW_THREADS} threads per row")
    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    print(f"{'rows':>12} {'op':<16} {'block GB/s':>10} {'thread GB/s':>11} {'block/thread':>12} "
          f"{'/roof':>6} {'max diff':>9}" + (f" {'torch GB/s':>10}" if has_torch else ""))
    rng = np.random.default_rng(0)
    for length in (int(v) for v in args.lengths.split(",")):
        rows = n // length
        x_host = rng.normal(0, 3, (rows, length)).astype(np.float32)
        x, dy = fastgd.to_device(x_host), fastgd.to_device(np.ones_like(x_host) / length)
        y = fastgd.softmax(x)
        labels = fastgd.to_device(rng.integers(0, length, rows))
        for name, (per_element, call) in cases(x, dy, y, labels).items():
            seconds, results = {}, {}
            for mode, threads in (("block", config.ROW_THREADS), ("thread", 1 << 30)):
                saved, config.ROW_THREADS = config.ROW_THREADS, threads
                try:
                    results[mode] = fastgd.to_host(call())
                    seconds[mode] = best(call, args.reps, cuda.synchronize)
                finally:
                    config.ROW_THREADS = saved
            gbps = {m: per_element * rows * length / s / 1e9 for m, s in seconds.items()}
            diff = float(np.max(np.abs(results["block"] - results["thread"]), initial=0))
            line = (f"{rows:>7}x{length:<4} {name:<16} {gbps['block']:>10.1f} "
                    f"{gbps['thread']:>11.1f} {seconds['thread'] / seconds['block']:>12.2f} "
                    f"{gbps['block'] / copy:>6.2f} {diff:>9.1e}")
            if has_torch and name == "softmax fwd":
                tx = torch.as_tensor(x_host, device="cuda")
                t = best(lambda tx=tx: torch.softmax(tx, -1), args.reps, torch.cuda.synchronize)
                line += f" {per_element * rows * length / t / 1e9:>10.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
