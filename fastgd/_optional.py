"""Optional dependencies, imported where first needed, with the install line in the error:
``MissingDependency`` (an ``ImportError``) says which extra brings the package, and the
``fastgd`` commands print it as an error line."""

from __future__ import annotations

import importlib


class MissingDependency(ImportError):
    """An optional package that a feature needs is not installed."""


def hint(extra: str) -> str:
    """How to install ``extra``: for an installed fastgd (pip reads its extras from the installed
    metadata) or in a source checkout."""
    return f"pip install 'fastgd[{extra}]' (in a source checkout: pip install -e '.[{extra}]')"


#: pip's names of the packages whose modules are named otherwise
PACKAGES = {"sklearn": "scikit-learn", "pytest_benchmark": "pytest-benchmark",
            "numba": "numba-cuda", "cupy": "CuPy"}


def pyplot(extra: str, what: str):
    """matplotlib's pyplot on the Agg backend (reports and studies write PNG files; no display
    needed), or :class:`MissingDependency` naming ``extra``."""
    matplotlib = need("matplotlib", extra, what)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def need(module: str, extra: str, what: str):
    """``module`` imported, or :class:`MissingDependency` saying that ``what`` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependency(f"{what} needs {PACKAGES.get(top, top)}: {hint(extra)}") from e
