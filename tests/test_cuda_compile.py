"""Every CUDA kernel the API generates compiles for a real GPU (PTX for sm_90), no GPU needed,
and the float32 elementwise activations have no float64 arithmetic in it.

The simulator suite (tests/cuda) runs the kernels as Python and cannot see what only the
device compiler rejects: this once let every kernel that uses ``fma`` fail on a GPU
(``cuda.fma`` is not callable as a bare global). tools/cuda_ptx_check.py swaps the backend
registry, so it runs in its own process; NVVM and NVRTC come with the ptx extra
(numba-cuda[cu13]), or the cuda and cuda13 extras on a GPU machine."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_cuda_kernel_compiles_to_ptx(dtype):
    """One dtype's kernels a test (a minute of NVVM each: pytest -n runs them side by side)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "cuda_ptx_check.py"), dtype],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, ("NVVM and NVRTC come with the ptx extra (pip install -e "
                                 "'.[ptx]')\n" + run.stdout[-3000:] + run.stderr[-3000:])
    count = int(re.search(r"(\d+) CUDA kernels compiled to PTX", run.stdout).group(1))
    assert count >= 110  # activations x directions, every optimizer option, nn, losses
    if dtype == "float32":  # float32 elementwise activations compute in float32 (cuda_math)
        assert re.search(r"[1-9]\d* float32 elementwise activation kernels, 0 with float64",
                         run.stdout)
