"""Every tunable in one place. Tests shrink the CUDA launch sizes so the simulator is fast."""

#: LLVM fast-math flags for compiled kernels: no ``nnan``/``ninf``, so NaN and inf propagate.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Arrays with at most this many elements run the serial CPU loop (no thread start-up cost).
PARALLEL_THRESHOLD = 1 << 15

#: CUDA launch shape for grid-stride loops.
THREADS_PER_BLOCK = 256
MAX_BLOCKS = 65536
