"""Kernel generation: turn an op's scalar (or row) function into a loop for a target.

Five loop shapes cover every op:

* **map** — ``out_k[i] = fn(in_0[i], ..., s_0, ...)[k]`` over flat arrays (activations,
  update rules: one fused pass over parameter, gradient and state).
* **rows** — ``res[r] = fn(a_0[r], ..., p_0[r % len(p_0)], ..., s_0, ...)`` over the rows of
  2-D arrays (softmax, PReLU with one slope per channel, per-row sums); or, *strided*, over
  the lines ``a[o, :, i]`` of 3-D arrays ``(outer, length, inner)``, which is how an op
  runs along any axis without a transpose.
* **columns** — a row function run on blocks of lines ``a[o, :, j]`` side by side (an axis
  other than the last): rewritten so that each element loop runs across the block's columns
  (``backends.columns``), which vectorizes where a walk along one strided line does not.
* **grid** — ``out_k[r, j] = fn([i,] in_0[r, j], ..., v_0[j], ..., s_0, ...)[k]`` over 2-D
  arrays with per-column vectors ``v`` (nn's bias and batch-norm math, PReLU of (N, C)),
  optionally given the flat index ``i = r·cols + j``: a nested loop on the CPU (no integer
  division), a grid-stride loop on CUDA.
* **map_rows** — the serial map kernel run on pieces of 2-D views of any strides (Numba
  CPU: a column slice ``x[:, :k]``, a step ``x[:, ::2]``): a row, part of a long row, or a
  band of short rows gathered into a buffer (``cpu_memory``).

The loop body is the same text for every target; only the loop header differs: ``prange``
(Numba CPU, parallel), ``range`` (serial), or a grid-stride loop (CUDA: over threads, or
over blocks of threads that share each row, ``cuda_rows``); a parallel ``map``
of compute-bound math runs the serial kernel on chunks of the arrays instead (``chunked``;
``prefetched`` where the CPU gains from prefetching arrays from main memory), and one of
cheap math that writes arrays of its own from main memory streams them out (``streamed``).
Those loops, and ``map_rows``, call the serial kernel by its address (their first argument
``span``, ``cpu_span``): their text holds no op, so one compiled loop serves every op.
Loads are cast to the compute type ``C`` so float32 data can be computed in float64 where an
op needs it.
"""

from __future__ import annotations

import os

from fastgd import config

HEADERS = {
    "parallel": "for {i} in prange({n}):",
    "serial": "for {i} in range({n}):",
    "cuda": "for {i} in range(cuda.grid(1), {n}, cuda.gridsize(1)):",
    "cuda_rows": "for {i} in range(cuda.blockIdx.x, {n}, cuda.gridDim.x):",  # block per row
    "split_rows": "for {i} in range({n}):",  # the function called splits its loops' rows
}


#: The parallel ``map`` loops that run the serial kernel (``span``) on chunks of the arrays.
SPAN_LOOPS = ("chunked", "prefetched", "streamed")


def _names(prefix, count):
    return [f"{prefix}{k}" for k in range(count)]


def map_source(n_in: int, n_out: int, n_scalars: int, loop: str, packed: bool = False,
               aliases: tuple = ()) -> str:
    """``packed``: the scalars come as one array ``sv`` (one argument for the dispatcher to
    check instead of one per scalar: the Python cost of an optimizer step). ``aliases``: for
    output k, the input it is written back into (in place), as one argument: the compiler then
    sees one array. Two arguments for one array fail the overlap check that guards a serial
    loop's vector code (Numba's parallel loops assume no aliasing), so it would run scalar.
    ``loop="chunked"`` or ``"prefetched"``: see :func:`_chunked`; ``"streamed"``:
    :func:`_streamed`."""
    ins, scalars = _names("in", n_in), _names("s", n_scalars)
    aliases = tuple(aliases) + (None,) * (n_out - len(aliases))
    outs = [f"out{k}" if a is None else ins[a] for k, a in enumerate(aliases)]
    own = [o for o, a in zip(outs, aliases) if a is None]
    arrays = ins + own
    rest = ["sv"] if packed else scalars
    if loop in ("chunked", "prefetched"):
        return _chunked(ins, arrays, rest, prefetch=loop == "prefetched")
    if loop == "streamed":
        return _streamed(arrays, own, rest)
    unpack = [f"    {v} = sv[{k}]" for k, v in enumerate(scalars)] if packed else []
    call = "fn(" + ", ".join([f"C({a}[i])" for a in ins] + scalars) + ")"
    if n_out == 1:
        stores = [f"        {outs[0]}[i] = {call}"]
    else:
        stores = [f"        r = {call}"] + [f"        {o}[i] = r[{k}]" for k, o in enumerate(outs)]
    header = HEADERS[loop].format(i="i", n="in0.size")
    args = ", ".join(arrays + rest)
    return "\n".join([f"def kernel({args}):", *unpack, f"    {header}", *stores]) + "\n"


def map_rows_source(n_in: int, n_out: int, n_scalars: int, loop: str, packed: bool = False,
                    aliases: tuple = ()) -> str:
    """A ``map`` over 2-D arrays of any strides (a column slice ``x[:, :k]``, a step
    ``x[:, ::2]``): the serial ``map`` kernel (``span``) on pieces: each row, or a part of
    ``config.CACHED_CHUNK[1]`` elements of a long one, or bands of rows shorter than
    ``config.SHORT_ROW`` of about as many elements, as C-contiguous arrays: views where a
    piece's elements are contiguous, else copied into a buffer of the task's
    (``cpu_memory.piece``/``place``/``put``); tasks of ``config.TASK_CHUNKS`` pieces.
    Arguments as :func:`map_source`'s."""
    ins, scalars = _names("in", n_in), _names("s", n_scalars)
    aliases = tuple(aliases) + (None,) * (n_out - len(aliases))
    own = [f"out{k}" for k, a in enumerate(aliases) if a is None]
    written = own + [ins[a] for a in aliases if a is not None]
    arrays = ins + own
    rest = ["sv"] if packed else scalars
    chunk, tasks = config.CACHED_CHUNK[1], config.TASK_CHUNKS
    where = "r0, r1, lo, hi"
    views = [f"            v{a} = {'place' if a in own else 'piece'}({a}, {where}, b{a})"
             for a in arrays]
    return "\n".join([
        f"def kernel({', '.join(['span'] + arrays + rest)}):",
        "    rows, cols = in0.shape",
        f"    per = max(1, (cols + {chunk - 1}) // {chunk})  # pieces of a long row",
        "    size = (cols + per - 1) // per",
        f"    band = max(1, {chunk} // cols) if cols < {config.SHORT_ROW} else 1  # rows a piece",
        "    n = (rows + band - 1) // band * per",
        "    " + HEADERS[loop].format(i="t", n=f"(n + {tasks - 1}) // {tasks}"),
        *[f"        b{a} = scratch({a}, band * size)" for a in arrays],
        f"        for u in range(t * {tasks}, min(n, (t + 1) * {tasks})):",
        "            q = u // per",
        "            r0 = q * band",
        "            r1 = min(r0 + band, rows)",
        "            lo = (u - q * per) * size",
        "            hi = min(lo + size, cols)",
        *views,
        f"            {_call_span([f'v{a}' for a in arrays] + rest)}",
        *[f"            put({a}, {where}, b{a})" for a in written],
    ]) + "\n"


def _chunked(ins, arrays, rest, prefetch: bool) -> str:
    """A parallel ``map`` as the serial kernel (``span``) on chunks of the arrays, the chunks
    spread over the threads: 16 chunks or more (every thread gets work), of
    ``config.CACHED_CHUNK`` elements at most. ``prefetch`` (``loop="prefetched"``, where the
    CPU gains from it: ``cpu_target.software_prefetch``): arrays of at least
    ``config.STREAM_BYTES`` come from main memory, and their chunks are short
    (``config.STREAM_CHUNK_BYTES`` of each array), each first prefetching the inputs
    ``config.PREFETCH_AHEAD_BYTES`` on (``cpu_memory``). The sizes are in the text, as Numba's
    cache keys on it."""
    views = [f"part({a}, lo, hi - lo)" for a in arrays] + rest
    low, high = config.CACHED_CHUNK
    cached = f"max({low}, min({high}, in0.size // 16))"
    sizes, fetch = [f"    chunk = {cached}"], []
    if prefetch:
        sizes = [f"    stream = in0.size * in0.itemsize >= {config.STREAM_BYTES}",
                 f"    chunk = {config.STREAM_CHUNK_BYTES} // in0.itemsize if stream else {cached}",
                 f"    ahead = {config.PREFETCH_AHEAD_BYTES} // in0.itemsize"]
        fetch = ["        if stream:",
                 *[f"            prefetch({a}, lo + ahead, hi + ahead)" for a in ins]]
    return "\n".join([
        f"def kernel({', '.join(['span'] + arrays + rest)}):",
        *sizes,
        "    for c in prange((in0.size + chunk - 1) // chunk):",
        "        lo = c * chunk",
        "        hi = min(lo + chunk, in0.size)",
        *fetch,
        f"        {_call_span(views)}",
    ]) + "\n"


def _streamed(arrays, own_outs, rest) -> str:
    """A parallel ``map`` of arrays from main memory that writes arrays of its own
    (``own_outs``) with streaming stores (:func:`_streaming`): chunks of
    ``config.STORE_CHUNK_BYTES`` that start on the first output's cache lines, each computed
    by the serial kernel (``span``) into the task's buffers and streamed out."""
    views = [f"part(b{o}, 0, hi - lo)" if o in own_outs else f"part({o}, lo, hi - lo)"
             for o in arrays] + rest
    lines = _streaming(setup=[
        "n = in0.size",
        f"chunk = {config.STORE_CHUNK_BYTES} // in0.itemsize",
        f"shift = line_shift({own_outs[0]})",
        "n_chunks = (n + shift + chunk - 1) // chunk",
    ], buffers=[f"b{o} = np.empty(chunk, {o}.dtype)" for o in own_outs], chunk=[
        "lo = max(c * chunk - shift, 0)",
        "hi = min(c * chunk - shift + chunk, n)",
        _call_span(views),
        *[f"stream_out(b{o}, {o}, lo, hi)" for o in own_outs],
    ])
    return "\n".join([f"def kernel({', '.join(['span'] + arrays + rest)}):", *lines]) + "\n"


def _call_span(args) -> str:
    """The call of the serial kernel on one piece: by its address, the loop's first argument
    ``span`` (``cpu_span.call_at``), so that one compiled loop serves every op of its shape."""
    return f"call_at(span, ({', '.join(args)},))"


def _streaming(setup, buffers, chunk) -> list:
    """The streamed loops' shape, for arrays from main memory (``config.STREAM_BYTES`` or
    more: the backend runs it on no others, ``loop_for``; ``cpu_memory``): tasks of
    ``config.TASK_CHUNKS`` chunks, each task with buffers of its own (in L1) that every chunk
    is computed into (``chunk``) and streamed out of, and a fence at its end. ``setup``
    defines ``n_chunks``."""
    tasks = config.TASK_CHUNKS
    return [
        *["    " + line for line in setup],
        f"    for t in prange((n_chunks + {tasks - 1}) // {tasks}):",
        *["        " + line for line in buffers],
        f"        for c in range(t * {tasks}, min(n_chunks, (t + 1) * {tasks})):",
        *["            " + line for line in chunk],
        "        fence()",
    ]


def grid_source(n_in, n_vec, n_out, n_scalars, loop, index):
    """Source of a grid kernel (see the module docstring)."""
    ins, vecs = [f"in{k}" for k in range(n_in)], [f"v{k}" for k in range(n_vec)]
    outs, scalars = [f"out{k}" for k in range(n_out)], [f"s{k}" for k in range(n_scalars)]
    args = ", ".join(ins + vecs + outs + scalars)
    loads = (["i"] if index else []) + [f"C({a}[r, j])" for a in ins]
    call = "fn(" + ", ".join(loads + [f"C({v}[j])" for v in vecs] + scalars) + ")"
    if n_out == 1:
        body = [f"out0[r, j] = {call}"]
    else:
        body = [f"res = {call}"] + [f"{o}[r, j] = res[{k}]" for k, o in enumerate(outs)]
    lines = [f"def kernel({args}):", "    cols = in0.shape[1]"]
    if loop == "cuda":
        lines += [
            "    for i in range(cuda.grid(1), in0.shape[0] * cols, cuda.gridsize(1)):",
            "        r = i // cols",
            "        j = i - r * cols",
        ]
        pad = " " * 8
    else:
        rng = "prange" if loop == "parallel" else "range"
        lines += [f"    for r in {rng}(in0.shape[0]):", "        for j in range(cols):"]
        if index:
            lines.append("            i = r * cols + j")
        pad = " " * 12
    return "\n".join(lines + [pad + b for b in body]) + "\n"


def columns_source(n_arrays: int, n_per_line: int, n_scalars: int, loop: str,
                   returns: bool = False) -> str:
    """Source of a ``columns`` kernel: ``fn`` (a row function rewritten by
    ``backends.columns``) on blocks of ``width`` columns of the planes ``a[o]`` of 3-D
    C-contiguous arrays (outer, length, inner), the blocks spread over the threads; the
    vectors ``p`` (one value per column) and scalars ``s`` passed on whole; ``returns``:
    the value of each line into ``res[o, j]``."""
    arrays = _names("a", n_arrays)
    rest = _names("p", n_per_line) + _names("s", n_scalars)
    header = HEADERS[loop].format(i="t", n="a0.shape[0] * blocks")
    planes = ", ".join([f"{a}[o]" for a in arrays] + rest + (["res[o]"] if returns else []))
    return "\n".join([
        f"def kernel({', '.join(arrays + rest + (['res'] if returns else []))}, width):",
        "    inner = a0.shape[2]",
        "    blocks = (inner + width - 1) // width",
        f"    {header}",
        "        o = t // blocks",
        "        j0 = (t - o * blocks) * width",
        f"        fn({planes}, j0, min(j0 + width, inner))",
    ]) + "\n"


def rows_source(
    n_arrays: int, n_per_row: int, n_scalars: int, returns: bool, loop: str, strided: bool
) -> str:
    arrays, per_row = _names("a", n_arrays), _names("p", n_per_row)
    scalars = _names("s", n_scalars)
    args = ", ".join(arrays + per_row + scalars + (["res"] if returns else []))
    line = "{}[r // a0.shape[2], :, r % a0.shape[2]]" if strided else "{}[r]"
    call = "fn(" + ", ".join(
        [line.format(a) for a in arrays] + [f"C({p}[r % {p}.size])" for p in per_row] + scalars
    ) + ")"
    body = f"        res[r] = {call}" if returns else f"        {call}"
    n = "a0.shape[0] * a0.shape[2]" if strided else "a0.shape[0]"
    if loop == "streamed":
        lines = _streamed_rows(arrays[-1], call)
    else:
        lines = ["    " + HEADERS[loop].format(i="r", n=n), body]
    return "\n".join([f"def kernel({args}):", *lines]) + "\n"


def _streamed_rows(out, call) -> list:
    """A parallel ``rows`` loop whose row function only writes its last array, ``out`` (2-D,
    C-contiguous), with streaming stores (:func:`_streaming`): chunks of rows of about
    ``config.STORE_CHUNK_BYTES``, each computed into the task's buffer and streamed into
    ``out``'s rows."""
    return _streaming(setup=[
        f"length = {out}.shape[1]",
        f"per = max(1, {config.STORE_CHUNK_BYTES} // (length * {out}.itemsize))",
        "n_chunks = (a0.shape[0] + per - 1) // per",
        f"flat = {out}.reshape(-1)",
    ], buffers=[
        f"b = np.empty((per, length), {out}.dtype)",
        "b_flat = b.reshape(-1)",
    ], chunk=[
        "r0 = c * per",
        "r1 = min(r0 + per, a0.shape[0])",
        "for r in range(r0, r1):",
        "    " + call.replace(f"{out}[r]", "b[r - r0]"),
        "stream_out(b_flat, flat, r0 * length, r1 * length)",
    ])


def build(source: str, namespace: dict, filename: str | None = None):
    """Execute generated ``source`` with ``namespace`` as globals; return its ``kernel``.
    ``filename``: a file holding the same source, for tracebacks and Numba's cache."""
    glb = dict(namespace)
    glb.setdefault("__name__", __name__)  # an importable module: Numba's cache reloads it
    exec(compile(source, filename or "<fastgd-generated>", "exec"), glb)
    kernel = glb["kernel"]
    if filename:  # named by its key: a cached kernel keeps the symbol names of the process
        # that compiled it (module, name, a per-process counter), where two kernels of one
        # shape, both "kernel", could get one name, and a process loading both ran one twice
        kernel.__name__ = kernel.__qualname__ = os.path.splitext(os.path.basename(filename))[0]
    return kernel
