"""Every activation's CUDA kernel against the float64 NumPy reference (small arrays)."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import config
from tests.cuda.conftest import ROW_THREADS
from tests.helpers import assert_backward_contract, assert_forward_contract, tail_inputs
from tests.test_activations import (
    ELEMENTWISE,
    FROM_OUTPUT,
    FROM_OUTPUT_IDS,
    IDS,
    KINK_CASES,
    KINK_POINTS,
    check_exponential_tails,
    check_masked_rows,
    check_wide_spread_rows,
    exponential_tail_inputs,
    from_output_cases,
    reference,
    torch_at_kinks,
)

dev, host = fastgd.to_device, fastgd.to_host


def on_cuda(fn, *arrays, **params):
    """``fn`` on the CUDA backend, its arrays (and array parameters such as ``y=``) moved to
    the device, its result back: the ``run`` the shared checks of tests/test_activations.py
    take."""
    params = {k: dev(v) if isinstance(v, np.ndarray) else v for k, v in params.items()}
    return host(fn(*map(dev, arrays), **params))


def test_cuda_backend_is_available():
    assert fastgd.backends()["cuda"].startswith("ok")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "params"), ELEMENTWISE, ids=IDS)
def test_accuracy_contract_on_cuda(name, params, dtype):
    x = tail_inputs(dtype, n=400, seed=11)
    dy = np.random.default_rng(12).normal(0, 1, x.size).astype(dtype)
    act = fastgd.activations[name]
    y = act.forward(dev(x), **params)  # auto: device arrays go to the CUDA kernel
    dx = act.backward(dev(dy), dev(x), **params)
    assert fastgd._arrays.is_device_array(y) and fastgd._arrays.is_device_array(dx)
    assert_forward_contract(host(y), reference(name, x, params), dtype, f"{name} cuda")
    assert_backward_contract(host(dx), reference(name, x, params, dy), dy, dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "params"), FROM_OUTPUT, ids=FROM_OUTPUT_IDS)
def test_backward_from_output_on_cuda(name, params, dtype):
    x, dy = (a[::10] for a in from_output_cases(dtype))
    act = fastgd.activations[name]
    y = act.forward(x, backend="numpy", **params)
    dx = act.backward(dev(dy), y=dev(y), **params)
    want = act.backward(dy.astype(np.float64), y=y.astype(np.float64), backend="numpy",
                        **params)
    assert_backward_contract(host(dx), want, dy, dtype, f"{name} from y on cuda")


@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu_on_cuda(per_channel):
    rng = np.random.default_rng(13)
    x = rng.normal(0, 2, (5, 3, 4))
    dy = rng.normal(0, 1, x.shape)
    w = rng.uniform(0.1, 0.4, 3 if per_channel else 1)
    y = fastgd.prelu(dev(x), dev(w))
    dx, dw = fastgd.prelu_backward(dev(dy), dev(x), dev(w))
    want_dx, want_dw = fastgd.prelu_backward(dy, x, w, backend="numpy")
    np.testing.assert_allclose(host(y), fastgd.prelu(x, w, backend="numpy"), rtol=1e-15)
    np.testing.assert_allclose(host(dx), want_dx, rtol=1e-15)
    np.testing.assert_allclose(host(dw), want_dw, rtol=1e-12)


@pytest.mark.parametrize("into", ["x", "dy"])
def test_prelu_backward_into_its_inputs_on_cuda(into):
    """dweight is the sum over the inputs as given when dx is written over x or dy (the CPU
    summed it after dx had overwritten them)."""
    rng = np.random.default_rng(14)
    x = rng.normal(0, 2, (6, 3)).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    w = rng.uniform(0.1, 0.4, 3).astype(np.float32)
    want_dx, want_dw = fastgd.prelu_backward(dy, x, w, backend="numpy")
    dx_, dy_ = dev(x), dev(dy)
    dx, dw = fastgd.prelu_backward(dy_, dx_, dev(w), out=dx_ if into == "x" else dy_)
    np.testing.assert_allclose(host(dx), want_dx, rtol=1e-6)
    np.testing.assert_allclose(host(dw), want_dw, rtol=1e-5)


def test_leaky_relu_with_a_slope_subnormal_in_float32_on_cuda():
    """Computed in float64, as on the CPU backends (float32: 57 ULP off)."""
    x = -np.logspace(-3, 38, 40).astype(np.float32)
    params = {"negative_slope": 1e-40}
    got = fastgd.leaky_relu(dev(x), **params)
    assert_forward_contract(host(got), reference("leaky_relu", x, params), np.float32,
                            "leaky_relu cuda")


def test_prelu_weight_as_a_number_on_cuda():
    x = np.array([[-1.0, 2.0], [-3.0, 0.5]], np.float32)
    np.testing.assert_array_equal(host(fastgd.prelu(dev(x), 0.25)), [[-0.25, 2.0], [-0.75, 0.5]])
    dx, dw = fastgd.prelu_backward(dev(np.ones_like(x)), dev(x), 0.25)
    assert host(dw).shape == () and host(dw).dtype == np.float32 and host(dw) == -4.0


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_on_cuda(name, axis):
    rng = np.random.default_rng(14)
    x = rng.normal(0, 4, (3, 5, 4)).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), axis=axis, backend="numpy")
    assert_forward_contract(host(act.forward(dev(x), axis=axis)), want, np.float32, name)
    dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), axis=axis,
                         backend="numpy")
    dx = act.backward(dev(dy), dev(x), axis=axis)
    assert_backward_contract(host(dx), dwant, dy, np.float32, name)
    y = want.astype(np.float32)  # from the forward output: float32 on the device (softmax)
    ywant = act.backward(dy.astype(np.float64), y=y.astype(np.float64), axis=axis,
                         backend="numpy")
    dx = act.backward(dev(dy), y=dev(y), axis=axis)
    assert_backward_contract(host(dx), ywant, dy, np.float32, f"{name} from y")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [ROW_THREADS, ROW_THREADS + 5, 70, 150])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_with_a_block_per_row(name, length, dtype):
    """Rows of ROW_THREADS or more run a block each: thread t takes every ROW_THREADS-th
    element and the partial max and sums meet in shared memory. Rows past SUM_BLOCK
    (log_softmax's backward from x sums blocks of it), a dominant max, the max twice, NaN,
    -inf and +inf; forward in place, both backwards."""
    rng = np.random.default_rng(16)
    x = rng.normal(0, 4, (7, length))
    x[1, length // 2] = 45.0
    x[2, :2] = 7.0
    x[3, length - 1] = np.nan
    x[4, ::2] = -np.inf
    x[5, 3] = np.inf
    x = x.astype(dtype)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), backend="numpy")
    d = dev(x)
    assert act.forward(d, out=d) is d
    assert_forward_contract(host(d), want, dtype, f"{name} rows of {length}")
    dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), backend="numpy")
    assert_backward_contract(host(act.backward(dev(dy), dev(x))), dwant, dy, dtype, name)
    y = want.astype(dtype)
    ywant = act.backward(dy.astype(np.float64), y=y.astype(np.float64), backend="numpy")
    dx = act.backward(dev(dy), y=dev(y))
    assert_backward_contract(host(dx), ywant, dy, dtype, f"{name} from y, rows of {length}")


@pytest.mark.parametrize("threads", [12, 0, 512])
def test_a_row_block_that_is_no_power_of_two_is_refused(threads, monkeypatch):
    """The rows' tree sums and maxima halve the block: 12 threads would leave some partial
    sums out of every row's; 512 and more would need more registers than a block has (the
    simulator has no such limit)."""
    from fastgd import config

    monkeypatch.setattr(config, "ROW_THREADS", threads)
    x = dev(np.zeros((2, 600), np.float32))
    with pytest.raises(ValueError, match="ROW_THREADS must be a power of two"):
        fastgd.softmax(x)


def test_to_device_gives_c_order_with_cupy_as_without(monkeypatch):
    """CuPy kept a Fortran-ordered array's order (``cupy.asarray``), so that the optimizers
    refused ``to_device(w.T)`` as a parameter only where CuPy was installed."""
    from types import SimpleNamespace

    from fastgd.backends import cuda_backend

    given = []
    fake = SimpleNamespace(asarray=lambda a: given.append(a) or a)
    monkeypatch.setattr(cuda_backend, "_cupy", lambda: fake)
    w = np.arange(6.0).reshape(2, 3).T
    assert fastgd.to_device(w) is given[0] and given[0].flags.c_contiguous
    np.testing.assert_array_equal(given[0], w)
    assert fastgd.to_device(np.float32(2.5)).shape == ()

def _plain_row_sum(x):
    s = 0.0
    for i in range(x.size):
        s += x[i]
    return s


def test_which_rows_run_a_block_each(monkeypatch):
    """Rows of ROW_THREADS elements or more, and lines a[o, :, i] where there are fewer
    than LINES_PER_THREAD of them; a row function has to loop with lanes."""
    be = fastgd.get_backend("cuda")
    fn = fastgd.activations["softmax"].scalar_forward
    rows = dev(np.zeros((3, ROW_THREADS)))
    assert be.rows_loop(fn, rows, strided=False) == "cuda_rows"
    assert be.rows_loop(fn, dev(np.zeros((3, ROW_THREADS - 1))), strided=False) == "cuda"
    lines = dev(np.zeros((2, ROW_THREADS, 4)))
    assert be.rows_loop(fn, lines, strided=True) == "cuda_rows"
    monkeypatch.setattr(config, "LINES_PER_THREAD", 8)
    assert be.rows_loop(fn, lines, strided=True) == "cuda"  # 8 lines: coalesced threads
    assert be.rows_loop(fn, rows, strided=False) == "cuda_rows"
    assert be.rows_loop(_plain_row_sum, rows, strided=False) == "cuda"


@pytest.mark.parametrize("lines_per_thread", [1, 1 << 14])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_along_axis_0_with_a_thread_or_a_block_per_line(
        name, lines_per_thread, monkeypatch):
    monkeypatch.setattr(config, "LINES_PER_THREAD", lines_per_thread)
    rng = np.random.default_rng(18)
    x = rng.normal(0, 4, (3 * ROW_THREADS, 3, 5)).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), axis=0, backend="numpy")
    assert_forward_contract(host(act.forward(dev(x), axis=0)), want, np.float32, name)
    dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), axis=0, backend="numpy")
    dx = act.backward(dev(dy), dev(x), axis=0)
    assert_backward_contract(host(dx), dwant, dy, np.float32, name)


@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu_with_a_block_per_row(per_channel):
    rng = np.random.default_rng(17)
    x = rng.normal(0, 2, (2, 3, 5 * ROW_THREADS + 3))
    dy = rng.normal(0, 1, x.shape)
    w = rng.uniform(0.1, 0.4, 3 if per_channel else 1)
    dx, dw = fastgd.prelu_backward(dev(dy), dev(x), dev(w))
    want_dx, want_dw = fastgd.prelu_backward(dy, x, w, backend="numpy")
    np.testing.assert_allclose(host(fastgd.prelu(dev(x), dev(w))),
                               fastgd.prelu(x, w, backend="numpy"), rtol=1e-15)
    np.testing.assert_allclose(host(dx), want_dx, rtol=1e-15)
    np.testing.assert_allclose(host(dw), want_dw, rtol=1e-12)


@pytest.mark.parametrize(("name", "params"), KINK_CASES)
def test_values_and_derivatives_at_the_kinks_follow_torch_on_cuda(name, params):
    want, dwant = torch_at_kinks(name, params, KINK_POINTS)
    act = fastgd.activations[name]
    np.testing.assert_allclose(host(act.forward(dev(KINK_POINTS), **params)), want, rtol=1e-7)
    dx = act.backward(dev(np.ones_like(KINK_POINTS)), dev(KINK_POINTS), **params)
    np.testing.assert_allclose(host(dx), dwant, rtol=1e-7)


def test_out_and_in_place_on_device():
    x = np.linspace(-4, 4, 70)
    d = dev(x)
    out = fastgd.tanh(d, out=d)
    assert out is d
    np.testing.assert_allclose(host(d), np.tanh(x), rtol=1e-15)


def test_out_overlapping_an_input_on_device():
    x = np.linspace(-4, 4, 71)
    d = dev(x)
    fastgd.tanh(d[:-1], out=d[1:])  # out one element ahead of x: computed from x as it was
    np.testing.assert_allclose(host(d)[1:], np.tanh(x[:-1]), rtol=1e-15)
    assert host(d)[0] == x[0]


def test_empty_and_zero_dim_on_device():
    assert host(fastgd.relu(dev(np.zeros((0, 3))))).shape == (0, 3)
    scalar = dev(np.zeros(()))  # np.ascontiguousarray alone made it (1,), on any GPU too
    assert scalar.shape == ()
    y = fastgd.sigmoid(scalar)
    assert y.shape == () and host(y).reshape(()) == 0.5


def test_arrays_on_the_wrong_device_raise_type_error():
    x = np.ones(8)
    with pytest.raises(TypeError, match="fastgd.to_device"):
        fastgd.sigmoid(x, backend="cuda")
    with pytest.raises(TypeError, match="fastgd.to_host"):
        fastgd.sigmoid(dev(x), backend="numba")
    with pytest.raises(TypeError, match="fastgd.to_device"):
        fastgd.relu_backward(dev(x), x)  # mixed: auto picks cuda, the host array is refused


def test_out_on_the_wrong_device_raises_value_error():
    out = np.full(8, 3.0)
    with pytest.raises(ValueError, match="host array"):
        fastgd.sigmoid(dev(np.ones(8)), out=out)
    assert (out == 3).all()


def test_transfers_round_trip():
    x = np.random.default_rng(15).normal(0, 1, (4, 5)).astype(np.float32)
    back = host(dev(x))
    assert back.dtype == np.float32 and back.shape == (4, 5)
    np.testing.assert_array_equal(back, x)


def test_prelu_backward_on_empty_inputs():
    """No channels: empty dx and dweight; no samples: a dweight of zeros (as on the CPU)."""
    f32 = np.float32
    dx, dw = fastgd.prelu_backward(dev(np.ones((3, 0, 2), f32)), dev(np.ones((3, 0, 2), f32)),
                                   dev(np.ones(0, f32)))
    assert dx.shape == (3, 0, 2) and dw.shape == (0,)
    dx, dw = fastgd.prelu_backward(dev(np.ones((0, 4, 2), f32)), dev(np.ones((0, 4, 2), f32)),
                                   dev(np.ones(4, f32)))
    assert dx.shape == (0, 4, 2) and (host(dw) == 0).all()


def test_a_byte_swapped_host_array_goes_to_the_device_in_native_order():
    """to_device took a '>f4' array as it was, and every op then refused it (the CPU
    backends read such arrays through a native copy)."""
    x = np.array([-1.0, 0.5, 2.0], ">f4")
    d = dev(x)
    assert np.dtype(d.dtype) == np.float32
    np.testing.assert_allclose(host(fastgd.sigmoid(d)), fastgd.sigmoid(x, backend="numpy"),
                               rtol=1e-6)


def test_float32_kernels_bind_cpu_maths_float32_functions():
    """float32 kernels call cpu_math's float32 functions (1.3 ULP, their tails), not the
    float64 fallback (under the simulator NumPy's, on a GPU libdevice's): the simulator's
    NumPy float32 math is accurate enough that no value test would see the swap. On a GPU
    the binding is a device-only stub (tools/cuda_ptx_check.py counts the float64
    instructions of the float32 kernels it compiles)."""
    from fastgd.backends import cpu_math, cuda_math
    from fastgd.backends.cuda_backend import CudaBackend, simulator_enabled

    be = CudaBackend()
    exp32 = be.bindings(np.dtype(np.float32))["exp"]
    exp64 = be.bindings(np.dtype(np.float64))["exp"]
    assert exp32 is not exp64
    if not simulator_enabled():
        assert exp32 is cuda_math.device_functions()["exp"]
        return
    x = np.float32(10.3)
    assert exp32(x) == np.float32(cpu_math.portable_kernels(np.float32)["exp"](x))


def test_selu_scales_up_to_the_float_maximum_on_cuda():
    """scale·v rounded once, as on the CPU (tests/test_float32_tails.py): the float32
    maximum at 0x7f73a598, where v·float32(scale) overflowed, inf just past it."""
    v = np.array([0x7F73A597, 0x7F73A598, 0x7F73A599], np.int32).view(np.float32)
    top = np.finfo(np.float32).max
    want = np.array([np.nextafter(top, 0), top, np.inf], np.float32)
    ones = dev(np.ones_like(v))
    np.testing.assert_array_equal(host(fastgd.selu(dev(v))), want)
    np.testing.assert_array_equal(host(fastgd.selu_backward(dev(v), ones)), want)
    np.testing.assert_array_equal(host(fastgd.selu_backward(dev(v), y=ones)), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exponential_tails_take_their_limits_on_cuda(dtype):
    """The sigmoid family's limits past the normal numbers (tests/test_activations.py's
    check_exponential_tails), from the same op math on the CUDA backend."""
    check_exponential_tails(exponential_tail_inputs(dtype, 40), on_cuda)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_rows_of_wide_spread_on_cuda(name, dtype):
    """tests/test_activations.py's check_wide_spread_rows on the CUDA backend (rows of 40)."""
    check_wide_spread_rows(name, dtype, 40, on_cuda)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_on_masked_rows_on_cuda(dtype):
    """tests/test_activations.py's check_masked_rows on the CUDA backend."""
    check_masked_rows(dtype, on_cuda)
