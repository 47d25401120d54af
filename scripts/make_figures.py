"""Run every notebook in notebooks/ at full size and write its figures to docs/figures/.

Usage, from anywhere::

    python scripts/make_figures.py            # SMALL = False, OUT = <repo>/docs/figures
    python scripts/make_figures.py --small    # the quick CI-sized run (fewer figures)

Each notebook's cell tagged "parameters" is followed by an injected cell setting ``SMALL`` and
``OUT`` (papermill style), then the notebook runs top to bottom in a fresh "python3" kernel with
its own folder as working directory. Notebooks are executed in memory; the files in the repository
are not modified. The full-size run trains networks up to N = 1024, L = 32 and is meant for a GPU
(about two minutes); on two CPU cores it takes roughly an hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def inject_parameters(nb, parameters: dict):
    """Insert ``NAME = value`` lines after the cell tagged "parameters" (or at the top)."""
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return nb


def run_notebook(path: Path, parameters: dict, timeout: int, executed: Path | None = None):
    """Run one notebook; with ``executed``, write the run (outputs and figures included) there."""
    nb = inject_parameters(nbformat.read(path, as_version=4), parameters)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    finally:
        if executed is not None:  # a failed run is written too: its traceback is in the cell
            executed.mkdir(parents=True, exist_ok=True)
            tmp = executed / f".{path.name}.tmp"
            nbformat.write(nb, tmp)
            os.replace(tmp, executed / path.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="run with SMALL = True")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "figures", help="folder for the PNG figures"
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument(
        "--executed", type=Path, default=None, help="also write the executed notebooks here"
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: all in notebooks/")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted(
        p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    parameters = {"SMALL": args.small, "OUT": str(out)}
    failed = []
    for path in paths:
        start = time.perf_counter()
        print(f"{path.name}: running with {parameters} ...", flush=True)
        try:
            run_notebook(path.resolve(), parameters, args.timeout, args.executed)
        except CellExecutionError as err:
            failed.append(path.name)
            print(f"{path.name}: FAILED\n{err}", file=sys.stderr, flush=True)
            continue
        print(f"{path.name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"figures in {out}: {', '.join(sorted(p.name for p in out.glob('*.png'))) or 'none'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
