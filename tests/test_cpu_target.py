"""The 512-bit vector preference fastgd gives Numba's CPU target on AVX-512 CPUs."""

import re
import subprocess
import sys

import numba
import numpy as np
import pytest
from llvmlite import binding
from numba.core import config

import fastgd
from fastgd.backends import cpu_target

HOST_AVX512 = "+avx512f" in binding.get_host_cpu_features().flatten().split(",")
#: what fastgd did at its import in this process (no AVX-512, or an opt-out: nothing)
LIFTED = cpu_target.PREFERENCE == "512-bit"


class FakeFeatures:
    def __init__(self, text):
        self.text = text

    def flatten(self):
        return self.text


@pytest.fixture
def clean_config(monkeypatch):
    monkeypatch.delenv("FASTGD_VECTOR_512", raising=False)
    monkeypatch.setattr(config, "CPU_NAME", None)
    monkeypatch.setattr(config, "CPU_FEATURES", None)


def test_lifted_on_an_avx512_cpu(clean_config, monkeypatch):
    monkeypatch.setattr(binding, "get_host_cpu_features",
                        lambda: FakeFeatures("+avx2,+avx512f,+fma"))
    assert cpu_target.prefer_512_bit() == "512-bit"
    assert config.CPU_FEATURES == "+avx2,+avx512f,+fma,-prefer-256-bit"


@pytest.mark.parametrize("case", ["no avx512", "opted out", "user features", "user cpu"])
def test_left_alone(clean_config, monkeypatch, case):
    host = "+avx2,-avx512f,+fma" if case == "no avx512" else "+avx2,+avx512f,+fma"
    monkeypatch.setattr(binding, "get_host_cpu_features", lambda: FakeFeatures(host))
    if case == "opted out":
        monkeypatch.setenv("FASTGD_VECTOR_512", "0")
    if case == "user features":
        monkeypatch.setattr(config, "CPU_FEATURES", "+avx2")
    if case == "user cpu":
        monkeypatch.setattr(config, "CPU_NAME", "skylake-avx512")
    before = config.CPU_FEATURES
    said = cpu_target.prefer_512_bit()
    assert config.CPU_FEATURES == before
    assert said != "512-bit"


def test_kernels_use_the_full_vector_width():
    """A float32 loop compiled in this process uses zmm registers exactly where fastgd lifted
    the preference: on an AVX-512 CPU unless opted out (the test process imported fastgd
    before any Numba compile)."""

    @numba.njit(fastmath=True)
    def scale(x, out):
        for i in range(x.size):
            out[i] = x[i] * np.float32(3.0) + np.float32(1.0)

    x = np.arange(4096, dtype=np.float32)
    out = np.empty_like(x)
    scale(x, out)
    np.testing.assert_array_equal(out, x * 3 + 1)
    asm = scale.inspect_asm(scale.signatures[0])
    assert ("zmm" in asm) == LIFTED
    assert cpu_target.describe().startswith("512-bit") == LIFTED
    if not HOST_AVX512:
        assert cpu_target.describe().startswith("256-bit")


def test_a_bad_setting_is_an_error_line_not_a_traceback_at_import():
    """An audit: FASTGD_VECTOR_512=maybe raised while fastgd was imported, so `fastgd info`
    printed a traceback (FASTGD_PREFETCH=maybe gave an error line)."""
    import os

    env = {**os.environ, "FASTGD_VECTOR_512": "maybe"}
    run = subprocess.run([sys.executable, "-m", "fastgd.cli", "info", "--no-probe"], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "fastgd info: error: FASTGD_VECTOR_512='maybe'" in run.stderr
    code = ("import numpy as np, fastgd\n"
            "try:\n    fastgd.relu(np.ones(3, np.float32))\n"
            "except fastgd.config.SettingError as e:\n    print('refused:', e)\n")
    said = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout
    assert "refused: FASTGD_VECTOR_512='maybe'" in said


def test_too_late_is_reported():
    """Numba code compiled before fastgd's import keeps LLVM's width, and info says why."""
    code = ("import numba\n"
            "numba.njit(lambda x: x)(1)\n"
            "from fastgd.backends import cpu_target\n"
            "print(cpu_target.describe())\n")
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout
    assert ("import fastgd first" in said) == LIFTED


def _vector_divisions(kernel) -> int:
    """The float32 vector divisions of the widest vectors in a compiled kernel's x86 machine
    code: the main loop's (on AVX-512 LLVM adds a 4-lane epilogue loop, one more division)."""
    asm = kernel.inspect_asm(kernel.signatures[0])
    widths = re.findall(r"\bv?divps\s+%([xyz])mm", asm)
    return widths.count(max(widths, key="xyz".index)) if widths else 0


def test_interleaved_kernels_compute_two_vectors_an_iteration_and_leave_llvm_as_it_was():
    """A loop of transcendental math compiled through ``cpu_target.interleaved`` holds twice
    the vector math of the plain one (LLVM's cost model interleaves none: a long loop), with
    the same values; a loop compiled after it is plain again (the LLVM option is set only
    while the kernel compiles)."""
    from fastgd.backends.cpu_math import exp
    from fastgd.config import FASTMATH

    def jit():  # a new function each time: a dispatcher of its own
        def sigmoid_of_minus_abs(x, out):
            for i in range(x.size):
                e = exp(-abs(x[i]))
                out[i] = e / (np.float32(1) + e)

        return numba.njit(fastmath=set(FASTMATH), error_model="numpy")(sigmoid_of_minus_abs)

    x = np.linspace(-30, 30, 1001, dtype=np.float32)
    outs = [np.empty_like(x) for _ in range(3)]
    before, inter, after = jit(), cpu_target.interleaved(jit(), 2), jit()
    for kernel, out in zip((before, inter, after), outs, strict=True):
        kernel(x, out)
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])
    plain = _vector_divisions(before)
    assert plain >= 1
    assert _vector_divisions(inter) >= 2 * plain
    assert _vector_divisions(after) == plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interleaving_leaves_every_value_as_it_was(dtype, monkeypatch):
    """Interleaving changes where the elements are computed, never how: maps give the same
    bits as LLVM's own loop, serial and parallel, with a remainder past the last vector."""
    from fastgd import config

    rng = np.random.default_rng(7)
    data = [((rng.standard_normal(n) * 10).astype(dtype), rng.standard_normal(n).astype(dtype))
            for n in (1000 + 37, (1 << 13) + 5)]
    results = {}
    for count in (1, 2):
        monkeypatch.setattr(config, "INTERLEAVE", count)
        got = []
        for x, dy in data:
            got += [fastgd.softplus(x, backend="numba"),
                    fastgd.sigmoid_backward(dy, x, backend="numba"),
                    fastgd.mish_backward(dy, x, backend="numba")]
        results[count] = got
    for a, b in zip(results[1], results[2], strict=True):
        np.testing.assert_array_equal(a, b)
