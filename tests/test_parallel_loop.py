"""The chunked parallel CPU map (codegen._chunked) of compute-bound math: the serial kernel on
chunks, arrays from main memory in short chunks with their inputs prefetched. Elementwise
results cannot depend on how the work is cut, so every path must give the serial loop's bits
exactly."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import config
from fastgd.backends import codegen


def test_transcendental_math_runs_chunked_and_cheap_math_does_not():
    be = fastgd.get_backend("numba")
    acts = fastgd.activations
    for name in ("sigmoid", "tanh", "silu", "elu", "softplus", "mish"):
        assert be.chunks(acts[name].scalar_forward) and be.chunks(acts[name].scalar_backward)
    assert be.chunks(acts["gelu"].forms["tanh"].scalar_forward)  # through its scalar helpers
    assert be.chunks(acts["gelu"].forms["none"].scalar_backward)
    for name in ("relu", "leaky_relu", "hardsigmoid", "hardswish"):
        assert not be.chunks(acts[name].scalar_forward)
    assert not be.chunks(acts["relu"].scalar_backward)
    assert not be.chunks(acts["sigmoid"].math["backward_from_output"][0])  # y·(1 - y)


def test_the_chunked_map_calls_the_serial_kernel_on_views():
    source = codegen.map_source(3, 2, 2, "chunked", packed=True, aliases=(0,))
    lines = source.splitlines()
    assert lines[0] == "def kernel(in0, in1, in2, out1, sv):"
    assert lines[-1].strip() == "span(in0[lo:hi], in1[lo:hi], in2[lo:hi], out1[lo:hi], sv)"
    prefetched = [line.split("(")[1].split(",")[0] for line in lines if "prefetch(" in line]
    assert prefetched == ["in0", "in1", "in2"]  # the inputs, never an output of its own
    assert f">= {config.STREAM_BYTES}" in source
    assert f"{config.STREAM_CHUNK_BYTES} // in0.itemsize if stream" in source
    low, high = config.CACHED_CHUNK  # 16 chunks or more below the streaming threshold
    assert f"max({low}, min({high}, in0.size // 16))" in source


def _streamed_size(dtype):
    """Elements of ``dtype`` just past the streaming threshold, not a whole number of chunks
    (the last one is short and its prefetch runs past the end)."""
    itemsize = np.dtype(dtype).itemsize
    return (config.STREAM_BYTES + 3 * config.STREAM_CHUNK_BYTES // 2) // itemsize + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_streamed_activations_equal_the_serial_loop_bit_for_bit(dtype, in_place):
    n = _streamed_size(dtype)
    x = np.random.default_rng(1).normal(0, 4, n).astype(dtype)
    head, tail = x[:1000].copy(), x[-1000:].copy()  # each small enough for the serial loop
    expected = np.concatenate([fastgd.silu(head), fastgd.silu(tail)])
    dy = np.ones(2000, dtype)
    expected_dx = np.concatenate([fastgd.silu_backward(dy[:1000], head),
                                  fastgd.silu_backward(dy[1000:], tail)])
    dx = fastgd.silu_backward(np.ones(n, dtype), x)
    y = fastgd.silu(x, out=x) if in_place else fastgd.silu(x)
    np.testing.assert_array_equal(np.concatenate([y[:1000], y[-1000:]]), expected)
    np.testing.assert_array_equal(np.concatenate([dx[:1000], dx[-1000:]]), expected_dx)
