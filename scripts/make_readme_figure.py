"""Draw docs/images/attention_maps.png, the picture on the README.

The picture is the attention-map figure of notebooks/06_cluttered_digits.ipynb (the
code cell whose first line is the comment ``# readme figure: ...``; a comment rather
than a cell tag, which the rendered page would show): digits among clutter, and the spatial maps of BAM
before and after training and of CBAM after training, with the digit's box drawn. The
script takes the notebook as scripts/run_notebooks.py executes it (in a fresh kernel, or
its executed copy when neither the notebook nor minibam changed since), so the picture
and the numbers in its title are exactly the notebook's, then saves that cell's image
and prints the notebook's summary.

    python scripts/make_readme_figure.py        # needs the "notebooks" extra; a few minutes
"""

from __future__ import annotations

import base64
import importlib.util
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06_cluttered_digits.ipynb"
OUT = ROOT / "docs" / "images" / "attention_maps.png"
MARKER = "# readme figure:"

_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)


def main() -> None:
    # The executed copy the docs build and the tests share (scripts/run_notebooks.py): run
    # now in a fresh kernel that imports minibam from this checkout, unless a copy of the
    # same notebook and code exists already.
    start = time.perf_counter()
    notebook, ran = run_notebooks.executed(NOTEBOOK)
    tagged = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(MARKER)]
    if len(tagged) != 1:
        raise SystemExit(f"{NOTEBOOK.name}: expected one cell starting {MARKER!r}, found {len(tagged)}")
    images = [o["data"]["image/png"] for o in tagged[0].outputs if "image/png" in o.get("data", {})]
    if len(images) != 1:
        raise SystemExit(f"{NOTEBOOK.name}: the {MARKER!r} cell drew {len(images)} images, expected one")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(base64.b64decode(images[0]))
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("# summary:"):
            print("".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout").rstrip())
    how = f"ran in {time.perf_counter() - start:.0f} s" if ran else "reused its executed copy"
    print(f"wrote {OUT.relative_to(ROOT)} (notebook {how})")


if __name__ == "__main__":
    main()
