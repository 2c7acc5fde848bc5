"""The kernels' tunables: loop thresholds, chunk sizes, launch sizes. Tests shrink the CUDA
launch sizes so the simulator is fast. Settings that live where they act: the environment's
``FASTGD_VECTOR_512`` and ``FASTGD_PREFETCH`` (backends/cpu_target.py, read before Numba's
first compile and before the first kernel that prefetches), ``FASTGD_KERNEL_CACHE`` and
``FASTGD_CACHE_DIR`` (backends/kernel_cache.py) and ``FASTGD_BACKEND``
(backends/__init__.py); the benchmark harness's ``SLOW_S``, the gradient norm's row length
``optim/clip.CHUNK`` and the trainer's BLAS threshold."""

import os

#: LLVM fast-math flags for compiled kernels: no ``nnan``/``ninf``, so NaN and inf propagate.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
#: The flags for op math marked ``scalar.in_order`` (the optimizer rules: torch.optim's order
#: of operations): none, IEEE arithmetic. With ``reassoc`` LLVM turned Adam's ``(0.001·g)·g``
#: into ``0.001·(g·g)``, which overflows to inf for float32 |g| > 1.8e19 where PyTorch's stays
#: finite; with ``contract`` it fused a·b + c where the vector loop allowed it, so a tensor's
#: last bits depended on where it sat in memory (Lion, a ParamBuffer against a dict) and SGD and
#: RMSprop differed from the NumPy reference in a third of the elements after 5 steps (now
#: none). The rules are memory-bound: no measurable cost (tools/perf_optim.py).
FASTMATH_IN_ORDER = frozenset()

#: Vectors each iteration of a CPU loop of transcendental math computes side by side (LLVM's
#: loop vectorizer interleaves only short loops, so it computed one): such a loop is bound by
#: the latency of its ~20 dependent operations an element more than by the CPU's ports, and
#: two independent chains keep more of them busy. Measured on the Zen 3 VM, one thread in
#: cache (2^15 elements, best of 4 runs), against 1: float32 forwards +6 to +15 % (gelu-tanh
#: +15, silu +12, mish +10, sigmoid +9, exact gelu +6; softplus +41 and softmax +16 in an
#: earlier run), backwards -1 to +19 %; float64 0 to +36 %. 1 leaves the choice to LLVM
#: (``cpu_target.interleaved``).
INTERLEAVE = 2

#: Arrays with at most this many elements run the serial CPU loop; math without
#: transcendental functions (relu, backwards from y, the optimizers' rules) up to
#: CHEAP_PARALLEL_THRESHOLD. Two threads halve a kernel only while the pool's worker is
#: awake (calls back to back); a call after anything else, a NumPy matrix product or a
#: moment's idle, first wakes it, which cost 60-130 us on the 2-core SPR VM
#: (``tools/perf_threads.py``). So parallel loops start where the serial one takes ~15-30 us
#: (2^15: gelu 28, sigmoid 12; 2^17: relu 15-19), where they lose at most 1.5-1.8x to an
#: awake pool and win 3-5x against a sleeping one (2^14 gelu: serial 15-24 us, parallel 11
#: awake, 77-130 asleep; 2^16 relu: 8.8, 7.2, 84-100; the digits MLP's Adam step, tensors
#: of 8192 and 16384: 40-59 serial, 105-140 parallel). The earlier 2^12 / 2^15, crossovers
#: measured back to back, made a NumPy user's training step of MLP [64, 128, 128, 10] (batch
#: 64, gelu, Adam) take 25-27 ms, its kernels waiting for a worker that OpenBLAS's spinning
#: threads kept off the cores; now 0.2 ms.
PARALLEL_THRESHOLD = 1 << 15
CHEAP_PARALLEL_THRESHOLD = 1 << 17
#: libgomp's spins before an idle worker of Numba's pool sleeps (GOMP_SPINCOUNT), set by
#: ``import fastgd`` unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set (libgomp reads it when
#: the pool starts: before the process's first parallel kernel). libgomp's own 300,000
#: (3.6 ms at 12 ns a ``pause`` on the SPR VM) kept the worker spinning through NumPy's
#: matrix products, whose OpenBLAS threads spin after each product too: the two pools took
#: the cores from each other for scheduler time slices, and a NumPy user's training step of
#: MLP [64, 512, 512, 10], batch 256, took 31-39 ms instead of 5.7-6.0. Fewer spins than
#: ~10,000 (120 us) let a worker sleep between kernels called back to back and be woken onto
#: the calling thread's CPU, where each later parallel call waited out the caller's spin at
#: the barrier (gelu of 2^17 back to back: 190-270 us against 60). docs/performance.md.
OPENMP_SPINCOUNT = 10_000
#: Lines along an axis other than the last run in blocks of columns side by side
#: (backends/columns.py) of about COLUMN_BLOCK elements, so that a block's arrays stay in
#: cache between the row function's passes over it, and COLUMN_MIN_BYTES wide at least: a
#: block of 16 float32 columns took a cache line per row, a page every few rows (BatchNorm1d's
#: backward of 4096x256: 1.67 ms against 0.76 for 64 columns; softmax along axis 0 of
#: 256x4096, blocks of 2^12, 2^14, 2^16 elements: 1.07, 0.55, 0.48 ms; 2-core SPR VM).
#: Lines closer together, or too few for two blocks a thread, run as rows instead (swapped
#: in and out): BatchNorm1d of 65536x32 float32, two blocks of 16 columns, took 5.8 ms, as
#: rows 5.3.
COLUMN_BLOCK = 1 << 16
COLUMN_MIN_BYTES = 256
#: Lines of a row function whose loops can share their rows among threads run that way, all
#: columns at once, from this many rows on (backends/numba_backend.splits_rows); shorter ones
#: in blocks (prelu's weight gradient of (64, 1024) float32: 37 us in blocks, 46 split).
SPLIT_ROWS_MIN = 256
#: The bias gradient's column sums (fastgd.nn) run serially up to this many elements: their
#: parallel kernel also allocates and reduces one partial row per thread. 2-core SPR VM,
#: float32, serial vs parallel: 1.0 vs 5.4 us at 64x128, 4.8 vs 13.9 at 512x128, 64-88 vs
#: 75-79 at 4096x128, 138-152 vs 96-124 at 1024x1024.
COLUMN_SUMS_PARALLEL_THRESHOLD = 1 << 19

#: A parallel CPU ``map`` of transcendental math runs the serial loop on chunks
#: (backends/codegen.py). Below STREAM_BYTES per array: n/16 elements, within CACHED_CHUNK
#: (one chunk would leave the other threads idle: gelu at 2^13 lost a third; 1024-element
#: chunks cost sigmoid 2-4% at 2^18-2^20). On CPUs that gain from software prefetch (all but
#: AMD's: backends/cpu_target.software_prefetch), from STREAM_BYTES on (main memory: 2^23
#: float32 and up): STREAM_CHUNK_BYTES of each array, each chunk first prefetching the inputs
#: PREFETCH_AHEAD_BYTES on (backends/cpu_memory.py, measured there).
CACHED_CHUNK = (1 << 10, 1 << 14)
STREAM_BYTES = 1 << 25
STREAM_CHUNK_BYTES = 1024
PREFETCH_AHEAD_BYTES = 4096
#: A parallel CPU ``map`` of cheap math that writes arrays of its own, from STREAM_BYTES on:
#: STORE_CHUNK_BYTES at a time into a per-thread buffer (in L1), streamed out with
#: non-temporal stores (backends/cpu_memory.py, measured there).
STORE_CHUNK_BYTES = 16384
#: Chunks (or a strided view's pieces) one parallel task runs in turn, with the buffers it
#: allocates once and the fence it ends with (codegen._streaming, codegen.map_rows_source).
TASK_CHUNKS = 16
#: A map over the rows of a strided view (codegen.map_rows_source) runs rows shorter than
#: this in bands of CACHED_CHUNK[1] elements copied through a buffer, longer ones one by one
#: (as views where their elements are contiguous): relu over 2^22 float32 of x[:, :64], one
#: by one 0.79 ms, in bands 1.9; of x[:, :2] one by one 25 ms, in bands 7.4 (copied to C
#: order first: 15).
SHORT_ROW = 16

#: CUDA launch shape for grid-stride loops.
THREADS_PER_BLOCK = 256
MAX_BLOCKS = 65536
#: Threads of the block that runs each row of a row function on CUDA (backends/cuda_rows.py;
#: a power of two), and the row length from which it does (shorter rows: one thread each).
#: 64 = formulas.SUM_BLOCK, so log_softmax's backward's blocked sums keep every thread busy.
ROW_THREADS = 64
#: Lines a[o, :, i] of 3-D arrays (an op along an axis other than the last, nn's columns) run
#: a thread each from this many on (coalesced, and enough threads), a block each below.
LINES_PER_THREAD = 1 << 14


_YES, _NO = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


class SettingError(ValueError):
    """An environment variable of fastgd's with a value it cannot take (the message says
    which, and what it takes); ``fastgd`` commands print it as an error line."""


def env_flag(name: str, default: bool = True) -> bool:
    """A yes/no environment variable: 1/0, true/false, yes/no, on/off in any case (unset or
    empty: ``default``); :class:`SettingError` naming it for anything else, which was
    silently taken as yes."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _YES | _NO:
        raise SettingError(f"{name}={os.environ[name]!r}: write 1 or 0 (true/false, yes/no, "
                           "on/off)")
    return value in _YES
