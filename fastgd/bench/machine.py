"""Machine facts for reports and ``fastgd info``: CPU, GPU, threads, versions, bandwidth."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numba_facts() -> dict:
    try:
        import numba
    except ImportError:
        return {"numba": None}
    try:
        layer = numba.threading_layer()
    except ValueError:  # known only once a parallel kernel has run
        layer = "not yet initialized"
    from fastgd.backends import cpu_target, get_backend

    return {"numba": numba.__version__, "numba_threads": numba.get_num_threads(),
            "threading_layer": layer, "openmp_wait": openmp_wait(),
            "cpu_vectors": cpu_target.describe(),
            "cpu_prefetch": get_backend("numba").prefetch_note(),
            "cpu_interleave": cpu_target.interleave_note()}


def openmp_wait() -> str:
    """How long libgomp's idle workers spin before they sleep, and who chose it
    (``config.OPENMP_SPINCOUNT``): it decides how fastgd's kernels and BLAS share the cores."""
    from fastgd import config

    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):  # libgomp: the first wins
        if name in os.environ:
            value = os.environ[name]
            who = ("fastgd's default" if name == "GOMP_SPINCOUNT"
                   and value == str(config.OPENMP_SPINCOUNT) else "set in the environment")
            return f"{name}={value} ({who})"
    return "libgomp's default (set before fastgd was imported)"


def gpu_name() -> str | None:
    from fastgd.bench.bandwidth import gpu_available

    if not gpu_available():
        return None
    from numba import cuda

    from fastgd.backends.cuda_backend import device_name

    return device_name(cuda.get_current_device())


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), where the system gives one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def facts(bandwidth: dict | None = None, load: float | None = None) -> dict:
    """Everything a report needs about this machine; ``bandwidth`` from the probe, ``load``
    the load average when the sweep started (other programs sharing the cores)."""
    import numpy

    import fastgd
    from fastgd.bench import peers

    out = {
        "fastgd": fastgd.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        **numba_facts(),
        "gpu": gpu_name(),
        "backends": fastgd.backends(),
        "peers": peers.versions(),
    }
    if bandwidth is not None:
        out["bandwidth"] = bandwidth
    if load is not None:
        out["load_at_start"] = load
    return out
