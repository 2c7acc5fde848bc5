"""Python-side cost of one activation call on a small array, beside PyTorch's in the same run.

Usage: python tools/call_overhead.py [n]
"""

import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fastgd
import fastgd  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
x = np.random.randn(n).astype(np.float32)
dy, out = np.ones_like(x), np.empty_like(x)
rows = x.reshape(-1, 128) if n % 128 == 0 else x.reshape(1, -1)
cases = {  # name: fastgd call
    "relu": lambda: fastgd.relu(x),
    "relu out=": lambda: fastgd.relu(x, out=out),
    "leaky_relu(0.2)": lambda: fastgd.leaky_relu(x, 0.2),
    "tanh": lambda: fastgd.tanh(x),
    "relu_backward": lambda: fastgd.relu_backward(dy, x),
    "sigmoid_backward(y=)": lambda: fastgd.sigmoid_backward(dy, y=x),
    "softmax": lambda: fastgd.softmax(rows),
}
peers = {}  # the same calls in PyTorch, on tensors sharing the arrays' memory
try:
    import torch
    import torch.nn.functional as tf

    t, td, to, tr = (torch.from_numpy(a) for a in (x, dy, out, rows))
    peers = {
        "relu": lambda: tf.relu(t),
        "relu out=": lambda: torch.clamp(t, min=0, out=to),
        "leaky_relu(0.2)": lambda: tf.leaky_relu(t, 0.2),
        "tanh": lambda: torch.tanh(t),
        "relu_backward": lambda: torch.ops.aten.threshold_backward(td, t, 0),
        "sigmoid_backward(y=)": lambda: torch.ops.aten.sigmoid_backward(td, t),
        "softmax": lambda: torch.softmax(tr, -1),
    }
except ImportError:
    pass


def best(fn, reps=20000):
    fn()
    return min(timeit.repeat(fn, number=reps, repeat=7)) / reps * 1e6


print(f"n = {n} float32 (softmax on {rows.shape[0]} x {rows.shape[1]}), best of 7 x 20000 calls")
for name, ours in cases.items():
    peer = f"   torch {best(peers[name]):.2f} µs" if name in peers else ""
    print(f"{name:22s} fastgd {best(ours):.2f} µs{peer}")
