"""The student workbook: one Jupyter notebook with every exercise in teaching order.

Each exercise has a short introduction and the derivation to read, a cell with the stub
(raising ``NotImplementedError``: the workbook holds no solution and imports none), and
a cell with the ``check`` call. The notebook is plain JSON (nbformat 4), written
atomically, so writing it needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from minibam._atomic import atomic_write
from minibam.exercises.catalogue import EXERCISES
from minibam.exercises.core import Exercise

WORKBOOK = "minibam-exercises.ipynb"
FILES = (WORKBOOK,)

SETUP = """import numpy as np

from minibam.exercises import check
from minibam.function import Context, Function"""

HOW_TO = """# minibam exercises: write the backward passes yourself

Each section below is one exercise, in teaching order: read the introduction and the
derivation it points to (in minibam's documentation, `docs/derivations/`), replace
`raise NotImplementedError` with your code, and run the cell with `check(...)` under it.
The checker runs your function on random shapes and hyper-parameters with a random
upstream gradient, in float64, against minibam's own ops and finite differences. When
something is wrong it shows the first failing case, the worst element (yours and the
expected value), and, when your answer is a classic mistake, which one and where the
derivation explains it.

Run the next cell first. Later exercises may use your earlier solutions. Your teacher
grades with `minibam grade`, which runs its own checks on your functions (not on what this
notebook printed), so keep each function's name and arguments as given."""


def _markdown(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}


def _code(text: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": text.splitlines(keepends=True)}


def exercise_cells(number: int, exercise: Exercise) -> list[dict[str, Any]]:
    page, _, section = exercise.doc.partition("#")
    heading = section.replace("-", " ").capitalize()
    intro = (f"## {number}. {exercise.title}\n\n{exercise.intro}\n\n"
             f"**Derivation:** `docs/{page}`, section \"{heading}\".")
    return [_markdown(intro), _code(exercise.stub.rstrip()), _code(f"check({exercise.name})")]


def notebook() -> dict[str, Any]:
    """The workbook as an nbformat 4 dict."""
    cells = [_markdown(HOW_TO), _code(SETUP)]
    for number, exercise in enumerate(EXERCISES, 1):
        cells += exercise_cells(number, exercise)
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 4,
    }


def write_workbook(directory: str | os.PathLike) -> list[Path]:
    """Write the workbook into ``directory`` (created if needed); returns the files written.

    Raises ``FileExistsError`` naming the files, and writes nothing, if ``directory``
    already holds any of them: a student's work is never overwritten.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} exists and is not a directory")
    present = [name for name in FILES if (directory / name).exists()]
    if present:
        raise FileExistsError(f"{directory} already holds {', '.join(present)}; "
                              f"move it away or choose another directory")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / WORKBOOK
    text = json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"
    with atomic_write(target) as out:  # the one writer helper: all of the file or none
        out.write(text.encode("utf-8"))
    return [target]
