"""The benchmarking toolkit: harness, bandwidth probe, peers, report writer.

``pytest benchmarks`` (or ``fastgd bench``) runs the suites in ``benchmarks/``; each one
builds :class:`~fastgd.bench.harness.Case` objects and hands them to
:func:`~fastgd.bench.harness.run`, which checks the result against the NumPy reference (a
wrong implementation raises ``WrongResult`` and is never timed), measures the first-call
(compile) time, times the warm call with pytest-benchmark and fills ``extra_info`` with
``op, direction, backend, device, dtype, n, bytes, gbps, elements_per_s, roof_fraction,
compile_s``. At the end of the session ``benchmarks/conftest.py`` writes the report
(:mod:`fastgd.bench.report`) from the JSON pytest-benchmark saved.

How a suite uses the harness (the optimizer suite ports onto it like this)::

    import pytest
    from fastgd.bench.harness import Case, run

    @pytest.mark.parametrize("n", [1 << 10, 1 << 16, 1 << 20, 1 << 24])
    @pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
    @pytest.mark.parametrize("op", ["sgd", "adam"])
    def test_step(benchmark, roofs, op, backend, n):
        params, grads, state = make_arrays(n)          # the suite's own set-up
        case = Case(
            op=op, direction="step", backend=backend, n=n, dtype="float32",
            bytes=bytes_per_step(op, n),                # bytes that must move per step
            call=lambda: step(op, backend, params, grads, state),   # returns the result
            expected=lambda: reference_step(op, n),     # NumPy reference of that result
            kernels=None,  # or a counter of compiled kernels, to record compile_s
            sync=None,     # on a GPU: cuda.synchronize / torch.cuda.synchronize
        )
        run(benchmark, case, roofs.get(case.device))

Name the parameters ``op``, ``backend`` and ``n`` so that ``--fastgd-ops``,
``--fastgd-backends`` and ``--fastgd-sizes`` (``fastgd bench --ops/--backends/--sizes``)
select them. A call that updates state in place must give the same result on every call
for the check (e.g. compare one step from a saved copy, or pass ``expected=None`` and check
it in the suite's own tests). Plain pytest-benchmark suites that only set the same
``extra_info`` keys also appear in the reports; the report recomputes GB/s from ``bytes``
and the best round, and the roof from the machine's probe.

Modules: :mod:`~fastgd.bench.harness` (check, time, record), :mod:`~fastgd.bench.bandwidth`
(the roof), :mod:`~fastgd.bench.peers` (torch, CuPy), :mod:`~fastgd.bench.activation_cases`
(the activation suite's cases), :mod:`~fastgd.bench.machine` (facts),
:mod:`~fastgd.bench.report` (Markdown + PNG).
"""
