"""pytest-benchmark set-up for ``pytest benchmarks`` (and ``fastgd bench``, which runs it).

* Options: ``--fastgd-ops``, ``--fastgd-backends``, ``--fastgd-sizes`` (comma lists) select
  what runs, in every suite (by the ``op``/``backend``/``n`` parameters); ``--fastgd-quick``
  picks the small sizes and the forwards and backwards from x (no backwards from y);
  ``--fastgd-report=DIR`` (or ``none``) says where the report goes (with ``=``: an
  existing folder as a bare argument moves pytest's rootdir, and this folder's pytest.ini
  would not be read; that is refused).
* Fixtures: ``roofs`` (device -> measured GB/s roof), ``probe_n`` (bandwidth probe size).
* Machine facts (CPU, GPU, Numba threads and threading layer, peers, measured bandwidth) go
  into the JSON's ``machine_info["fastgd"]``.
* At the end of the session the JSON pytest-benchmark saved is turned into a report.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fastgd.bench import activation_cases, bandwidth, machine, optimizer_cases, peers
from fastgd.bench import report as report_writer

PROBE_OPS = ("copy", "inplace")


def pytest_addoption(parser):
    group = parser.getgroup("fastgd")
    group.addoption("--fastgd-ops", default="", help="comma list of ops to run (default all)")
    group.addoption("--fastgd-backends", default="",
                    help="comma list of backends/peers to run (default all available)")
    group.addoption("--fastgd-sizes", default="",
                    help="sizes n in elements: 1000,2^16 or 2^16..2^24 "
                         "(default 2^10,2^16,2^20,2^24)")
    group.addoption("--fastgd-quick", action="store_true",
                    help="small sizes only (2^10, 2^16, 2^20), activations forward and backward "
                         "from x (not from y), fewer bandwidth-probe repeats")
    group.addoption("--fastgd-report", default="",
                    help="report folder (default reports/<machine>-<date>); 'none': no report")
    group.addoption("--fastgd-deadline", default="0", type=float,
                    help="seconds after the start past which the remaining benchmarks are "
                         "skipped, so the results so far are saved and reported (0: none)")


def _list(config, name) -> list[str]:
    return [v.strip() for v in config.getoption(name).split(",") if v.strip()]


def _sizes(config) -> list[int] | None:
    """The sizes asked for, written as ``fastgd bench --sizes`` takes them (2^16..2^24)."""
    from fastgd.cli import CLIError, parse_sizes

    text = config.getoption("--fastgd-sizes")
    if not text.strip():
        return None
    try:
        return parse_sizes(text)
    except CLIError as err:
        raise pytest.UsageError(f"--fastgd-sizes: {err}") from None


def pytest_configure(config):
    ini = Path(__file__).with_name("pytest.ini")
    if config.inipath is None or Path(config.inipath).resolve() != ini.resolve():
        raise pytest.UsageError(
            f"{ini} was not read (pytest took {config.inipath or 'no configuration file'}): "
            "an existing folder given as a bare argument moves pytest's rootdir, as in "
            "`--fastgd-report DIR`; write the options with '=', e.g. --fastgd-report=DIR")
    config._fastgd_start = time.time()
    config._fastgd_load = machine.load_average()  # before the sweep adds its own
    _RAN[0] = 0  # per session (pytest.main may run twice in one process)
    _ASKED.clear()
    config._fastgd_json = None
    config.fastgd_sizes = _sizes(config)  # parsed once, for every suite
    where = config.getoption("--fastgd-report")
    if where not in ("", "none"):
        try:  # before the sweep, not after it
            report_writer.check_out(where)
        except report_writer.ReportError as e:
            raise pytest.UsageError(f"--fastgd-report: {e}") from None
    known = set(activation_cases.DEVICE)
    unknown = set(_list(config, "--fastgd-backends")) - known
    if unknown:
        raise pytest.UsageError(
            f"unknown backend(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    peers.torch_threads()


def pytest_generate_tests(metafunc):
    if {"op", "direction", "backend", "n"} <= set(metafunc.fixturenames):
        config = metafunc.config
        # only what was asked: finding what a peer supports calls it (and the numba
        # forward for y: a compile that the forward's benchmark would then not measure)
        asked = _list(config, "--fastgd-ops")
        ops = [o for o in asked if o in activation_cases.ops()] if asked else None
        combos = activation_cases.params(
            ops_=ops, impls=_list(config, "--fastgd-backends") or None,
            sizes=config.fastgd_sizes, quick=config.getoption("--fastgd-quick"))
        metafunc.parametrize("op,direction,backend,n", combos,
                             ids=[f"{o}-{d}-{b}-{n}" for o, d, b, n in combos])


def pytest_collection_modifyitems(config, items):
    """Keep the items whose op/backend/n parameters were asked for; unknown ops fail."""
    ops, backends = set(_list(config, "--fastgd-ops")), set(_list(config, "--fastgd-backends"))
    sizes = set(config.fastgd_sizes or ())
    # backends first: a backend missing here leaves no case of any op (collection makes
    # only the cases asked for)
    available = set(activation_cases.implementations()) | set(
        optimizer_cases.implementations())
    missing = backends - available
    if missing and not backends & available:
        raise pytest.UsageError(f"backend(s) {', '.join(sorted(missing))} not available here; "
                                f"available: {', '.join(sorted(available))}")
    if missing:
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"backend(s) {', '.join(sorted(missing))} not available here: not run"), 2)
    # a suite with no case at the sizes asked holds pytest's NotSet placeholder instead
    seen = {p["op"] for p in _params(items) if isinstance(p.get("op"), str)}
    absent = ops - seen
    if absent:
        known = seen | set(activation_cases.ops()) | set(optimizer_cases.OPS)
        unknown = absent - known
        if unknown:
            raise pytest.UsageError(f"unknown op(s) {', '.join(sorted(unknown))}; known: "
                                    f"{', '.join(sorted(known))}")
        cpu, gpu = (activation_cases.MAX_N[d].bit_length() - 1 for d in ("cpu", "gpu"))
        raise pytest.UsageError(
            f"no case of {', '.join(sorted(absent))} at the sizes asked on the backends here "
            f"(activations run up to 2^{cpu} on the CPU, 2^{gpu} on a GPU)")
    keep, drop = [], []
    for item in items:
        p = _params([item])[0]
        probe = p.get("op") in PROBE_OPS
        ok = (probe or not ops or p.get("op") in ops) and (
            probe or not backends or p.get("backend") in backends) and (
            not sizes or "n" not in p or probe or p["n"] in sizes)
        device = activation_cases.DEVICE.get(p.get("backend"), "cpu")
        if ok and not probe and "n" in p and p["n"] > activation_cases.MAX_N[device]:
            ok = False  # the activation cases are never made this big; the optimizers' are
        (keep if ok else drop).append(item)
        if ok and not probe:
            _ASKED.add(item.nodeid)
    cpu_max = activation_cases.MAX_N["cpu"]
    too_big = sorted(n for n in sizes if n > cpu_max)
    on_cpu = sorted(b for b in (backends or available) & available
                    if activation_cases.DEVICE.get(b) == "cpu")
    if too_big and on_cpu:
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"n above {report_writer.fmt_n(cpu_max)} runs on a GPU only: "
            f"{', '.join(report_writer.fmt_n(n) for n in too_big)}"
            f" not run on {', '.join(on_cpu)}"), 2)
    if (ops or backends) and all(_params([i])[0].get("op") in PROBE_OPS for i in keep):
        why = (["PyTorch has no Lion"] if "lion" in ops and any(
            b.startswith("torch") for b in backends) else []) + (
            ["copy and inplace are the bandwidth probe, run with every sweep"]
            if ops & set(PROBE_OPS) else [])
        raise pytest.UsageError(
            f"no case of {', '.join(sorted(ops)) or 'any op'} on "
            f"{', '.join(sorted(backends)) or 'the backends here'} at the sizes asked"
            + (f" ({'; '.join(why)})" if why else ""))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item):
    """Past ``--fastgd-deadline`` every remaining benchmark is skipped: the session then ends
    as usual, so pytest-benchmark saves what ran and the report is written from it."""
    deadline = item.config.getoption("--fastgd-deadline")
    if deadline > 0 and time.time() - item.config._fastgd_start > deadline:
        item.config._fastgd_past_deadline = True
        pytest.skip(f"past --fastgd-deadline={deadline:g} s")


def pytest_runtest_logreport(report):
    """Count the benchmarks asked for that ran, the bandwidth probe not among them (see the
    deadline check in pytest_sessionfinish)."""
    if report.when == "call" and report.passed and report.nodeid in _ASKED:
        _RAN[0] += 1


_RAN = [0]
_ASKED: set = set()  # node ids of the benchmarks asked for (not the probe)


def _params(items) -> list[dict]:
    return [dict(getattr(getattr(i, "callspec", None), "params", {}) or {}) for i in items]


@pytest.fixture(scope="session")
def roofs(request) -> dict:
    """Device -> measured bandwidth roof in GB/s (probe run once per session)."""
    figures = bandwidth.measure(quick=request.config.getoption("--fastgd-quick"))
    return {device: bandwidth.roof(f) for device, f in figures.items()}


@pytest.fixture(scope="session")
def probe_n() -> int:
    return bandwidth.PROBE_N


def pytest_benchmark_update_machine_info(config, machine_info):
    figures = bandwidth.measure(quick=config.getoption("--fastgd-quick"))
    machine_info["fastgd"] = machine.facts(figures, getattr(config, "_fastgd_load", None))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    config._fastgd_json = output_json


def _saved_json(config) -> Path | None:
    """The newest JSON file pytest-benchmark saved in this session, if any."""
    session = getattr(config, "_benchmarksession", None)
    path = getattr(getattr(session, "storage", None), "path", None)
    if path is None or not Path(path).is_dir():
        return None
    files = [f for f in Path(path).rglob("*.json") if f.stat().st_mtime >= config._fastgd_start]
    return max(files, key=lambda f: f.stat().st_mtime) if files else None


def pytest_sessionfinish(session, exitstatus):
    """Write the report from the JSON pytest-benchmark just saved (its hook wrapper saves
    before this runs)."""
    config = session.config
    where = config.getoption("--fastgd-report")
    if getattr(config, "_fastgd_past_deadline", False) and not _RAN[0]:
        config._fastgd_said = "fastgd: no report: no benchmark ran before the deadline"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if where == "none" or config._fastgd_json is None:
        return
    source = _saved_json(config) or config._fastgd_json
    try:
        index = report_writer.write([source], where or None)
    except report_writer.ReportError as e:
        config._fastgd_said = f"fastgd: no report written: {e} (the results: {source})"
        if session.exitstatus == pytest.ExitCode.OK:  # a sweep without its report failed
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    config._fastgd_said = f"fastgd report: {index}"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """Where the report went, after pytest-benchmark's tables (``fastgd bench``'s progress
    bar is closed by then)."""
    line = getattr(config, "_fastgd_said", None)
    if line:
        terminalreporter.write_line(line)
