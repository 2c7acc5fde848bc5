"""Where training time goes: a switchable timer the layers, losses and trainer report to.

Off by default (one attribute test per op). When on, each section synchronizes the GPU
(if the backend is ``cuda``) before reading the clock, so times belong to the right op. Each
thread has its own (``threading.local``): a profiled ``nn.train`` counts its own thread's
work only (another thread's evaluation switched the one profiler off and on under it:
sections of 193,000 s).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

#: Section names in the order the report prints them.
SECTIONS = ("matmul", "fused kernels", "loss", "optimizer step", "data", "grad norms")


class Profiler(threading.local):
    def __init__(self):
        self.on = False
        self.sync = None
        self.totals = defaultdict(float)
        self.calls = defaultdict(int)

    def start(self, backend_name=None):
        self.on = True
        self.totals.clear()
        self.calls.clear()
        self.sync = _cuda_sync if backend_name == "cuda" else None

    def stop(self):
        self.on = False

    def clock(self) -> float:
        """The time now, after the GPU has finished (when profiling a cuda model)."""
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def add(self, section: str, t0: float) -> None:
        self.totals[section] += self.clock() - t0
        self.calls[section] += 1

    def mark(self) -> float:
        """Where a section starts: the time when profiling (0 when off: one attribute test,
        ~0.1 µs a mark/done pair)."""
        return self.clock() if self.on else 0.0

    def done(self, section: str, t0: float) -> None:
        """Count the time since ``t0`` (a :meth:`mark`) to ``section`` when profiling."""
        if self.on:
            self.add(section, t0)

    def table(self, total: float) -> str:
        """A text table of each section's time and share of ``total`` seconds."""
        rows = [f"{'section':<16}{'seconds':>10}{'share':>8}{'calls':>8}"]
        named = 0.0
        for name in SECTIONS:
            if name in self.totals:
                t = self.totals[name]
                named += t
                rows.append(f"{name:<16}{t:>10.4f}{t / total:>8.1%}{self.calls[name]:>8}")
        rest = max(total - named, 0.0)
        rows.append(f"{'other':<16}{rest:>10.4f}{rest / total:>8.1%}{'':>8}")
        rows.append(f"{'total':<16}{total:>10.4f}{1:>8.1%}")
        return "\n".join(rows)


def _cuda_sync():
    try:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    except ImportError:
        from numba import cuda

        cuda.synchronize()


PROFILE = Profiler()
