"""CUDA tests: under the simulator (NUMBA_ENABLE_CUDASIM=1, this process only) or on a GPU
(FASTGD_CUDA_TESTS=1). Launch sizes shrink so small arrays still span several blocks, and
rows of 8 elements or more run a block of 8 threads each (backends/cuda_rows)."""

import pytest

from fastgd import config


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(config, "MAX_BLOCKS", 4)
    monkeypatch.setattr(config, "ROW_THREADS", ROW_THREADS)


ROW_THREADS = 8


def pytest_collection_modifyitems(items):
    """The simulator computes with NumPy scalars in its own threads, where np.errstate does
    not reach: overflow to inf is expected there and is checked by value."""
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore::RuntimeWarning"))
