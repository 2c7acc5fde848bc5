"""Tests run on NumPy and Numba CPU here; tests/cuda runs in its own process with
NUMBA_ENABLE_CUDASIM=1 (or on a real GPU with FASTGD_CUDA_TESTS=1)."""

import os

CUDA_MODE = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or os.environ.get(
    "FASTGD_CUDA_TESTS") == "1"

collect_ignore_glob = [] if CUDA_MODE else ["cuda/*"]
