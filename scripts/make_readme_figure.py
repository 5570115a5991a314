"""Draw docs/images/attention_maps.png, the picture on the README.

The picture is the attention-map figure of notebooks/06_cluttered_digits.ipynb (the
code cell whose first line is the comment ``# readme figure: ...``; a comment rather
than a cell tag, which the rendered page would show): digits among clutter, and the spatial maps of BAM
before and after training and of CBAM after training, with the digit's box drawn. The
script runs the whole notebook in a fresh kernel, so the picture and the numbers in its
title are exactly the notebook's, then saves that cell's image and prints the
notebook's measurements of attention.

    python scripts/make_readme_figure.py        # needs the "notebooks" extra; a few minutes
"""

from __future__ import annotations

import base64
import os
import pathlib
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06_cluttered_digits.ipynb"
OUT = ROOT / "docs" / "images" / "attention_maps.png"
MARKER = "# readme figure:"


def main() -> None:
    # The kernel imports minibam from this checkout, as tests/test_notebooks.py does.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    tagged = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(MARKER)]
    if len(tagged) != 1:
        raise SystemExit(f"{NOTEBOOK.name}: expected one cell starting {MARKER!r}, found {len(tagged)}")
    images = [o["data"]["image/png"] for o in tagged[0].outputs if "image/png" in o.get("data", {})]
    if len(images) != 1:
        raise SystemExit(f"{NOTEBOOK.name}: the {MARKER!r} cell drew {len(images)} images, expected one")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(base64.b64decode(images[0]))
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("name") == "stdout" else ""
            if "peak in box" in text or "chance rate" in text or "best fixed cell" in text:
                print(text.rstrip())
    print(f"wrote {OUT.relative_to(ROOT)} (notebook ran in {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
