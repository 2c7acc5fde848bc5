"""Every activation, forward and backward, on each backend and peer (float32).

Parameters (op, direction, backend, n) come from ``fastgd.bench.activation_cases.params``
through ``pytest_generate_tests`` in conftest.py, so ``--fastgd-sizes`` can add sizes. Each
case is checked against the NumPy backend before it is timed.
"""

from fastgd.bench.activation_cases import make_case
from fastgd.bench.harness import run


def test_activation(benchmark, roofs, op, direction, backend, n):
    case = make_case(op, direction, backend, n)
    run(benchmark, case, roofs.get(case.device))
