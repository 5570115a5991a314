"""The teaching notebooks: committed without outputs, and each runs top to bottom.

Executing them needs the ``notebooks`` extra (nbclient, nbformat, ipykernel, matplotlib,
scikit-learn). Without it the execution tests are skipped on a developer's
machine. Under CI (the ``CI`` environment variable set) a missing package is an error
instead, so CI cannot go green without running every notebook.

The kernel imports minibam from this checkout: the repository root is put on the
kernel's ``PYTHONPATH``, so no ``pip install -e`` is needed. Each notebook is executed
once for both the docs site and this file (scripts/run_notebooks.py): a copy executed by
the docs build is checked here, without running it again, when neither the notebook nor
minibam's code changed since.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STRIP = ROOT / "scripts" / "strip_notebooks.py"
EXPECTED = ["01_autograd", "02_im2col_conv", "03_batchnorm", "04_bam", "05_training",
            "06_cluttered_digits", "07_bam_vs_cbam"]
EXECUTION_NEEDS = ("nbformat", "nbclient", "ipykernel", "matplotlib", "sklearn")
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
RUN_NOTEBOOKS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RUN_NOTEBOOKS)


def _require(name: str) -> ModuleType:
    """Import ``name``; skip the test if it is missing, except under CI, where that fails."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[notebooks]')")


def _notebook_id(path: Path) -> str:
    return path.stem


def test_the_notebooks_are_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_committed_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code_cells, f"{path.name} has no code cells"
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell["outputs"] == [], (
            f"{path.name}, cell {i}, has outputs: run python scripts/strip_notebooks.py")
        assert cell["execution_count"] is None, (
            f"{path.name}, cell {i}, has an execution count: run python scripts/strip_notebooks.py")


def test_strip_check_passes_on_the_committed_notebooks() -> None:
    """Stripping the committed notebooks must change nothing (metadata and layout included)."""
    result = subprocess.run([sys.executable, str(STRIP), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strip_removes_outputs_and_check_notices(tmp_path: Path) -> None:
    executed = {
        "cells": [
            {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# title"]},
            {"cell_type": "code", "id": "b", "execution_count": 3,
             "metadata": {"execution": {"iopub.status.busy": "2024"}, "tags": ["keep"]},
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}],
             "source": ["print(1)"]},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python", "version": "3.11.7"},
                     "widgets": {"state": {}}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(executed), encoding="utf-8")

    check = subprocess.run([sys.executable, str(STRIP), "--check", str(path)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "executed.ipynb" in check.stdout
    assert json.loads(path.read_text(encoding="utf-8")) == executed  # --check writes nothing

    subprocess.run([sys.executable, str(STRIP), str(path)], check=True, capture_output=True)
    clean = json.loads(path.read_text(encoding="utf-8"))
    code = clean["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"] == {"tags": ["keep"]}
    assert code["source"] == ["print(1)"] and clean["cells"][0] == executed["cells"][0]
    assert clean["metadata"] == {"kernelspec": executed["metadata"]["kernelspec"],
                                 "language_info": {"name": "python"}}
    again = subprocess.run([sys.executable, str(STRIP), "--check", str(path)],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    for name in EXECUTION_NEEDS:
        _require(name)
    # Runs the notebook in a fresh kernel (this checkout first on its PYTHONPATH), or
    # reuses the copy the docs build executed if the notebook and minibam are unchanged
    # since: scripts/run_notebooks.py. Raises CellExecutionError on any error.
    notebook, ran = RUN_NOTEBOOKS.executed(path)
    seconds = notebook.metadata[RUN_NOTEBOOKS.METADATA_KEY]["seconds"]
    print(f"{path.name} {'ran' if ran else 'was executed by the docs build'} in {seconds} s")

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    warnings = [o.text for o in outputs
                if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not warnings, f"{path.name} printed warnings:\n" + "\n".join(warnings)
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    if path.stem != "01_autograd":  # every notebook but the first draws with matplotlib
        assert figures, f"{path.name} drew no figure"
