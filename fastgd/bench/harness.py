"""The one harness every benchmark suite uses: check, time, record.

A :class:`Case` is one implementation of one op at one size: a no-argument ``call`` that runs
it once and returns its result, the NumPy reference it must match, how many bytes the op must
move, and (on a GPU) how to synchronize. :func:`run` then

1. times the first call (on a fresh kernel cache that is the JIT compile, recorded as
   ``compile_s`` when the case's kernel cache grew),
2. checks that first result against the reference: a wrong result raises
   :class:`WrongResult` and the case is never timed,
3. times ``call`` (+ ``sync``) with pytest-benchmark's ``benchmark`` fixture, warm (calls
   slower than ``SLOW_S`` in ``SLOW_ROUNDS`` rounds, without the calibration call); a
   call that wrote into its inputs fails as a wrong result does,
4. writes op, direction, backend, dtype, n, bytes, GB/s, elements/s and the fraction of
   the measured bandwidth roof into ``benchmark.extra_info``.

Throughput is computed from the best (minimum) round, like the bandwidth probe it is held
against: GB/s = bytes that must move / best time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Calls slower than this (seconds) are timed in ``SLOW_ROUNDS`` rounds without
#: pytest-benchmark's calibration call: it keeps the 2^24 sweep of slow NumPy ops short.
SLOW_S = 0.1
SLOW_ROUNDS = 2


class WrongResult(AssertionError):
    """An implementation's result does not match the NumPy reference: it is not timed."""


@dataclass
class Case:
    """One implementation of one op at one size, ready to check and time.

    ``expected`` is the reference result for ``sample(result)``: by default the whole result,
    converted to a NumPy array by ``to_host``. ``kernels`` counts compiled kernels (for the
    compile-time measurement); ``sync`` waits for the device (GPU cases);
    ``checked_calls``: calls made before the check (an optimizer's second step reads the
    state its first one wrote, so a kernel that drops the state fails); ``origin``: the
    values the calls start from (an optimizer's parameters), when the check is of the
    change from them (see :func:`verify`); ``peer``: another
    library's implementation, checked for a wrong formula or a missed element but not held
    to fastgd's float32 accuracy in the tails (see :func:`tolerance`); ``inputs``: host
    arrays the call reads and must leave as they were (the cases of one size share them: a
    call that wrote into them would pass its own check and change every later case's).
    """

    op: str
    direction: str
    backend: str
    n: int
    bytes: int
    call: Callable[[], object]
    expected: Callable[[], np.ndarray] | np.ndarray | None
    dtype: str = "float32"
    device: str = "cpu"
    sync: Callable[[], None] | None = None
    to_host: Callable[[object], np.ndarray] = np.asarray
    sample: Callable[[np.ndarray], np.ndarray] | None = None
    kernels: Callable[[], int] | None = None
    version: str = ""
    rtol: float | None = None
    checked_calls: int = 1
    origin: np.ndarray | None = None
    peer: bool = False
    inputs: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.op} {self.direction} on {self.backend} ({self.dtype}, n={self.n})"

    def timed(self):
        """One call, synchronized: what the benchmark times."""
        out = self.call()
        if self.sync is not None:
            self.sync()
        return out


def tolerance(dtype: str, rtol: float | None = None, peer: bool = False
              ) -> tuple[float, float]:
    """(rtol, atol as a fraction of the reference's largest magnitude) for ``dtype``.

    Loose enough for every correct implementation, tight enough that a wrong formula or a
    missed element fails. fastgd's own are held to 1e-7 of the largest value in float32 (a
    GELU zeroed below x = -4.6, 9.7e-6 there, fails); peers to 1e-6: PyTorch's float32
    sigmoid backward from y is 6e-4 off in relative terms near 2.4e-4, and its tanh-form
    GELU backward returns 0 where the value is 5e-7."""
    if rtol is None:
        rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    return rtol, rtol * (1e-2 if peer else 1e-3)


def verify(case: Case, result) -> None:
    """Raise :class:`WrongResult` unless ``result`` matches the case's reference."""
    if case.expected is None:
        return
    expected = case.expected() if callable(case.expected) else case.expected
    got = np.asarray(case.to_host(result))
    if got.dtype != np.dtype(case.dtype) or got.size != case.n:
        raise WrongResult(f"{case.label}: result is {got.size} {got.dtype} values, the case "
                          f"{case.n} {case.dtype}")
    if case.sample is not None:
        got = case.sample(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise WrongResult(
            f"{case.label}: result has shape {got.shape}, the NumPy reference {expected.shape}"
        )
    if expected.dtype == got.dtype and np.array_equal(got, expected):
        return  # exact (a copy, the NumPy backend against itself): one pass, not ten in float64
    rtol, atol_frac = tolerance(case.dtype, case.rtol, case.peer)
    exp64, got64 = expected.astype(np.float64), got.astype(np.float64)
    slack = 0.0
    if case.origin is not None:
        # the changes from the start, not the results: two SGD steps of lr 1e-3 move a
        # parameter by 2e-5, inside a tolerance relative to it, so a missed element passed;
        # each result was rounded to the dtype, a few of its ULPs each way
        origin = np.asarray(case.origin).reshape(exp64.shape)
        slack = 4.0 * np.spacing(np.maximum(np.abs(origin), np.abs(expected))).astype(
            np.float64)
        exp64, got64 = exp64 - origin, got64 - origin
    finite = np.isfinite(exp64)
    scale = float(np.max(np.abs(exp64[finite]))) if finite.any() else 1.0
    with np.errstate(invalid="ignore"):
        err = np.abs(got64 - exp64)
        bad = ~(err <= rtol * np.abs(exp64) + atol_frac * scale + slack)
    bad &= ~((got64 == exp64) | (np.isnan(got64) & np.isnan(exp64)))
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        g, e = got64.reshape(-1)[i], exp64.reshape(-1)[i]
        raise WrongResult(
            f"{case.label}: {int(bad.sum())} of {bad.size} values differ from the NumPy "
            f"reference beyond rtol={rtol:g}; first at flat index {i}: got {g:.9g}, "
            f"expected {e:.9g}"
        )


def fingerprint(arrays) -> tuple[int, ...]:
    """The sums (mod 2^64) of each array's bit patterns, in words of its item size (bytes
    for others): any one element changed changes its sum (one pass, no copy)."""
    def bits(a):
        a = np.ascontiguousarray(a).reshape(-1)
        return a.view(f"u{a.itemsize}" if a.itemsize in (1, 2, 4, 8) else np.uint8)
    return tuple(int(bits(a).sum(dtype=np.uint64)) for a in arrays)


def first_call(case: Case) -> tuple[float, object, bool]:
    """Run the case once: (seconds, result, whether a kernel was compiled on the way)."""
    before = case.kernels() if case.kernels else None
    start = time.perf_counter()
    result = case.timed()
    seconds = time.perf_counter() - start
    compiled = before is not None and case.kernels() > before
    return seconds, result, compiled


def metrics(case: Case, seconds: float, roof_gbps: float | None) -> dict:
    """Throughput figures of one timing: GB/s, elements/s and the fraction of the roof."""
    gbps = case.bytes / seconds / 1e9
    return {
        "gbps": gbps,
        "elements_per_s": case.n / seconds,
        "roof_fraction": gbps / roof_gbps if roof_gbps else None,
    }


def record(info: dict, case: Case, seconds: float | None, roof_gbps: float | None,
           compile_s: float | None = None, first_call_s: float | None = None) -> dict:
    """Fill pytest-benchmark's ``extra_info`` (``info``) for ``case`` timed at ``seconds``."""
    info.update(
        op=case.op, direction=case.direction, backend=case.backend, device=case.device,
        dtype=case.dtype, n=case.n, bytes=case.bytes, version=case.version,
    )
    if seconds:
        info.update(metrics(case, seconds, roof_gbps))
    if compile_s is not None:
        info["compile_s"] = compile_s
    if first_call_s is not None:
        info["first_call_s"] = first_call_s
    info.update(case.extra)
    return info


def best_time(benchmark) -> float | None:
    """The best round of a finished ``benchmark`` fixture (None when benchmarks are off)."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    return getattr(stats, "min", None) if stats is not None else None


def run(benchmark, case: Case, roof_gbps: float | None = None):
    """Check ``case`` against its reference, then time it with ``benchmark`` and record it.

    Raises :class:`WrongResult` (before any timing) when the result is wrong."""
    before = fingerprint(case.inputs)
    seconds, result, compiled = first_call(case)
    for _ in range(case.checked_calls - 1):
        result = case.timed()
    verify(case, result)
    if fingerprint(case.inputs) != before:
        raise WrongResult(f"{case.label}: the call wrote into its inputs")
    benchmark.group = f"{case.op}-{case.direction}-n{case.n}"
    # a warm call decides the rounds: after a compile, and where compiles are not counted
    # (kernels None: the CUDA optimizer cases) and the first call was slow
    warm = compiled or (case.kernels is None and seconds > SLOW_S)
    estimate = first_call(case)[0] if warm else seconds
    if estimate > SLOW_S:
        benchmark.pedantic(case.timed, rounds=SLOW_ROUNDS, iterations=1)
    else:
        benchmark(case.timed)
    record(benchmark.extra_info, case, best_time(benchmark), roof_gbps,
           compile_s=seconds if compiled else None, first_call_s=seconds)
    return benchmark.extra_info
