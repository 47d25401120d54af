"""Every notebook in notebooks/ runs top to bottom at small size (SMALL = True, OUT = None).

A notebook's first cell tagged "parameters" holds its defaults, papermill style; the values
here go into a cell inserted right after it (or at the top when there is none), so a notebook's
own asserts are what this test checks.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "notebooks").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
PARAMETERS = {"SMALL": True, "OUT": None}


def inject_parameters(nb, parameters: dict):
    """Insert ``NAME = value`` lines after the cell tagged "parameters" (or at the top)."""
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = inject_parameters(nbformat.read(path, as_version=4), PARAMETERS)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
