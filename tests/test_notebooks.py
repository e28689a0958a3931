"""The notebooks run: every cell of every notebook in ``notebooks/`` executes without error.

Each notebook reads ``GRAFT_NOTEBOOK_QUICK=1`` and then uses small parameters
(a dozen Figure 16 trials per line instead of 1,000, fewer client operations),
so the whole set runs in seconds; ``make notebooks`` runs them with full
parameters and saves their outputs. The notebooks' own ``assert`` cells are
part of the check, and so are their plots: each notebook that draws must have
produced its figures.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: How many figures each notebook draws.
FIGURES = {
    "01_core_by_hand.ipynb": 0,
    "02_simulation.ipynb": 2,
    "03_paper_figure_16.ipynb": 1,
    "04_performance.ipynb": 3,
}


def test_every_notebook_is_listed() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_executes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFT_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # Raises CellExecutionError (with the cell and the traceback) if any cell fails.
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= FIGURES[name]
    errors = [out for cell in nb.cells for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert errors == []
