"""Render the autograd graphs the notebooks draw into notebooks/figures/*.svg.

    python scripts/render_notebook_graphs.py        # needs Graphviz's dot and the notebooks extra

The notebooks draw their graphs with ``show(graph, fallback)``: with Graphviz's ``dot``
program installed the graph is drawn live, and without it the notebook shows the SVG
file ``fallback`` instead. This script makes those files from the notebooks themselves:
it runs each notebook that calls ``show`` with one extra cell, right after the cell
that defines ``show``, which redefines it to write the rendered SVG to ``fallback``.
So the fallback pictures are the graphs the notebook computes, not a copy that could
drift. Rerun it when a notebook's graph changes. The notebooks on disk are not modified.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

SAVE_INSTEAD_OF_SHOWING = '''
def show(graph, fallback):
    """Write the graph, rendered by dot, to the fallback SVG file (render_notebook_graphs.py)."""
    from pathlib import Path
    path = Path(fallback)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.pipe(format="svg"))
    print("wrote", path)
'''


def main() -> int:
    import nbclient
    import nbformat

    if shutil.which("dot") is None:
        print("render_notebook_graphs: Graphviz's dot program is not installed", file=sys.stderr)
        return 1
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        defines = [i for i, c in enumerate(notebook.cells)
                   if c.cell_type == "code" and "def show(graph, fallback)" in c.source]
        if not defines:
            continue
        notebook.cells.insert(defines[0] + 1, nbformat.v4.new_code_cell(SAVE_INSTEAD_OF_SHOWING))
        client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute()
        written = [line for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.get("name") == "stdout"
                   for line in out.text.splitlines() if line.startswith("wrote ")]
        print(f"{path.name}: " + (", ".join(w[len("wrote "):] for w in written) or "no graph"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
