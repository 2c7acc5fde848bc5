"""The benchmark harness: the correctness gate, the recorded figures, the activation cases."""

import numpy as np
import pytest

import fastgd
from fastgd.activation import formulas
from fastgd.backends import get_backend
from fastgd.bench import activation_cases as ac
from fastgd.bench import bandwidth, harness
from fastgd.bench.harness import Case, WrongResult
from fastgd.scalar import F, exp
from tests.helpers import FakeBenchmark


def wrong_sigmoid(x):
    return F(1) / (F(1) + exp(x))  # sign error: this is sigmoid(-x)


def numba_case(fn, n=1000):
    be = get_backend("numba")
    x = np.linspace(-4, 4, n, dtype=np.float32)
    out = np.empty_like(x)
    return Case(op="sigmoid", direction="forward", backend="numba", n=n, bytes=2 * x.nbytes,
                call=lambda: (be.map(fn, [x], [out]), out)[1],
                expected=lambda: 1 / (1 + np.exp(-x.astype(np.float64))),
                kernels=lambda: len(be._kernels))


def test_gate_rejects_a_wrong_kernel_and_never_times_it():
    bench = FakeBenchmark()
    with pytest.raises(WrongResult, match=r"sigmoid forward on numba .*differ from the NumPy"):
        harness.run(bench, numba_case(wrong_sigmoid))
    assert bench.calls == 0 and bench.extra_info == {}


@pytest.mark.parametrize("n", [1 << 12, 1 << 16])
def test_gate_rejects_an_activation_that_skips_its_last_elements(n, monkeypatch):
    """The output starts as NaN: memory from np.empty could be the NumPy case's freed
    result, right where a kernel with a remainder-loop bug wrote nothing."""
    act = ac.activation("sigmoid")
    harness.first_call(ac.make_case("sigmoid", "forward", "numpy", n))  # as a sweep runs
    forward = act.forward

    def skips_seven(x, out=None, backend=None):
        if backend != "numba":  # the reference
            return forward(x, out=out, backend=backend)
        forward(x[:-7], out=out[:-7], backend=backend)
        return out

    case = ac.make_case("sigmoid", "forward", "numba", n)
    monkeypatch.setattr(act, "forward", skips_seven)  # looked up when the case calls it
    with pytest.raises(WrongResult, match="7 of"):
        harness.verify(case, case.call())


@pytest.mark.parametrize("op", ["sgd", "sgd_momentum", "adam"])
def test_gate_rejects_an_optimizer_step_that_skips_elements(op):
    """Checked by the change each parameter made: two SGD steps of lr 1e-3 move it by about
    2e-5, within a tolerance relative to the parameter, so a missed element passed."""
    from fastgd.bench import optimizer_cases as oc

    case = oc.make_case(op, "numba", [4096], "tensor")
    step, origin = case.call, case.origin.copy()

    def skips_last():
        arrays = list(step())
        arrays[-1][-3:] = origin[-3:]  # as if never updated
        return arrays

    result = [skips_last() for _ in range(case.checked_calls)][-1]
    with pytest.raises(WrongResult, match="3 of 4096"):
        harness.verify(case, result)
    right = oc.make_case(op, "numba", [4096], "tensor")
    harness.verify(right, [right.call() for _ in range(right.checked_calls)][-1])


def test_right_kernel_is_timed_and_recorded(monkeypatch):
    monkeypatch.setattr(fastgd.get_backend("numba"), "_kernels", {})  # so this call compiles
    bench = FakeBenchmark(best=1e-3)
    info = harness.run(bench, numba_case(formulas.sigmoid, n=1001), roof_gbps=0.004)
    assert bench.calls == 1
    assert info["op"] == "sigmoid" and info["direction"] == "forward"
    assert info["backend"] == "numba" and info["n"] == 1001 and info["dtype"] == "float32"
    assert info["bytes"] == 8008
    assert info["gbps"] == pytest.approx(8008 / 1e-3 / 1e9)
    assert info["elements_per_s"] == pytest.approx(1001 / 1e-3)
    assert info["roof_fraction"] == pytest.approx(8008 / 1e-3 / 1e9 / 0.004)
    assert info["compile_s"] > 0  # a new kernel (serial loop, new size class) was compiled


def test_gate_rejects_a_call_that_writes_into_its_inputs():
    """An audit: a relu computed into its own input passed its check (the reference was
    computed after the call, from the changed input) and left every later case of that
    size an input without negatives."""
    case = ac.make_case("relu", "forward", "numpy", 1 << 10)
    x = ac.inputs((1 << 10,))["x"].copy()
    harness.run(FakeBenchmark(), case)  # the right call leaves them as they were
    bench = FakeBenchmark()
    case.call = lambda: np.maximum(x, 0, out=x)
    case.inputs = (x,)
    with pytest.raises(WrongResult, match="relu forward on numpy .*wrote into its inputs"):
        harness.run(bench, case)
    assert bench.calls == 0


def test_compile_time_only_when_a_kernel_was_compiled():
    harness.run(FakeBenchmark(), numba_case(formulas.sigmoid, n=500))  # compiled (or cached)
    info = harness.run(FakeBenchmark(), numba_case(formulas.sigmoid, n=600))
    assert "compile_s" not in info and info["first_call_s"] > 0


def test_a_new_signature_of_a_kernel_counts_as_a_compile():
    """A kernel compiled again for other argument types adds no kernel, only a signature:
    its first call's time is compile time too."""
    from types import SimpleNamespace

    import numba

    from fastgd.bench.activation_cases import _compiled

    kernel = numba.njit(lambda a: a[0])
    be = SimpleNamespace(_kernels={"k": kernel})
    assert _compiled(be) == 1
    kernel(np.ones(2, np.float32))
    kernel(np.ones(2, np.float32))
    assert _compiled(be) == 2
    kernel(np.ones(2, np.float64))
    assert _compiled(be) == 3


def test_slow_calls_get_few_rounds(monkeypatch):
    monkeypatch.setattr(harness, "SLOW_S", 0.0)
    bench = FakeBenchmark()
    harness.run(bench, make(lambda: np.ones(4, np.float32), np.ones(4)))
    assert bench.calls == 1 and bench.rounds == harness.SLOW_ROUNDS


def make(call, expected, dtype="float32", sample=None):
    return Case(op="op", direction="forward", backend="b", n=4, bytes=32, call=call,
                expected=expected, dtype=dtype, sample=sample)


def f32(values):
    return np.array(values, np.float32)


def test_verify_tolerance_nan_shape_and_sample():
    ref = np.array([1.0, -2.0, np.nan, np.inf])
    harness.verify(make(None, ref), f32(ref * (1 + 1e-6)))
    with pytest.raises(WrongResult, match=r"1 of 4 values .* index 1: got -2.0099"):
        harness.verify(make(None, ref), f32([1.0, -2.01, np.nan, np.inf]))
    with pytest.raises(WrongResult, match=r"index 2"):
        harness.verify(make(None, ref), f32([1.0, -2.0, 0.0, np.inf]))
    # the whole result's size and dtype, before any sample is taken
    with pytest.raises(WrongResult, match="result is 3 float32 values, the case 4 float32"):
        harness.verify(make(None, ref), f32([1.0, -2.0, np.nan]))
    with pytest.raises(WrongResult, match="result is 4 float64 values, the case 4 float32"):
        harness.verify(make(None, ref), ref)
    with pytest.raises(WrongResult, match="result is 5 float32 values"):
        harness.verify(make(None, ref[[0, 3]], sample=lambda r: r[[0, 3]]), f32([1, 5, 7, 9, 0]))
    # float64 is held much tighter than float32
    with pytest.raises(WrongResult, match="rtol=1e-09"):
        harness.verify(make(None, ref, dtype="float64"), ref * (1 + 1e-6))
    sampled = make(None, ref[[0, 3]], sample=lambda r: r[[0, 3]])
    harness.verify(sampled, f32([1.0, 5.0, 7.0, np.inf]))
    # small values are compared to 1e-7 of the largest one in float32 (not 1e-6)
    ramp = np.array([1e-5, 1.0, 10.0, 10.0])
    with pytest.raises(WrongResult, match="index 0"):
        harness.verify(make(None, ramp), f32([0.0, 1.0, 10.0, 10.0]))
    peer = make(None, ramp)  # a peer's tails are not held to fastgd's accuracy
    peer.peer = True
    harness.verify(peer, f32([0.0, 1.0, 10.0, 10.0]))


def test_metrics():
    case = make(None, None)
    case.bytes, case.n = 8_000_000_000, 1000
    m = harness.metrics(case, 2.0, roof_gbps=8.0)
    assert m == {"gbps": 4.0, "elements_per_s": 500.0, "roof_fraction": 0.5}
    assert harness.metrics(case, 2.0, None)["roof_fraction"] is None


@pytest.mark.parametrize("op", ["relu", "prelu", "softmax", "gelu"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_activation_cases_pass_the_gate_on_numpy_and_torch(op, direction):
    pytest.importorskip("torch")
    for impl in ("numpy", "torch"):
        case = ac.make_case(op, direction, impl, 1 << 12)
        _, result, _ = harness.first_call(case)
        harness.verify(case, result)
        assert case.n == 1 << 12 and case.bytes == (2 if direction == "forward" else 3) * 4 * 4096


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu"])
def test_backward_from_y_cases_pass_the_gate_on_every_cpu_implementation(op):
    pytest.importorskip("torch")
    for impl in ("numpy", "numba", "torch"):
        assert ac.supports(impl, op, "backward_y")
        case = ac.make_case(op, "backward_y", impl, 1 << 12)
        _, result, _ = harness.first_call(case)
        harness.verify(case, result)


@pytest.mark.parametrize("direction", ac.DIRECTIONS)
def test_plain_numpy_peer_passes_the_gate_in_float32_for_every_op(direction):
    """The plain-NumPy peer's expressions (written apart from the reference) are right, and
    stay in float32 (a NumPy float64 scalar in one of them promoted its result)."""
    pytest.importorskip("scipy")  # the exact GELU's erf
    expected = {op for op in ac.ops() if ac.supports("numpy", op, direction)}
    assert {op for op in ac.ops() if ac.supports("numpy-plain", op, direction)} == expected
    for op in sorted(expected):
        case = ac.make_case(op, direction, "numpy-plain", 1 << 12)
        result = case.call()
        assert result.dtype == np.float32, op
        harness.verify(case, result)


def test_large_cases_check_a_sample_of_rows(monkeypatch):
    monkeypatch.setattr(ac, "CHECK_ALL", 1 << 10)
    monkeypatch.setattr(ac, "CHECK_SAMPLE", 1 << 10)
    ac._expected.cache_clear()
    case = ac.make_case("softmax", "forward", "numpy", 1 << 20)
    _, result, _ = harness.first_call(case)
    harness.verify(case, result)
    sample = case.sample(result)
    assert 2 <= sample.shape[0] < result.shape[0] and sample.shape[1] == ac.ROW
    rows = result.shape[0]
    for r in (rows - 1, rows // 2, rows // 4 - 1):  # the last row, and where threads split
        bad = result.copy()
        bad[r, 0] += 1
        with pytest.raises(WrongResult):
            harness.verify(case, bad)
    ac._expected.cache_clear()


def test_shapes_and_params():
    assert ac.shape_for("sigmoid", 1 << 16) == (1 << 16,)
    assert ac.shape_for("softmax", 1 << 16) == (256, 256)
    assert ac.shape_for("prelu", 1 << 16) == (16, 16, 256)
    assert ac.shape_for("prelu", 1 << 10) == (1, 16, 64)
    combos = ac.params(ops_=["relu"], impls=["numba", "numpy"], quick=True)
    assert len(combos) == 2 * 3 * 2  # quick: forward and backward from x
    assert len(ac.params(["relu"], ["numba", "numpy"])) == 3 * 4 * 2  # and from y
    assert {c[1] for c in ac.params(["gelu", "softmax"], ["numpy"])} == {"forward", "backward"}
    assert {c[3] for c in combos} == set(ac.QUICK_SIZES)
    default = ac.params(ops_=["relu"], impls=["numpy"])
    assert {c[3] for c in default} == set(ac.SIZES)  # no GPU sizes on the CPU
    assert {c[3] for c in ac.params(["relu"], ["numpy"], sizes=[1 << 26])} == {1 << 26}
    assert ac.params(["relu"], ["numpy"], sizes=[1 << 28]) == []  # 2^28 only on a GPU
    # softmax's rows of 256: 256 and 300 elements are one case (a report mixed the two)
    assert [c[3] for c in ac.params(["softmax"], ["numpy"], sizes=[256, 300, 512])
            if c[1] == "forward"] == [256, 512]


def test_bandwidth_probe_and_roof():
    figures = bandwidth.probe_cpu(n=1 << 16, repeats=2)
    assert figures["copy"] > 0 and figures["inplace"] > 0 and figures["n"] == 1 << 16
    assert bandwidth.roof({"copy": 3.0, "inplace": 5.0, "h2d": 99.0, "n": 7}) == 5.0
    assert bandwidth.roof(None) is None


def test_the_probe_times_rounds_of_launches_and_reports_one(monkeypatch):
    """On a GPU a round is several launches then one wait: the ~10-20 µs of a launch and its
    wait understated the roof by 5-10 % against a copy of a few hundred µs."""
    clock, calls, syncs = [0.0], [], []
    monkeypatch.setattr(bandwidth.time, "perf_counter", lambda: clock[0])

    def launch():
        calls.append(1)
        clock[0] += 2.0

    def sync():
        syncs.append(1)
        clock[0] += 5.0  # the wait: once a round

    assert bandwidth._best(launch, 3, sync, per_round=10) == pytest.approx(2.5)
    assert len(calls) == 30 and len(syncs) == 3

@pytest.mark.parametrize("direction", ac.DIRECTIONS)
def test_cupy_expression_peer_plumbing_on_numpy_arrays(direction):
    """The CuPy peer runs the NumPy reference's expressions on device arrays; run the same
    calls on host arrays here to check the arguments and the float32 accuracy."""
    for op in ac.ops():
        if not ac.supports("numpy", op, direction):
            continue
        shape = ac.shape_for(op, 1 << 12)
        host = ac._host_arrays(op, direction, shape, "float32")
        case = Case(op=op, direction=direction, backend="cupy", n=1 << 12, bytes=1,
                    call=ac._cupy_expression(op, direction, host),
                    expected=ac.reference(op, direction, host))
        harness.verify(case, case.call())


def test_finding_the_cases_compiles_no_kernel_of_ours(monkeypatch):
    """Which cases a peer supports is found by a trial call while the sweep is collected;
    its y came from the Numba forward, compiled then, so the forward's benchmark measured no
    compile."""
    be = get_backend("numba")
    compiled = []
    compile_ = be.compile
    monkeypatch.setattr(be, "compile", lambda *a, **k: compiled.append(a) or compile_(*a, **k))
    monkeypatch.setattr(be, "_kernels", {})
    monkeypatch.setattr(ac.activation("tanh"), "_plans", {})
    ac.supports.cache_clear()
    ac._forward_output.cache_clear()
    combos = ac.params(["tanh"], ["numpy", "numpy-plain", "torch"])
    assert ("tanh", "backward_y", "numpy-plain", 1 << 10) in combos
    assert compiled == []
