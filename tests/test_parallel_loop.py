"""The parallel CPU maps that run the serial kernel on chunks: compute-bound math
(codegen._chunked; where the CPU gains from it, arrays from main memory in short chunks, their
inputs prefetched) and cheap math writing arrays of its own from main memory
(codegen._streamed; through a per-thread buffer with streaming stores). Elementwise results
cannot depend on how the work is cut, so every path must give the serial loop's bits exactly,
and write nothing outside its output."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import config
from fastgd.backends import codegen, cpu_target
from fastgd.backends.numba_backend import NumbaBackend


@pytest.mark.parametrize("prefetch", [True, False])
def test_each_kind_of_math_gets_its_parallel_loop(prefetch):
    be = NumbaBackend(prefetch=prefetch)
    chunked = "prefetched" if prefetch else "chunked"
    acts = fastgd.activations
    for name in ("sigmoid", "tanh", "silu", "elu", "softplus", "mish"):
        for fn in (acts[name].scalar_forward, acts[name].scalar_backward):
            assert be.parallel_map(fn, writes_own=True) == chunked
            assert be.parallel_map(fn, writes_own=False) == chunked
    gelu = acts["gelu"].forms  # transcendental through its scalar helpers
    assert be.parallel_map(gelu["tanh"].scalar_forward, True) == chunked
    assert be.parallel_map(gelu["none"].scalar_backward, True) == chunked
    cheap = [acts[name].scalar_forward for name in ("relu", "leaky_relu", "hardsigmoid",
                                                     "hardswish")]
    cheap += [acts["relu"].scalar_backward, acts["sigmoid"].math["backward_from_output"][0]]
    for fn in cheap:  # y·(1 - y) above: no transcendental function
        assert be.parallel_map(fn, writes_own=True, from_memory=True) == "streamed"
        assert be.parallel_map(fn, writes_own=True) == "parallel"  # in the caches
        for from_memory in (False, True):  # in place: nothing to gain
            assert be.parallel_map(fn, writes_own=False, from_memory=from_memory) == "parallel"


@pytest.mark.parametrize("loop", ["prefetched", "chunked"])
def test_the_chunked_map_calls_the_serial_kernel_on_views(loop):
    source = codegen.map_source(3, 2, 2, loop, packed=True, aliases=(0,))
    lines = source.splitlines()
    assert lines[0] == "def kernel(span, in0, in1, in2, out1, sv):"  # span: an address
    assert lines[-1].strip() == (  # pieces that hold no reference (cpu_memory.part)
        "call_at(span, (part(in0, lo, hi - lo), part(in1, lo, hi - lo), "
        "part(in2, lo, hi - lo), part(out1, lo, hi - lo), sv,))")
    prefetched = [line.split("(")[1].split(",")[0] for line in lines if "prefetch(" in line]
    low, high = config.CACHED_CHUNK  # 16 chunks or more below the streaming threshold
    assert f"max({low}, min({high}, in0.size // 16))" in source
    if loop == "chunked":  # every size in those chunks
        assert not prefetched and "stream" not in source
        return
    assert prefetched == ["in0", "in1", "in2"]  # the inputs, never an output of its own
    assert f">= {config.STREAM_BYTES}" in source
    assert f"{config.STREAM_CHUNK_BYTES} // in0.itemsize if stream" in source


@pytest.mark.parametrize("cpu, vendor, expected", [
    ("sapphirerapids", "AuthenticAMD", True),  # LLVM's name decides where it has one
    ("znver3", "GenuineIntel", False),
    ("znver5", None, False),
    ("generic", "AuthenticAMD", False),  # a CPU LLVM does not name: the vendor Linux reports
    ("generic", "GenuineIntel", True),
    ("generic", None, True),  # no /proc/cpuinfo (not Linux): not known as AMD
])
def test_software_prefetch_follows_the_cpu_unless_the_environment_says(cpu, vendor, expected,
                                                                       monkeypatch, tmp_path):
    from llvmlite import binding

    monkeypatch.setattr(binding, "get_host_cpu_name", lambda: cpu)
    cpuinfo = tmp_path / "cpuinfo"
    if vendor is not None:
        cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n")
    monkeypatch.setattr(cpu_target, "CPUINFO", str(cpuinfo))
    monkeypatch.delenv("FASTGD_PREFETCH", raising=False)
    assert cpu_target.software_prefetch() == (expected, "this CPU")
    be = NumbaBackend()
    assert be.prefetch is expected
    assert be.prefetch_note() == f"{'on' if expected else 'off'} (this CPU)"
    monkeypatch.setenv("FASTGD_PREFETCH", "1" if not expected else "0")
    assert be.prefetch is expected  # decided once: the kernels compiled so far follow it
    for value, on in (("0", False), ("1", True), ("off", False)):
        monkeypatch.setenv("FASTGD_PREFETCH", value)
        assert cpu_target.software_prefetch() == (on, "FASTGD_PREFETCH")
        assert NumbaBackend().prefetch_note() == f"{'on' if on else 'off'} (FASTGD_PREFETCH)"
    assert NumbaBackend(prefetch=True).prefetch_note() == "on (set by the caller)"
    monkeypatch.setenv("FASTGD_PREFETCH", "maybe")
    with pytest.raises(config.SettingError, match="FASTGD_PREFETCH='maybe'"):
        NumbaBackend().prefetch_note()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_only_arrays_from_main_memory_compile_the_streamed_loop(dtype, monkeypatch):
    be = NumbaBackend()  # kernels of its own: no other test's
    fn = fastgd.activations["hardsigmoid"].math["backward"][0]
    edge = config.STREAM_BYTES // np.dtype(dtype).itemsize

    def loops():
        return {key[3] for key in be._kernels if key[1] is fn}
    results = []
    for n in (edge - 2, edge + 2):
        x = np.linspace(-4, 4, n).astype(dtype)
        results.append((x, np.empty_like(x)))
        be.map(fn, [x, x], [results[-1][1]])
        if n < edge:
            assert loops() == {"parallel"}
    assert loops() == {"parallel", "serial", "streamed"}  # the serial kernel, on chunks
    for x, dx in results:
        np.testing.assert_array_equal(dx, _serial("hardsigmoid", "backward", dtype, x, x))
    # the public API asks for each loop by the arrays' size, on its common path (C-ordered
    # arrays) and the general one (a transposed view: run in memory order)
    act = fastgd.activations["hardsigmoid"]
    monkeypatch.setattr(act, "_plans", {})  # no other test's
    for x, dx in results:
        for a in (x, x.reshape(2, -1).T):
            act._plans.clear()
            da = fastgd.hardsigmoid_backward(a, a)
            np.testing.assert_array_equal(da if a is x else da.T.reshape(-1), dx)
            loop = "parallel_from_memory" if x.size > edge else "parallel"
            assert list(act._plans) == [("numba", "backward", dtype, (), loop, None, False,
                                         config.FASTMATH)]


def test_the_public_api_runs_the_loop_the_backend_chose():
    be = fastgd.get_backend("numba")
    fastgd.softplus(np.ones(100_000, np.float32))  # no test asks softplus for a loop by name
    fn = fastgd.activations["softplus"].math["forward"][0]
    loops = {key[3] for key in be._kernels if key[1] is fn}
    assert ("prefetched" if be.prefetch else "chunked") in loops
    assert ("chunked" if be.prefetch else "prefetched") not in loops


def _past_threshold(dtype):
    """Elements of ``dtype`` just past the streaming threshold, not a whole number of chunks
    or tasks of either streamed loop (the last chunk is short; a prefetch runs past the end)."""
    itemsize = np.dtype(dtype).itemsize
    return (config.STREAM_BYTES + 5 * config.STORE_CHUNK_BYTES // 2) // itemsize + 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("loop", ["prefetched", "chunked"])  # this CPU's, and the other
def test_chunked_activations_equal_the_serial_loop_bit_for_bit(dtype, in_place, loop):
    be = fastgd.get_backend("numba")
    math = fastgd.activations["silu"].math
    n = _past_threshold(dtype)
    x = np.random.default_rng(1).normal(0, 4, n).astype(dtype)
    dy = np.random.default_rng(2).normal(0, 1, n).astype(dtype)
    expected = _serial("silu", "forward", dtype, x)
    expected_dx = _serial("silu", "backward", dtype, dy, x)
    backward = be.map_kernel(math["backward"][0], 2, 1, 0, np.dtype(dtype), loop)
    dx = np.empty_like(x)
    backward(dy, x, dx)
    forward = be.map_kernel(math["forward"][0], 1, 1, 0, np.dtype(dtype), loop,
                            aliases=(0,) if in_place else ())
    y = x if in_place else np.empty_like(x)
    forward(*((x,) if in_place else (x, y)))
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(dx, expected_dx)


def test_ops_of_one_shape_share_one_compiled_parallel_loop():
    """The loop calls the op's serial kernel by address (cpu_span): sigmoid, tanh and mish
    forward compile their serial kernels and one loop between them."""
    be = NumbaBackend()
    acts = fastgd.activations
    kernels = [be.map_kernel(acts[op].math["forward"][0], 1, 1, 0, np.dtype(np.float32),
                             "chunked") for op in ("sigmoid", "tanh", "mish")]
    x = np.random.default_rng(3).normal(0, 3, 50_000).astype(np.float32)
    for kernel, op in zip(kernels, ("sigmoid", "tanh", "mish")):
        y = np.empty_like(x)
        kernel(x, y)
        np.testing.assert_array_equal(y, _serial(op, "forward", np.float32, x))
    assert len({id(k.driver) for k in kernels}) == 1 and len(be._span_loops) == 1
    assert len({id(k.span) for k in kernels}) == 3
    assert len(kernels[0].driver.signatures) == 1


@pytest.mark.parametrize("loop", ["prefetched", "chunked"])
@pytest.mark.parametrize("first", [np.float32, np.float64])
def test_one_chunked_kernel_runs_the_span_compiled_for_each_calls_dtypes(loop, first):
    """A kernel that computes in float64 serves float32 and float64 data (elu's backward
    with an alpha float32 does not hold), its scalars float64 for both: each call passes the
    address of the span compiled for its own dtypes (one kept from the first call, or a
    span compiled with the data's dtype for the scalars, gave wrong numbers)."""
    be = NumbaBackend()
    fn = fastgd.activations["elu"].math["backward"][0]
    f64 = np.dtype(np.float64)
    chunked = be.map_kernel(fn, 2, 1, 1, f64, loop)
    serial = be.map_kernel(fn, 2, 1, 1, f64, "serial")
    alpha = be.typed_scalars((0.3,), f64)
    rng = np.random.default_rng(4)
    for dtype in (first, np.float64 if first is np.float32 else np.float32):
        dy, x = (rng.normal(0, 3, 50_000).astype(dtype) for _ in range(2))
        got, want = np.empty_like(x), np.empty_like(x)
        chunked(dy, x, got, *alpha)
        serial(dy, x, want, *alpha)
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, dy)  # alpha reached it: x < 0 scales dy
    misaligned = np.empty(50_000 * 8 + 1, np.uint8)[1:].view(np.float64)
    misaligned[:] = x.astype(np.float64)
    got, want = np.empty_like(misaligned), np.empty_like(misaligned)
    chunked(np.ones_like(misaligned), misaligned, got, *alpha)  # unaligned: the same code
    serial(np.ones_like(misaligned), misaligned.copy(), want, *alpha)
    np.testing.assert_array_equal(got, want)


def test_call_at_passes_contiguous_views_only():
    import numba

    from fastgd.backends.cpu_span import call_at

    @numba.njit
    def strided(a):
        call_at(0, (a[::2],))  # never run: refused when typed

    with pytest.raises(numba.core.errors.TypingError, match="C-contiguous"):
        strided(np.zeros(8))


def test_the_streamed_map_buffers_its_own_outputs_and_writes_through_aliases():
    source = codegen.map_source(3, 2, 2, "streamed", packed=True, aliases=(None, 1))
    lines = [line.strip() for line in source.splitlines()]
    assert lines[0] == "def kernel(span, in0, in1, in2, out0, sv):"
    assert "prange(in0.size)" not in source  # small arrays run another kernel (loop_for)
    assert "shift = line_shift(out0)" in lines  # chunks start on the output's lines
    assert "bout0 = np.empty(chunk, out0.dtype)" in lines  # a buffer per task
    assert ("call_at(span, (part(in0, lo, hi - lo), part(in1, lo, hi - lo), "
            "part(in2, lo, hi - lo), part(bout0, 0, hi - lo), sv,))") in lines
    assert "stream_out(bout0, out0, lo, hi)" in lines  # in1, written in place, is not
    assert [line for line in lines if line.startswith("stream_out")] == [
        "stream_out(bout0, out0, lo, hi)"]
    assert lines[-1] == "fence()"


def test_parts_are_views_into_their_arrays():
    """cpu_memory.part(a, lo, count) is a[lo:lo + count]: reads and writes go to a's memory
    (a view without a meminfo, so the threads of a parallel loop that slice one array a chunk
    each do not count references to it atomically)."""
    from numba import njit

    from fastgd.backends.cpu_memory import part

    @njit
    def double_part(a, lo, count):
        v = part(a, lo, count)
        for i in range(v.size):
            v[i] *= 2
        return v.size, v[0]

    a = np.arange(10.0)
    assert double_part(a, 3, 4) == (4, 6.0)
    np.testing.assert_array_equal(a, [0, 1, 2, 6, 8, 10, 12, 7, 8, 9])


def _serial(name, direction, dtype, *arrays):
    """``name``'s kernel as the serial loop computes it over the whole arrays."""
    be = fastgd.get_backend("numba")
    act = fastgd.activations[name]
    fn = act.math[direction][0]
    kernel = be.map_kernel(fn, len(arrays), 1, 0, np.dtype(dtype), "serial")
    out = np.empty_like(arrays[0])
    kernel(*arrays, out)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 5])  # the output's first element off its line
def test_streamed_cheap_math_equals_the_serial_loop_bit_for_bit(dtype, offset):
    n = _past_threshold(dtype)
    x = np.random.default_rng(2).normal(0, 4, n + 7).astype(dtype)[3:3 + n]
    x[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    dy = np.random.default_rng(3).normal(0, 1, n).astype(dtype)
    for name, direction, args, call in (
        ("hardswish", "forward", (x,), lambda out: fastgd.hardswish(x, out=out)),
        ("relu", "backward", (dy, x), lambda out: fastgd.relu_backward(dy, x, out=out)),
    ):
        block = np.full(n + 16, 7.0, dtype)  # sentinels around the output
        out = block[offset:offset + n]
        call(out)
        np.testing.assert_array_equal(out, _serial(name, direction, dtype, *args))
        assert (block[:offset] == 7).all() and (block[offset + n:] == 7).all()


def test_streamed_map_writes_an_output_that_is_not_aligned_to_its_items():
    n = _past_threshold(np.float32) // 4 * 4
    raw = np.zeros(4 * n + 1, np.uint8)
    out = np.frombuffer(raw.data, np.float32, count=n, offset=1)  # every store unaligned
    x = np.random.default_rng(4).normal(0, 4, n).astype(np.float32)
    fastgd.relu(x, out=out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert raw[0] == 0


def test_a_map_given_one_array_as_input_and_output_writes_it_in_place():
    be = fastgd.get_backend("numba")
    g = np.random.default_rng(5).normal(0, 1, _past_threshold(np.float32)).astype(np.float32)
    expected = g * np.float32(0.5)
    from fastgd.optim import rules

    be.map(rules.scale, [g], [g], scalars=(0.5,))  # clip's scaling of a gradient
    np.testing.assert_array_equal(g, expected)


def test_rows_of_cheap_math_that_write_an_output_are_streamed_and_others_not():
    be = fastgd.get_backend("numba")
    f32 = np.dtype(np.float32)
    softmax, log_softmax = fastgd.activations["softmax"], fastgd.activations["log_softmax"]
    for fn, writes_last, loop in (
        (softmax.scalar_backward, True, "streamed"),  # (dy - Σ dy·y)·y
        (softmax.scalar_backward, False, "parallel"),  # another caller's rows: never
        (softmax.scalar_forward, True, "parallel"),  # exp: bound by its arithmetic
        (log_softmax.scalar_backward, True, "parallel"),  # exp(y)
    ):
        kernel = be.rows_kernel(fn, 3, 0, 0, False, False, f32, "parallel_from_memory",
                                writes_last=writes_last)
        assert be._kernels[be.kernel_key(("rows", 3, 0, 0, False, False), fn, f32,
                                         loop)] is kernel
        # in the caches: the plain loop
        plain = be.rows_kernel(fn, 3, 0, 0, False, False, f32, "parallel", writes_last=True)
        assert be._kernels[be.kernel_key(("rows", 3, 0, 0, False, False), fn, f32,
                                         "parallel")] is plain
    source = codegen.rows_source(2, 0, 0, False, "streamed", False)
    assert "fn(a0[r], b[r - r0])" in source  # the row function writes the task's buffer
    assert "stream_out(b_flat, flat, r0 * length, r1 * length)" in source


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_streamed_softmax_backward_equals_the_plain_rows_loop_bit_for_bit(dtype, in_place):
    rows = (config.STREAM_BYTES // np.dtype(dtype).itemsize) // 100 + 7  # short last chunk
    rng = np.random.default_rng(6)
    y = fastgd.softmax(rng.normal(0, 3, (rows, 100)).astype(dtype))
    dy = rng.normal(0, 1, (rows, 100)).astype(dtype)
    be = fastgd.get_backend("numba")
    softmax = fastgd.activations["softmax"]
    compute = softmax._compute(np.dtype(dtype), "backward_from_output", be)
    plain = be.rows_kernel(softmax.scalar_backward, 3, 0, 0, False, False, compute, "parallel")
    expected = np.empty_like(dy)
    plain(dy, y, expected)
    dx = fastgd.softmax_backward(dy, y=y, out=dy if in_place else None)
    np.testing.assert_array_equal(dx, expected)
    streamed = be._kernels[be.kernel_key(("rows", 3, 0, 0, False, False),
                                         softmax.scalar_backward, compute, "streamed")]
    assert streamed in softmax._plans.values()  # what the public call ran


def test_config_read_at_run_time_is_honoured_or_harmless(monkeypatch):
    """An audit: a FASTMATH changed after a first call kept the kernels compiled with the
    old flags (a new process honoured it: the disk cache keys by them); column blocks of
    COLUMN_MIN_BYTES // itemsize = 0 columns wrote nothing (softmax along axis 0 gave 0)."""
    x = (np.random.default_rng(0).standard_normal((100, 1000)) * 30).astype(np.float32)
    flags = config.FASTMATH
    fast = fastgd.mish(x)
    monkeypatch.setattr(config, "FASTMATH", frozenset())
    assert not np.array_equal(fastgd.mish(x), fast)  # the new flags' kernel ran
    monkeypatch.setattr(config, "FASTMATH", flags)
    np.testing.assert_array_equal(fastgd.mish(x), fast)
    monkeypatch.setattr(config, "COLUMN_BLOCK", 1)
    monkeypatch.setattr(config, "COLUMN_MIN_BYTES", 4)
    a = np.random.default_rng(1).standard_normal((3, 5))
    np.testing.assert_allclose(fastgd.softmax(a, axis=0),
                               fastgd.softmax(a, axis=0, backend="numpy"), rtol=1e-12)
