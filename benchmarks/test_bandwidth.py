"""The bandwidth probe as a benchmark: copy and in-place read+write on each device."""

import numpy as np
import pytest

from fastgd.bench import bandwidth
from fastgd.bench.harness import Case, run

DEVICES = ["cpu"] + (["gpu"] if bandwidth.gpu_available() else [])


def probe_case(kind: str, device: str, n: int) -> Case:
    host = np.arange(n, dtype=np.float32)
    s = np.float32(1.0)
    if device == "cpu":
        copy, inplace = bandwidth.cpu_kernels()
        a, b, sync, to_host = host.copy(), np.empty_like(host), None, np.asarray
        launch = (lambda: copy(a, b)) if kind == "copy" else (lambda: inplace(a, s))
    else:
        from numba import cuda

        from fastgd import config

        copy, inplace = bandwidth.gpu_kernels()
        a, b = cuda.to_device(host), cuda.device_array(n, np.float32)
        tpb = config.THREADS_PER_BLOCK
        grid = (min((n + tpb - 1) // tpb, config.MAX_BLOCKS), tpb)
        sync, to_host = cuda.synchronize, lambda d: d.copy_to_host()
        launch = (lambda: copy[grid](a, b)) if kind == "copy" else (lambda: inplace[grid](a, s))
    target = b if kind == "copy" else a

    def call():
        launch()
        return target

    return Case(op=kind, direction="probe", backend="numba" if device == "cpu" else "cuda",
                n=n, bytes=2 * host.nbytes, call=call, expected=host, device=device,
                sync=sync, to_host=to_host)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["copy", "inplace"])
def test_bandwidth(benchmark, roofs, probe_n, op, device):
    run(benchmark, probe_case(op, device, probe_n), roofs.get(device))
