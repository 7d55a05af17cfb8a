"""notebooks/analysis.ipynb runs top to bottom on a real sweep."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.engine.conftest import ROOT
from tests.report.conftest import Sweep

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def outputs_of(cell: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """The cell's printed text and the MIME types of what it displayed."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    shown = [mime for o in cell.outputs if o.output_type == "display_data" for mime in o.data]
    return text, shown


def test_analysis_notebook_runs_on_the_sweep(sweep: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOD_SWEEP_DIR", str(sweep.root))
    # The kernel imports this checkout's clod, whichever copy is installed.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    text = "\n".join(outputs_of(cell)[0] for cell in code)
    assert f"{len(sweep.all_runs)} runs under {sweep.root}" in text
    assert "strategy.frozen_bn must be eval or train" in text  # the failed run's traceback
    assert "best: " in text
    shown = [mime for cell in code for mime in outputs_of(cell)[1]]
    # mAP vs memory, vs compute, per task, alpha x beta, per class after the last task
    assert shown.count("image/png") == 5
    assert "text/markdown" in shown
