"""The 512-bit vector preference fastgd gives Numba's CPU target on AVX-512 CPUs."""

import subprocess
import sys

import numba
import numpy as np
import pytest
from llvmlite import binding
from numba.core import config

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
