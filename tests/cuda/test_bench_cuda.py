"""The GPU half of ``pytest benchmarks`` (simulator or GPU): every activation and optimizer
case on the cuda backend passes the correctness gate and is recorded as a GPU figure, a wrong
CUDA kernel is rejected before it is timed, and the GPU bandwidth probe measures its figures.
On a machine without a GPU this is the only run these code paths get before a GPU is lent.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd.bench import activation_cases as ac
from fastgd.bench import bandwidth, harness
from fastgd.bench import optimizer_cases as oc
from fastgd.bench.harness import Case, WrongResult
from fastgd.scalar import F, exp
from tests.helpers import FakeBenchmark

N = 256  # a few blocks of the conftest's small launches, and one softmax row


@pytest.mark.parametrize("direction", ac.DIRECTIONS)
@pytest.mark.parametrize("op", ac.ops())
def test_activation_cases_on_cuda_pass_the_gate(op, direction):
    if not ac.supports("cuda", op, direction):
        assert direction == "backward_y"  # only the ops whose backward takes no y
        return
    bench = FakeBenchmark(best=1e-6)
    info = harness.run(bench, ac.make_case(op, direction, "cuda", N), roof_gbps=1000.0)
    assert bench.calls == 1
    assert (info["op"], info["direction"], info["backend"]) == (op, direction, "cuda")
    assert info["device"] == "gpu" and info["n"] == N
    moved = (2 if direction == "forward" else 3) * 4 * N
    assert info["bytes"] == moved and info["gbps"] == pytest.approx(moved / 1e-6 / 1e9)


def wrong_sigmoid(x):
    return F(1) / (F(1) + exp(x))  # sign error: this is sigmoid(-x)


def test_a_wrong_cuda_kernel_is_rejected_and_never_timed():
    be = fastgd.get_backend("cuda")
    x = np.linspace(-4, 4, N, dtype=np.float32)
    xd, out = fastgd.to_device(x), be.empty(N, np.float32)
    case = Case(op="sigmoid", direction="forward", backend="cuda", n=N, bytes=8 * N,
                call=lambda: (be.map(wrong_sigmoid, [xd], [out]), out)[1],
                expected=1 / (1 + np.exp(-x.astype(np.float64))), device="gpu",
                to_host=fastgd.to_host)
    bench = FakeBenchmark()
    with pytest.raises(WrongResult, match="sigmoid forward on cuda"):
        harness.run(bench, case)
    assert bench.calls == 0 and bench.extra_info == {}


@pytest.mark.parametrize("layout", ["tensor", "buffer"])
@pytest.mark.parametrize("op", list(oc.OPS))
def test_optimizer_cases_on_cuda_pass_the_gate(op, layout):
    sizes = [100, 57, 3]
    bench = FakeBenchmark(best=1e-6)
    info = harness.run(bench, oc.make_case(op, "cuda", sizes, layout), roof_gbps=1000.0)
    assert info["direction"] == "step" and info["device"] == "gpu" and info["n"] == sum(sizes)
    assert info["layout"] == layout and info["tensors"] == len(sizes)


def test_gpu_bandwidth_probe():
    figures = bandwidth.probe_gpu(n=N, repeats=2)
    for key in ("copy", "inplace", "h2d", "d2h"):
        assert figures[key] > 0, key
    assert figures["n"] == N and bandwidth.roof(figures) >= figures["copy"]
