"""Every notebook in notebooks/ runs top to bottom at small size (SMALL = True, OUT = None).

A notebook's first cell tagged "parameters" holds its defaults, papermill style; the values
here go into a cell inserted right after it (``scripts/make_figures.py`` does the same at full
size), so a notebook's own asserts are what this test checks. All five take about six minutes
on two CPU cores.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)
PARAMETERS = {"SMALL": True, "OUT": None}

_spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
make_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_figures)


def test_every_notebook_is_found():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_quickstart.ipynb",
        "02_linear_resnet.ipynb",
        "03_lr_transfer.ipynb",
        "04_finite_size_rates.ipynb",
        "05_responses.ipynb",
    ], names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    # raises CellExecutionError, with the failing cell and its traceback, if any cell fails
    make_figures.run_notebook(path, PARAMETERS, timeout=900)
