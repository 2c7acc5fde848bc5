"""Report writer: pytest-benchmark JSON in, ``index.md`` and PNG plots out.

Reads pytest-benchmark's own JSON (saved by ``--benchmark-autosave``/``--benchmark-json``), so
``pytest-benchmark compare`` still works on the same files. Every benchmark that carries
``op``, ``backend`` and ``n`` (in ``extra_info``, else in its parameters) is one result, of
any op and direction. Times are the best round (``stats.min``); GB/s = ``bytes`` / that time;
the roof is the bandwidth probe's highest figure for the result's device, from
``machine_info["fastgd"]["bandwidth"]``.

One file gives a machine report (the machine, the roof, each of our backends at a glance, the
best implementation per op and size, plots, every result); two or more give ratio tables and
overlaid plots.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fastgd._optional import pyplot
from fastgd.bench import bandwidth

GPU_BACKENDS = ("cuda", "torch-cuda", "cupy", "cupy-kernel")
REFERENCE = "numpy"


class ReportError(ValueError):
    """The input is not something a report can be made from (message says why)."""


@dataclass
class Result:
    op: str
    direction: str
    backend: str
    device: str
    dtype: str
    n: int
    bytes: int | None
    time: float  # best round, seconds
    median: float
    compile_s: float | None
    version: str

    @property
    def gbps(self) -> float | None:
        return self.bytes / self.time / 1e9 if self.bytes else None

    @property
    def key(self) -> tuple:
        return (self.op, self.direction, self.dtype, self.n)

    @property
    def unsteady(self) -> bool:
        """Its median round took more than ``UNSTEADY`` times its best."""
        return self.median > UNSTEADY * self.time


@dataclass
class Run:
    """One pytest-benchmark JSON file."""

    source: str
    data: dict
    results: list[Result]

    @property
    def info(self) -> dict:
        info = self.data.get("machine_info")
        return info if isinstance(info, dict) else {}

    @property
    def facts(self) -> dict:
        """``machine_info.fastgd``, its null fields left out (absent, as a missing one)."""
        facts = self.info.get("fastgd")
        if not isinstance(facts, dict):
            return {}
        return {k: v for k, v in facts.items() if v is not None}

    @property
    def machine(self) -> str:
        return str(self.info.get("node") or self.info.get("machine") or "machine")

    @property
    def date(self) -> str:
        return str(self.data.get("datetime", ""))[:10] or "undated"

    @property
    def label(self) -> str:
        """Machine, time and commit: two runs of one VM type on one day told apart."""
        when = str(self.data.get("datetime", ""))[:16].replace("T", " ")
        info = self._commit_info
        return f"{self.machine} {when}" + (f" @{info['id'][:7]}" if info else "")

    @property
    def commit(self) -> str:
        """The git commit the run measured (pytest-benchmark's commit_info), or '–'."""
        info = self._commit_info
        if not info:
            return "–"
        return info["id"][:10] + (" (with uncommitted changes)" if info.get("dirty") else "")

    @property
    def _commit_info(self) -> dict | None:
        info = self.data.get("commit_info")
        # pytest-benchmark writes id "unversioned" outside a git checkout
        if not isinstance(info, dict) or info.get("id") in (None, "", "unversioned"):
            return None
        return {**info, "id": str(info["id"])}

    def roof(self, device: str) -> float | None:
        return bandwidth.roof(self.facts.get("bandwidth", {}).get(device))

    def roof_percent(self, r: Result) -> float | None:
        """``r``'s GB/s as a percentage of its device's roof (None without either)."""
        roof = self.roof(r.device)
        return 100 * r.gbps / roof if r.gbps and roof else None

    def transfer_gbps(self) -> float | None:
        gpu = self.facts.get("bandwidth", {}).get("gpu") or {}
        values = [gpu[k] for k in ("h2d", "d2h") if gpu.get(k)]
        return min(values) if values else None


# -- loading ------------------------------------------------------------------------------
def load(path) -> Run:
    """Read and validate one pytest-benchmark JSON file (``ReportError`` if it is not one)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ReportError(f"{path} is not JSON (not text: {e.reason} at byte {e.start}); "
                          "expected the JSON file pytest-benchmark saves") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not JSON ({e.msg} at line {e.lineno}); expected the "
                          "JSON file pytest-benchmark saves (.benchmarks/…/0001_….json)") from e
    return parse(data, str(path))


def parse(data, source: str = "<data>") -> Run:
    """Validate pytest-benchmark output ``data`` and extract its fastgd results."""
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list) or not all(
        isinstance(b, dict) and isinstance(b.get("stats"), dict) for b in benches
    ):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ReportError(
            f"{source} is not pytest-benchmark output: expected an object with a 'benchmarks' "
            f"list whose entries have 'stats' (found {keys})"
        )
    named = [(r, b.get("name", "?")) for b in benches if (r := _result(b)) is not None]
    _check_facts(data, source)
    _refuse_duplicates(named, source)
    results = [r for r, _ in named]
    if not results:
        raise ReportError(
            f"{source} has no fastgd results: no benchmark carries op, backend and n in its "
            "extra_info or parameters"
        )
    return Run(source, data, results)


def _refuse_duplicates(named, source: str) -> None:
    """Two results (of ``(result, benchmark name)`` pairs) of one op, direction, dtype, n and
    backend: every table would show one of them, the last read, as if it were the best (a
    suite parametrized over something else besides, such as a thread count)."""
    seen = {}
    for r, name in named:
        key = (r.key, r.backend)
        if key in seen:
            raise ReportError(
                f"{source} has two results of {r.op} {r.direction} {r.dtype} n={r.n} on "
                f"{r.backend}: {seen[key]!r} and {name!r}; a report shows one per backend "
                "(give each its own op or backend in extra_info)")
        seen[key] = name


def _check_facts(data: dict, source: str) -> None:
    """The fields of ``machine_info.fastgd`` that the report computes with, where present:
    ``bandwidth`` (the probe's figures) ``{device: {name: GB/s}}``, ``peers``
    ``{name: version}``, ``cores`` and ``load_at_start`` numbers."""
    facts = (data.get("machine_info") or {}).get("fastgd") if isinstance(
        data.get("machine_info"), dict) else None
    if not isinstance(facts, dict):
        return

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    shapes = {
        "bandwidth": ("an object of devices, each an object of numbers (GB/s)",
                      lambda v: isinstance(v, dict) and all(
                          isinstance(f, dict) and all(map(number, f.values()))
                          for f in v.values())),
        "peers": ("an object of versions", lambda v: isinstance(v, dict)),
        "cores": ("a number", number),
        "load_at_start": ("a number", number),
    }
    for name, (what, fits) in shapes.items():
        if facts.get(name) is not None and not fits(facts[name]):
            raise ReportError(f"{source} has a malformed field: machine_info.fastgd.{name} "
                              f"must be {what}")


def _result(bench: dict) -> Result | None:
    """The fastgd result of one benchmark entry; None for another suite's entry."""
    params, extra = bench.get("params") or {}, bench.get("extra_info") or {}
    if not (isinstance(params, dict) and isinstance(extra, dict)):
        raise ReportError(f"benchmark {bench.get('name', '?')!r} has a malformed field: "
                          "params and extra_info must be objects")
    info = {**params, **extra}
    if not all(k in info for k in ("op", "backend", "n")) or "min" not in bench["stats"]:
        return None
    try:
        return _typed_result(bench, info)
    except (TypeError, ValueError) as e:
        raise ReportError(f"benchmark {bench.get('name', '?')!r} has a malformed field: "
                          f"{e}") from e


def _typed_result(bench: dict, info: dict) -> Result:
    backend = str(info["backend"])
    if not 0 < float(bench["stats"]["min"]) < math.inf:  # every figure divides by it; a
        # dropped row would silently make a slower implementation the best
        raise ValueError(f"its best time is {bench['stats']['min']!r}, not a time > 0")
    if info.get("bytes") is not None and int(info["bytes"]) < 0:
        raise ValueError(f"its bytes are {info['bytes']!r}, not a count >= 0")
    device = info.get("device") or ("gpu" if backend in GPU_BACKENDS or "cuda" in backend
                                    else "cpu")
    return Result(
        op=str(info["op"]), direction=str(info.get("direction", "")), backend=backend,
        device=device, dtype=str(info.get("dtype", "")), n=int(info["n"]),
        bytes=int(info["bytes"]) if info.get("bytes") else None,
        time=float(bench["stats"]["min"]),
        median=float(bench["stats"].get("median", bench["stats"]["min"])),
        compile_s=None if info.get("compile_s") is None else float(info["compile_s"]),
        version=str(info.get("version", "")),
    )


# -- formatting ---------------------------------------------------------------------------
def fmt_n(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def fmt_time(s: float) -> str:
    shown = float(f"{s:.3g}")  # 0.9996 s shows as 1 s, not 1e+03 ms
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if shown >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt(x, spec=".3g", none="–") -> str:
    return none if x is None else format(x, spec)


def fmt_gbps(x) -> str:
    """3 significant digits, as whole numbers from 1,000 on (a GPU's 3350, not 3.35e+03)."""
    return fmt(x, ".0f" if x is not None and x >= 1000 else ".3g")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# -- analysis -----------------------------------------------------------------------------
def by_key(results) -> dict[tuple, dict[str, Result]]:
    """(op, direction, dtype, n) -> backend -> result."""
    out: dict = defaultdict(dict)
    for r in results:
        out[r.key][r.backend] = r
    return out


#: (ours, its peer on the same device): the summary's "ours × peer" columns.
PAIRS = (("numba", "torch"), ("numba", "numpy-plain"), ("cuda", "torch-cuda"))
#: fastgd's compiled backends, each with a table at a glance
OURS = tuple(dict.fromkeys(ours for ours, _ in PAIRS))


def peer_pairs(run: Run) -> list[tuple[str, str]]:
    """The PAIRS whose peer ran in ``run``."""
    ran = {r.backend for r in measured(run)}
    return [(ours, peer) for ours, peer in PAIRS if peer in ran and ours in ran]


def summary_rows(run: Run) -> list[list]:
    """Best implementation per op, direction and size, with its speedup over the NumPy
    backend, and each of our backends against its peer (time ratio, > 1: ours faster)."""
    pairs = peer_pairs(run)
    rows = []
    items = sorted(by_key(measured(run)).items(), key=lambda kv: (
        kv[0][0], _direction_key(kv[0][1]), kv[0][2:]))
    for (op, direction, dtype, n), group in items:
        best = min(group.values(), key=lambda r: r.time)
        ref = group.get(REFERENCE)
        rows.append([op, direction, dtype, fmt_n(n), best.backend, fmt_time(best.time),
                     fmt_gbps(best.gbps), fmt(run.roof_percent(best), ".0f"),
                     fmt_ratio(ref and ref.time / best.time)]
                    + [fmt_ratio(group[peer].time / group[ours].time
                                 if ours in group and peer in group else None)
                       for ours, peer in pairs])
    return rows


def glance(run: Run, ours: str) -> tuple[list[str], list[list], list[str]]:
    """Backend ``ours`` per op and direction at the largest size it ran: (header, rows, one
    tally line per peer). A row: its GB/s and roof %, then the time of each peer on its
    device and of fastgd's NumPy backend over its own (> 1: ours faster), at that size."""
    others = [peer for o, peer in peer_pairs(run) if o == ours] + [REFERENCE]
    groups = by_key(measured(run))
    largest: dict = {}
    for (op, direction, dtype, n), group in groups.items():
        if ours in group:
            largest[(op, direction, dtype)] = max(n, largest.get((op, direction, dtype), 0))
    rows, wins = [], {peer: [0, 0] for peer in others[:-1]}
    for op, direction, dtype in sorted(largest, key=lambda k: (k[0], _direction_key(k[1]), k[2])):
        n = largest[(op, direction, dtype)]
        group = groups[(op, direction, dtype, n)]
        mine = group[ours]
        ratios = [group[o].time / mine.time if o in group else None for o in others]
        for peer, q in zip(others, ratios):
            if peer in wins and q is not None:
                wins[peer][0] += q > 1
                wins[peer][1] += 1
        rows.append([op, direction, dtype, fmt_n(n), fmt_gbps(mine.gbps),
                     fmt(run.roof_percent(mine), ".0f")]
                    + [fmt_ratio(q) for q in ratios])
    header = (["op", "direction", "dtype", "n", "GB/s", "roof %"]
              + [f"× {o}" + (" backend" if o == REFERENCE else "") for o in others])
    tallies = [f"{ours} is faster than {peer} in {won} of {of} rows"
               for peer, (won, of) in wins.items() if of]
    return header, rows, tallies


def _glance_section(run: Run) -> str:
    """Each of our backends at its largest sizes: where it stands at a glance."""
    parts = []
    for ours in OURS:
        header, rows, tallies = glance(run, ours)
        if rows:
            tally = f" ({'; '.join(tallies)})" if tallies else ""
            parts.append(f"**{ours}**{tally}:\n\n" + table(header, rows))
    if not parts:
        return ""
    return ("## At a glance\n\nEach of our backends per op and direction at the largest size "
            "it ran: GB/s and roof % as below; × a peer = the peer's time / ours at that size "
            "(> 1: ours faster; within about 5 % a tie on a noisy machine).\n\n"
            + "\n\n".join(parts))


def crossover(run: Run, transfer: bool) -> list[list]:
    """Per op and direction, the smallest n from which the best GPU implementation beats the
    best CPU one (``transfer``: counting every byte the op moves over host↔device once;
    "–" where the run has no host↔device speed or the op no byte count)."""
    pcie = run.transfer_gbps() if transfer else 0.0
    ops = defaultdict(dict)
    for key, group in by_key(measured(run)).items():
        ops[key[:3]][key[3]] = group
    rows = []
    for (op, direction, dtype), sizes in sorted(ops.items()):
        found, common, unknown = None, [], transfer and not pcie
        for n in sorted(sizes):
            cpu = [r for r in sizes[n].values() if r.device == "cpu"]
            gpu = [r for r in sizes[n].values() if r.device == "gpu"]
            if not cpu or not gpu:
                continue
            common.append(n)
            g = min(gpu, key=lambda r: r.time)
            unknown = unknown or (transfer and not g.bytes)
            t = g.time + (g.bytes / pcie / 1e9 if transfer and not unknown else 0)
            if t < min(r.time for r in cpu):
                found = found or n
            else:
                found = None
        if common:
            where = ("–" if unknown else fmt_n(found) if found
                     else f"> {fmt_n(common[-1])}")
            rows.append([op, direction, dtype, where])
    return rows


# -- plots ---------------------------------------------------------------------------------
def _plt():
    return pyplot("bench", "a report (its plots)")


STYLES = ("-", "--", ":", "-.")


DIRECTION_ORDER = ("forward", "backward", "backward_y", "step")
ROOF_COLORS = {"cpu": "dimgray", "gpu": "darkred"}


#: Fixed colours so a backend looks the same in every plot: ours in blues and greens, peers
#: in warm colours, the NumPy reference grey
FIXED_COLORS = {"numpy": "tab:gray", "numba": "tab:blue", "cuda": "tab:green",
                "torch": "tab:orange", "torch-cuda": "tab:red", "cupy": "tab:purple",
                "cupy-kernel": "tab:brown", "numpy-plain": "tab:olive"}


def _colors(backends) -> dict:
    cmap = _plt().get_cmap("tab10")
    extra = sorted(set(backends) - set(FIXED_COLORS))
    return {b: FIXED_COLORS.get(b) or cmap((7 + extra.index(b)) % 10) for b in backends}


def _direction_key(direction: str):
    return (DIRECTION_ORDER.index(direction) if direction in DIRECTION_ORDER else 9, direction)


def measured(run: Run) -> list[Result]:
    """The results of ops (the bandwidth probe's own rows left out: they are the roof)."""
    return [r for r in run.results if r.direction != "probe"]


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 times powers of ten, labelled 20 and 50 rather than 2×10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_throughput(runs: list[Run], op: str, path: Path) -> Path:
    """GB/s against n for one op: a panel per direction, a line per backend (and run), the
    roof of each device as a horizontal line."""
    plt = _plt()
    results = [(i, r) for i, run in enumerate(runs) for r in measured(run)
               if r.op == op and r.gbps]
    directions = sorted({r.direction for _, r in results}, key=_direction_key)
    colors = _colors({r.backend for _, r in results})
    fig, axes = plt.subplots(1, len(directions), figsize=(6.5 * len(directions), 4.6),
                             squeeze=False)
    values = [r.gbps for _, r in results]  # one y scale for every panel of the figure
    log_y = bool(values) and max(values) / max(min(values), 1e-12) > 30
    for ax, direction in zip(axes[0], directions):
        lines = defaultdict(list)
        for i, r in results:
            if r.direction == direction:
                lines[(i, r.backend)].append((r.n, r.gbps))
        for (i, backend), pts in sorted(lines.items()):
            pts.sort()
            label = backend if len(runs) == 1 else f"{backend} (run {i + 1})"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], STYLES[i % 4], marker="o",
                    color=colors[backend], label=label)
        for i, run in enumerate(runs):
            for device in sorted({r.device for _, r in results}):
                roof = run.roof(device)
                if roof:
                    tag = f"{device.upper()} roof {roof:.0f} GB/s"
                    ax.axhline(roof, color=ROOF_COLORS.get(device, "black"), ls=STYLES[i % 4],
                               lw=1.2, alpha=0.7,
                               label=tag if len(runs) == 1 else f"{tag} (run {i + 1})")
        if log_y:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis)
        else:  # a linear axis starts at 0, so heights compare as ratios
            ax.set_ylim(bottom=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (elements)")
        ax.set_ylabel("throughput (GB/s, best round)")
        ax.set_title(f"{op} {direction}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")  # where it hides the fewest points
    # fixed margins (in inches) instead of tight_layout, which measures every tick label and
    # took most of a report's time
    width = 6.5 * len(directions)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.12, top=0.92,
                        wspace=0.9 / 6.5)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(groups: dict[str, dict[str, float]], xlabel: str, title: str, path: Path,
          log=True, ref_line=None) -> Path:
    """Horizontal grouped bars: one group per label, one bar per backend."""
    plt = _plt()
    labels = list(groups)
    backends = sorted({b for g in groups.values() for b in g})
    colors = _colors(backends)
    height = 0.8 / max(len(backends), 1)
    tall = 1.2 + 0.32 * len(labels) * max(1, len(backends) / 2)
    fig, ax = plt.subplots(figsize=(8, max(3.0, tall)))
    for k, b in enumerate(backends):
        ys = [i + k * height for i, lab in enumerate(labels) if b in groups[lab]]
        xs = [groups[lab][b] for lab in labels if b in groups[lab]]
        ax.barh(ys, xs, height=height, color=colors[b], label=b)
    ax.set_yticks([i + height * (len(backends) - 1) / 2 for i in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    if ref_line is not None:
        ax.axvline(ref_line, color="black", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_op(run: Run, pick) -> dict[str, dict[str, float]]:
    """label "op direction" -> backend -> value, from ``pick(group by n) -> {backend: v}``."""
    sizes = defaultdict(dict)
    for (op, direction, dtype, n), group in by_key(measured(run)).items():
        sizes[(op, direction, dtype)][n] = group
    out = {}
    for (op, direction, dtype), groups in sorted(
            sizes.items(), key=lambda kv: (kv[0][0], _direction_key(kv[0][1]), kv[0][2])):
        n, values = pick(groups)
        if values:
            label = f"{op} {direction}" + (f" {dtype}" if dtype != "float32" else "")
            out[label + (f" (n={fmt_n(n)})" if n else "")] = values
    return out


def speedups(run: Run) -> dict:
    """Speedup over NumPy at the largest size NumPy ran, per op and backend."""
    def pick(groups):
        with_ref = [n for n, g in groups.items() if REFERENCE in g]
        if not with_ref:
            return None, {}
        n = max(with_ref)
        g = groups[n]
        return n, {b: g[REFERENCE].time / r.time for b, r in g.items() if b != REFERENCE}
    return _per_op(run, pick)


def latencies(run: Run) -> dict:
    """Time in µs at the smallest size, per op and backend (ops whose smallest size is 2^20
    or more and the many-tensor optimizer steps, ``adam [buffer of 1000]``, are left out:
    they are no latency)."""
    def pick(groups):
        n = min(groups)
        if n >= 1 << 20:
            return None, {}
        return n, {b: r.time * 1e6 for b, r in groups[n].items()}
    steps = Run(run.source, run.data, [r for r in run.results if " [" not in r.op])
    return _per_op(steps, pick)


def compile_times(run: Run) -> dict:
    """First-call compile seconds per op and backend, summed over kernel variants."""
    def pick(groups):
        out = defaultdict(float)
        for g in groups.values():
            for b, r in g.items():
                if r.compile_s:
                    out[b] += r.compile_s
        return None, dict(out)
    return _per_op(run, pick)


# -- writing ------------------------------------------------------------------------------
def default_dir(run: Run, root="reports", compare=False) -> Path:
    """``reports/<machine>-<date>`` (``compare-<machine>-<date>`` for a comparison of runs,
    named by the first), made unique with a counter if it exists."""
    base = Path(root) / _slug(f"{'compare-' if compare else ''}{run.machine}-{run.date}")
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def _name(runs: list[Run], i: int) -> str:
    """Run ``i``'s label, numbered where there are several (one file twice: same label)."""
    return runs[i].label if len(runs) == 1 else f"run {i + 1}: {runs[i].label}"


def _machine_section(runs: list[Run]) -> str:
    names = ["cpu", "cores", "load_at_start", "gpu", "numba", "numba_threads",
             "threading_layer", "openmp_wait", "cpu_vectors", "cpu_prefetch", "cpu_interleave",
             "numpy", "python", "fastgd"]
    rows = [["commit"] + [r.commit for r in runs]]
    for name in names:
        rows.append([name] + [fmt(r.facts.get(name), "", "–") for r in runs])
    peers = sorted({p for r in runs for p in r.facts.get("peers", {})})
    for p in peers:
        rows.append([f"peer {p}"] + [r.facts.get("peers", {}).get(p, "–") for r in runs])
    header = ["", *(_name(runs, i) for i in range(len(runs)))]
    return "## Machine\n\n" + table(header, rows)


def _probe_n(n) -> str:
    """The probe's array size as 2^k where it is a power of two (any number a JSON holds)."""
    if not n:
        return "–"
    return fmt_n(int(n)) if float(n).is_integer() else fmt(n)


def _bandwidth_section(runs: list[Run]) -> str:
    rows = []
    for i, run in enumerate(runs):
        for device, figures in sorted(run.facts.get("bandwidth", {}).items()):
            rows.append([_name(runs, i) if len(runs) > 1 else device.upper(),
                         *([device.upper()] if len(runs) > 1 else []),
                         _probe_n(figures.get("n")),
                         fmt(figures.get("copy"), ".1f"), fmt(figures.get("inplace"), ".1f"),
                         fmt(run.roof(device), ".1f"), fmt(figures.get("h2d"), ".1f"),
                         fmt(figures.get("d2h"), ".1f")])
    if not rows:
        return "## Memory bandwidth\n\nNo bandwidth probe in this run: no roof to compare with."
    head = (["run", "device"] if len(runs) > 1 else ["device"]) + [
        "n (float32)", "copy GB/s", "in-place GB/s", "roof GB/s", "host→device GB/s",
        "device→host GB/s"]
    return ("## Memory bandwidth (the roof)\n\nStream-like probe in the same run, over arrays "
            "of n float32 in main memory: copy (b = a) and in-place (a = a·s), each counted "
            "as moving 2 bytes per byte of array; the roof is the higher. Ops on arrays that "
            "fit in the caches can run above it (roof % over 100), the probe's own rows "
            "under All results too.\n\n" + table(head, rows))


def _plots(run_list: list[Run], out: Path, prefix: str) -> list[str]:
    ops = sorted({r.op for run in run_list for r in measured(run) if r.gbps})
    return [plot_throughput(run_list, op, out / f"{prefix}throughput-{_slug(op)}.png").name
            for op in ops]


def _keep_source(run: Run, out: Path, name: str = "benchmarks.json") -> str:
    """The run's JSON as ``name`` beside the report, so the folder stands alone
    (pytest-benchmark saves under the git-ignored .benchmarks/); a link to it."""
    kept = out / name
    source = Path(run.source)
    link = f"[`{name}`]({name}) (beside this page"
    if source.is_file() and source.resolve() == kept.resolve():
        return link + ")"
    if not source.is_file() or source.resolve().parent == out.resolve():
        # from memory: a file of this folder may have been written over already (runs
        # compared again in another order)
        kept.write_text(json.dumps(run.data, indent=4, default=str))
        return link + ")"
    shutil.copyfile(source, kept)
    return link + f"; from `{run.source}`)"


#: A result is unsteady where its median round took more than this times its best.
UNSTEADY = 2.0


def steadiness_note(run: Run) -> str:
    """A warning where the machine was shared: a high load average when the sweep started,
    or more unsteady results than a quiet machine gives (1-7 of ~600 on the 2-core VMs
    of reports/). Another program taking a core stalls every parallel call that waits for
    it (a 7 µs kernel took 5 ms): the best round of a few is then no measure."""
    notes = []
    load, cores = run.facts.get("load_at_start"), run.facts.get("cores")
    if load is not None and cores and load >= cores / 2:
        notes.append(f"the load average over the minute before the sweep was {load:.1f} on "
                     f"{cores} cores (other programs running, or a job that had just ended)")
    shaky = [r for r in run.results if r.unsteady]
    if len(shaky) > max(8, len(run.results) // 50):
        notes.append(f"{len(shaky)} of {len(run.results)} results have a median more than "
                     f"{UNSTEADY:g}× their best round (marked † under All results)")
    if not notes:
        return ""
    return ("**Warning: this machine may have been busy during the sweep** — "
            + "; ".join(notes)
            + ". Timings taken beside other programs are slow at random, ratios to peers "
              "included: rerun on a quiet machine before trusting them.")


def write_single(run: Run, out: Path) -> Path:
    parts = [f"# fastgd benchmarks: {run.label}", f"Source: {_keep_source(run, out)}",
             steadiness_note(run), _machine_section([run]), _bandwidth_section([run]),
             _glance_section(run)]
    parts = [p for p in parts if p]
    parts.append(
        "## Best implementation per op and size\n\nTime is the best round; GB/s = bytes the "
        "op must move / time; roof % = GB/s / the device's measured bandwidth, the higher of "
        "the copy and in-place probes (main memory: arrays that fit in the caches, typically "
        "n ≤ 2^20, can exceed 100 %); × numpy backend = the time of fastgd's NumPy backend "
        "(for the activations the float64 reference the kernels are tested against, not the "
        "NumPy a user writes: see `numpy-plain`; for the optimizers plain NumPy in the data's "
        "dtype) / the best time, the best's own speedup; `numba × torch` "
        "(`numba × numpy-plain`: the NumPy expressions a user writes, in float32; "
        "`cuda × torch-cuda`) = the peer's time / ours at the same size, > 1 where ours "
        "is faster (best rounds: within about 5 % the two are a tie on a noisy machine). "
        "Optimizer rows named `[buffer of N]` / `[tensors of N]` "
        "update N tensors of mixed sizes through one ParamBuffer / one launch per tensor."
        "\n\n"
        + table(["op", "direction", "dtype", "n", "best", "time", "GB/s", "roof %",
                 "× numpy backend"] + [f"{ours} × {peer}" for ours, peer in peer_pairs(run)],
                summary_rows(run)))
    devices = {r.device for r in measured(run)}
    if {"cpu", "gpu"} <= devices:
        rows = [a + [b[-1]] for a, b in zip(crossover(run, False), crossover(run, True))]
        parts.append("## CPU ↔ GPU crossover\n\nSmallest n from which the best GPU "
                     "implementation beats the best CPU one, without and with copying the "
                     "op's bytes between host and device.\n\n"
                     + table(["op", "direction", "dtype", "GPU faster from n",
                              "with host↔device copies"], rows))
    figures = ["## Plots"]
    for name in _plots([run], out, ""):
        figures.append(f"![{name}]({name})")
    for name, groups, xlabel, title, kw in (
        ("speedup.png", speedups(run), "speedup over NumPy (×, log scale)",
         "Speedup over NumPy at the largest size NumPy ran", {"ref_line": 1.0}),
        ("latency.png", latencies(run), "time per call (µs, log scale)",
         "Latency at the smallest size", {}),
        ("compile.png", compile_times(run),
         "first-call time (s), all kernel variants: JIT compile, or load from the kernel cache",
         "First call per kernel: JIT compile, or load from the kernel cache",
         {"log": False}),
    ):
        if groups:
            _bars(groups, xlabel, title, out / name, **kw)
            figures.append(f"![{name}]({name})")
    parts.append("\n\n".join(figures))
    parts.append(_all_results([run]))
    return _write(out, parts)


def _all_results(runs: list[Run]) -> str:
    rows = []
    for i, run in enumerate(runs):
        for r in sorted(run.results, key=lambda r: (r.op, r.direction, r.n, r.backend)):
            rows.append(([i + 1] if len(runs) > 1 else []) + [
                r.op, r.direction, r.dtype, fmt_n(r.n), r.backend, fmt_time(r.time),
                fmt_time(r.median) + (" †" if r.unsteady else ""),
                fmt_gbps(r.gbps),
                fmt(run.roof_percent(r), ".0f"),
                fmt(r.compile_s, ".2f")])
    head = (["run"] if len(runs) > 1 else []) + [
        "op", "direction", "dtype", "n", "backend", "best", "median", "GB/s", "roof %",
        "compile s"]
    return ("## All results\n\n<details><summary>every benchmark</summary>\n\n"
            f"† : the median round took more than {UNSTEADY:g}× the best (unsteady: the "
            "machine was busy, or the call is short enough for the timer's jitter)\n\n"
            + table(head, rows) + "\n\n</details>")


def ratios(runs: list[Run]) -> list[tuple[Result, list[float | None]]]:
    """Per op result of the first run found in another: time(first) / time(other), as
    floats (None where that run lacks it); the bandwidth probe's rows left out."""
    first = {(r.key, r.backend): r for r in measured(runs[0])}
    others = [{(r.key, r.backend): r for r in measured(run)} for run in runs[1:]]
    out = []
    for (key, backend), r in sorted(first.items()):
        matches = [o.get((key, backend)) for o in others]
        if any(matches):
            out.append((r, [m and r.time / m.time for m in matches]))
    return out


def fmt_ratio(q: float | None) -> str:
    """2 decimals, or 2 significant digits below 0.1 (0.0034, not 0.00)."""
    return fmt(q, ".2f" if q is None or q >= 0.1 else ".2g")


def ratio_rows(found) -> list[list]:
    """:func:`ratios`' results as table rows."""
    return [[r.op, r.direction, r.dtype, fmt_n(r.n), r.backend, fmt_time(r.time)]
            + [fmt_ratio(q) for q in qs] for r, qs in found]


def write_compare(runs: list[Run], out: Path) -> Path:
    parts = ["# fastgd benchmarks compared",
             "Runs:\n\n" + "\n".join(
                 f"{i + 1}. {r.label} — {_keep_source(r, out, f'benchmarks-{i + 1}.json')}"
                 for i, r in enumerate(runs)),
             *(f"Run {i + 1}: {note}" for i, r in enumerate(runs)
               if (note := steadiness_note(r))),
             _machine_section(runs), _bandwidth_section(runs)]
    found = ratios(runs)
    geo = []
    for k in range(1, len(runs)):
        per_backend = defaultdict(list)
        for r, qs in found:
            if qs[k - 1]:  # a ratio of 0 (an unmeasurably fast result) has no logarithm
                per_backend[r.backend].append(math.log(qs[k - 1]))
        for b, logs in sorted(per_backend.items()):
            geo.append([f"run {k + 1} vs run 1", b, len(logs),
                        fmt_ratio(math.exp(sum(logs) / len(logs)))])
    rows = ratio_rows(found)
    note = ("" if found else "**No result in common:** run 1 and the other runs share no op, "
            "direction, dtype, size and backend, so there is nothing to compare (their results "
            "are listed apart below).\n\n")
    parts.append("## Ratios\n\nSpeedup of each run over run 1 (time in run 1 / time in that "
                 "run; > 1 means faster than run 1), for the results run 1 has (\"All results\" "
                 "below lists every run's).\n\n" + note
                 + table(["runs", "backend", "results", "geometric mean speedup"], geo)
                 + "\n\n" + table(["op", "direction", "dtype", "n", "backend", "run 1 time",
                                   *(f"run {k + 1} speedup" for k in range(1, len(runs)))],
                                  rows))
    parts.append("## Plots (solid: run 1, dashed: run 2, dotted: run 3, …)\n\n" + "\n\n".join(
        f"![{name}]({name})" for name in _plots(runs, out, "compare-")))
    parts.append(_all_results(runs))
    return _write(out, parts)


def _write(out: Path, parts: list[str]) -> Path:
    index = out / "index.md"
    index.write_text("\n\n".join(parts) + "\n")
    return index


def write(sources, out=None) -> Path:
    """Write the report of one or more JSON files (paths or parsed dicts) into ``out``
    (default: a new ``reports/<machine>-<date>``); returns the path of ``index.md``."""
    runs = [s if isinstance(s, Run) else parse(s) if isinstance(s, dict) else load(s)
            for s in sources]
    if not runs:
        raise ReportError("no JSON files given")
    out = Path(out) if out else default_dir(runs[0], compare=len(runs) > 1)
    check_out(out)
    _plt()  # matplotlib is there, before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
        older = _files_of(out / "index.md")
        index = write_single(runs[0], out) if len(runs) == 1 else write_compare(runs, out)
        for name in older - _files_of(index):  # an older report's, not made again
            (out / name).unlink(missing_ok=True)
        return index
    except OSError as e:
        raise ReportError(f"cannot write the report into {out}: {e.strerror or e}") from e


#: The files a report makes (see write_single, write_compare): plots and the runs' JSON.
_MADE_NAME = re.compile(r"(compare-)?throughput-[\w.-]+\.png|speedup\.png|latency\.png|"
                        r"compile\.png|benchmarks(-\d+)?\.json")


def _files_of(index: Path) -> set[str]:
    """The files a fastgd report ``index`` links to (none if it is not one: a folder of the
    user's own keeps its files), so that a report written over it can remove those it does
    not make again (another op's throughput, a single run's JSON under a comparison)."""
    if not _is_report(index):
        return set()
    return {name for name in re.findall(r"\]\(([^)/\\]+)\)", index.read_text(errors="replace"))
            if _MADE_NAME.fullmatch(name)}


def _is_report(index: Path) -> bool:
    return index.is_file() and index.read_text(errors="replace").startswith(
        "# fastgd benchmarks")


def check_out(out) -> None:
    """``ReportError`` unless a report can go into folder ``out`` (checked before a sweep):
    the folder is made and a file written in it, then what the check made is removed
    (permission bits alone pass for root: /proc/x was found only after the sweep)."""
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ReportError(f"--out {out}: {path} exists and is not a folder")
            break
    if (out / "index.md").exists() and not _is_report(out / "index.md"):
        raise ReportError(f"--out {out} holds an index.md that is not a fastgd report; "
                          "choose another folder")
    made = []
    try:
        for path in reversed((out, *out.parents)):
            if not path.exists():
                path.mkdir()
                made.append(path)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ReportError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    finally:
        for path in reversed(made):
            try:
                path.rmdir()
            except OSError:  # another run's files in it by now: leave it
                break
