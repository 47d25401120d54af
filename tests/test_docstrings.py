"""Every docstring example of the package runs and prints what it says (doctest).

One test per module of ``dmft`` runs its examples; modules without examples pass trivially.
Another checks that every public name (``dmft.__all__``) has an ``Examples:`` section with a
``>>>`` line, except the names in ``PENDING_EXAMPLES``, whose examples are being written; a
pending name that already has examples fails, so the set cannot go stale.

The examples share one set of tiny settings (three points, widths 16 and 32, depths 2 and 4,
three steps, four seeds), so JAX compiles each network once for the whole file.
"""

import doctest
import importlib
import inspect
import io
import os
import pkgutil
import re

os.environ["MPLBACKEND"] = "Agg"

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dmft  # noqa: E402

MODULES = ["dmft"] + sorted(m.name for m in pkgutil.walk_packages(dmft.__path__, prefix="dmft."))
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Public names whose examples are still being written (e.g. {"solve_dmft", "save"}); remove a
# name once it has them. Empty: solve_dmft, Solution, SimulationResult, save and load have theirs.
PENDING_EXAMPLES: set[str] = set()

_EXAMPLES = re.compile(r"^Examples:\s*$.*?^\s*>>> ", re.MULTILINE | re.DOTALL)


def has_examples(obj) -> bool:
    """Whether the docstring of ``obj`` has an ``Examples:`` line followed by a ``>>>`` line."""
    return bool(_EXAMPLES.search(inspect.getdoc(obj) or ""))


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    # importlib, not attribute access: ``dmft.simulate`` is the function, not the module
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name, extraglobs={"np": np, "dmft": dmft})
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = io.StringIO()
    try:
        for test in tests:
            runner.run(test, out=report.write)
    finally:
        plt.close("all")
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()


@pytest.mark.parametrize("name", sorted(dmft.__all__))
def test_public_name_has_examples(name):
    obj = getattr(dmft, name)
    if name in PENDING_EXAMPLES:
        assert not has_examples(obj), (
            f"dmft.{name} has examples now: remove it from PENDING_EXAMPLES"
        )
    else:
        assert has_examples(obj), (
            f"dmft.{name} needs a docstring with an 'Examples:' section of doctest (>>>) lines"
        )


def test_pending_names_are_public():
    assert PENDING_EXAMPLES <= set(dmft.__all__), PENDING_EXAMPLES - set(dmft.__all__)


def test_has_examples_recognises_a_section():
    def documented():
        """Do nothing.

        Examples:
            >>> documented()
        """

    def undocumented():
        """Do nothing.

        Example: call it, there is no doctest line.
        """

    assert has_examples(documented)
    assert not has_examples(undocumented)
    assert not has_examples(lambda: None)
