"""Execute the notebooks and save their outputs: ``make notebooks``.

Runs every ``notebooks/*.ipynb`` (or the ones named) top to bottom in a fresh
kernel with full parameters -- 1,000 Figure 16 trials per line, the full
client workload -- and writes the results back into the files, so the plots
show on GitHub and in any notebook viewer. ``--quick`` uses the small
parameters ``make test`` uses (and does not save). Progress: one line per
cell, with its time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, quick: bool, save: bool) -> None:
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    done = 0
    started = time.perf_counter()

    def on_cell_execute(cell: Any, cell_index: int) -> None:
        print(f"  {path.name}: cell {done + 1}/{code_cells} ...", end="", flush=True)

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        nonlocal done
        done += 1
        print(f" {time.perf_counter() - started:6.1f} s", flush=True)

    if quick:
        os.environ["GRAFT_NOTEBOOK_QUICK"] = "1"
    else:
        os.environ.pop("GRAFT_NOTEBOOK_QUICK", None)
    client = NotebookClient(
        nb,
        timeout=3600,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
        on_cell_execute=on_cell_execute,
        on_cell_executed=on_cell_executed,
    )
    client.execute()
    if save:
        nbformat.write(nb, path)  # type: ignore[no-untyped-call]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: all of notebooks/")
    parser.add_argument("--quick", action="store_true", help="small parameters, do not save")
    args = parser.parse_args()
    paths = args.notebooks or sorted(HERE.glob("*.ipynb"))
    for k, path in enumerate(paths, 1):
        print(f"[{k}/{len(paths)}] {path.name}", flush=True)
        execute(path.resolve(), quick=args.quick, save=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
