"""One optimizer step, per rule, backend/peer and size (float32), and ParamBuffer layouts.

Built on :mod:`fastgd.bench.harness`: each case's first two steps are checked against two
steps of the NumPy backend from the same start (``optimizer_cases.CHECKED_STEPS``: a kernel
that drops its state passes one; a wrong step is never timed), then the warm step is timed.
``extra_info``: op, direction ("step"), backend, device, dtype, n, bytes (the streams the
rule must read and write: Adam 28 B/element in float32, SGD-momentum 20, plain SGD 12),
gbps, roof_fraction, compile_s, plus layout and tensors. Peers: ``torch`` / ``torch-cuda``
(``torch.optim``, ``fused=True`` where PyTorch has a fused kernel).

``test_optimizer_layout``: 1,000 tensors of mixed sizes totalling 2^24, as one ParamBuffer
(one launch) or as 1,000 tensors (one launch each); compare with ``test_optimizer_step`` at
n = 2^24. Sizes: 2^10, 2^16, 2^20, 2^24 (layouts 2^24); ``--fastgd-quick``: up to 2^20
(layouts 2^20); ``--fastgd-sizes`` replaces the list (layouts: its largest size).
"""

from __future__ import annotations

import pytest

from fastgd.bench import optimizer_cases as oc
from fastgd.bench.harness import run

SIZES = [1 << 10, 1 << 16, 1 << 20, 1 << 24]
QUICK_SIZES = [1 << 10, 1 << 16, 1 << 20]
OURS = oc.ours()


def pytest_generate_tests(metafunc):
    """Sizes from the command line (``--fastgd-sizes``, ``--fastgd-quick``, see conftest)."""
    config = metafunc.config
    given = config.fastgd_sizes
    quick = config.getoption("--fastgd-quick", False)
    sizes = given or (QUICK_SIZES if quick else SIZES)
    if metafunc.function.__name__ == "test_optimizer_step":
        metafunc.parametrize("n", sizes)
    elif metafunc.function.__name__ == "test_optimizer_layout":
        metafunc.parametrize("n", [max(max(sizes), oc.N_TENSORS)])


# every (op, implementation) pair that exists: PyTorch has no Lion, so no such case
PAIRS = [(op, impl) for op in oc.OPS for impl in oc.implementations()
         if not (impl.startswith("torch") and oc.OPS[op][2] is None)]


@pytest.mark.parametrize(("op", "backend"), PAIRS)
def test_optimizer_step(benchmark, roofs, op, backend, n):
    case = oc.make_case(op, backend, [n], "tensor")
    run(benchmark, case, roofs.get(case.device))


@pytest.mark.parametrize("layout", ["buffer", "tensors"])
@pytest.mark.parametrize("backend", OURS)
@pytest.mark.parametrize("op", ["adam", "sgd_momentum"])
def test_optimizer_layout(benchmark, roofs, op, backend, n, layout):
    case = oc.make_case(op, backend, oc.mixed_sizes(n, oc.N_TENSORS), layout)
    run(benchmark, case, roofs.get(case.device))
