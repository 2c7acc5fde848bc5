"""Tests run on NumPy and Numba CPU here; tests/cuda runs in its own process with
NUMBA_ENABLE_CUDASIM=1 (or on a real GPU with FASTGD_CUDA_TESTS=1)."""

import os

import pytest

from fastgd import config

# The suite's shapes reach the parallel CPU loops with a few thousand elements: it runs with
# the thresholds they were chosen for. The library's own (config.py) are 8x and 4x larger,
# set for calls between NumPy's matrix products; the dispatch tests take both (thresholds).
LIBRARY_THRESHOLDS = config.PARALLEL_THRESHOLD, config.CHEAP_PARALLEL_THRESHOLD
SUITE_THRESHOLDS = 1 << 12, 1 << 15
config.PARALLEL_THRESHOLD, config.CHEAP_PARALLEL_THRESHOLD = SUITE_THRESHOLDS


@pytest.fixture(params=["suite", "library"])
def thresholds(request, monkeypatch):
    """config's (PARALLEL_THRESHOLD, CHEAP_PARALLEL_THRESHOLD): the suite's, the library's."""
    values = SUITE_THRESHOLDS if request.param == "suite" else LIBRARY_THRESHOLDS
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", values[0])
    monkeypatch.setattr(config, "CHEAP_PARALLEL_THRESHOLD", values[1])
    return values


CUDA_MODE = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or os.environ.get(
    "FASTGD_CUDA_TESTS") == "1"

collect_ignore_glob = [] if CUDA_MODE else ["cuda/*"]
