"""Strip outputs from notebooks so that they are committed clean.

    python scripts/strip_notebooks.py            # strip notebooks/*.ipynb in place
    python scripts/strip_notebooks.py a.ipynb    # strip the given files
    python scripts/strip_notebooks.py --check    # change nothing; exit 1 if any needs stripping

The project keeps notebooks in git without outputs, so that a diff shows only the
changes someone made. Stripping:

- empties every code cell's ``outputs`` and sets its ``execution_count`` to null;
- drops the cell metadata that front ends add on their own (run timings, collapsed or
  scrolled output);
- keeps only ``kernelspec`` and the language name in the notebook metadata, so that
  the Python version of whoever last saved the notebook does not show up in diffs;
- writes the JSON as Jupyter does (one-space indent, sorted keys, UTF-8, a final
  newline).

Only the standard library is used, so the script runs before anything is installed.
The test suite (tests/test_notebooks.py) runs ``--check``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def strip(notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook without outputs, execution counts or volatile metadata (a new dict)."""
    clean = copy.deepcopy(notebook)
    for cell in clean.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        metadata = cell.get("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            metadata.pop(key, None)
    metadata = clean.get("metadata", {})
    kept: dict[str, Any] = {}
    if "kernelspec" in metadata:
        kept["kernelspec"] = metadata["kernelspec"]
    if "name" in metadata.get("language_info", {}):
        kept["language_info"] = {"name": metadata["language_info"]["name"]}
    clean["metadata"] = kept
    return clean


def dumps(notebook: dict[str, Any]) -> str:
    """JSON text in the layout Jupyter itself writes."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        help="notebooks to strip (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if any notebook is not stripped")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        clean = dumps(strip(json.loads(text)))
        if clean == text:
            continue
        dirty.append(path)
        if not args.check:
            path.write_text(clean, encoding="utf-8")
    for path in dirty:
        print(f"{'not stripped' if args.check else 'stripped'}: {path}")
    if args.check and dirty:
        print("run: python scripts/strip_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
