#!/usr/bin/env bash
# Build the documentation site as CI does, strictly: a broken link, a missing page or a
# docstring mkdocstrings cannot render is an error. Also checks that every docs page and
# section the code cites ("docs/derivations/conv.md, "Backward"") exists.
#
#   bash scripts/build_docs.sh                 # creates .venv with the docs and notebooks extras
#                                              # (PyTorch 2.13.0, CPU, included), builds site/
#   DOCS_PYTHON=/path/to/python bash scripts/build_docs.sh   # use an interpreter that has them
#
# Then open site/index.html in a browser: the site works from disk with no network.
# The notebooks compare minibam with PyTorch, so the build needs the pinned PyTorch
# (torch==2.13.0, a CPU build, in the notebooks extra): without it the build stops rather
# than publish "not installed, skipping" (MINIBAM_DOCS_WITHOUT_TORCH=1 builds anyway, for
# a quick local preview). Graphviz's `dot` draws the autograd graphs live when present.
# The build executes every notebook (2 at a time) unless a fresh executed copy exists
# (scripts/run_notebooks.py), and takes MathJax and Mermaid from the npm registry once, with
# npm, into build/docs-vendor/ (scripts/mkdocs_hooks.py).
# Extra arguments go to `mkdocs build` (e.g. --site-dir /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${DOCS_PYTHON:-}" ]]; then
    py="$DOCS_PYTHON"
else
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[docs,notebooks]"
    py=.venv/bin/python
fi

"$py" - <<'PY'
"""Every docs/*.md the package cites must exist, with every quoted section name that
follows the citation (up to the end of its sentence) as a heading of that page."""
import pathlib
import re
import sys

root = pathlib.Path(".")
cite = re.compile(r"docs/([\w/.-]+?\.md)")
problems = []
checked = 0
for source in sorted(root.glob("minibam/**/*.py")):
    text = source.read_text(encoding="utf-8")
    for match in cite.finditer(text):
        page = root / "docs" / match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        where = f"{source}:{line}"
        if not page.is_file():
            problems.append(f"{where}: cites {page}, which does not exist")
            continue
        # The sentence after the citation: up to a full stop, the end of the
        # docstring or a blank line, whichever comes first.
        tail = re.split(r'\.(?:\s|$|")|"""|\n\s*\n', text[match.end():], maxsplit=1)[0]
        tail = re.sub(r"\s+", " ", tail)
        headings = {
            re.sub(r"\s*\{.*\}\s*$", "", h).strip()
            for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", page.read_text(encoding="utf-8"), re.M)
        }
        for section in re.findall(r'"([^"\n]+)"', tail):
            checked += 1
            if section not in headings:
                problems.append(f'{where}: cites section "{section}" of {page}, which has no such heading')
print(f"docs citations: {checked} section references checked")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)

# The derivations name the tests that check them ("Checked by"). Test files or test
# functions that do not exist (yet, or any more) are listed, without failing the build.
named, stale = set(), []
for page in sorted(root.glob("docs/**/*.md")):
    text = page.read_text(encoding="utf-8")
    files = re.findall(r"tests/test_\w+\.py", text)
    named.update(files)
    defined = set()
    for name in set(files):
        if (root / name).is_file():
            defined.update(re.findall(r"^\s*def (test_\w+)", (root / name).read_text(encoding="utf-8"), re.M))
    for test in sorted(set(re.findall(r"`(test_\w+)`", text))):
        if test not in defined:
            stale.append(f"{page.relative_to('docs')}: {test}")
missing = sorted(t for t in named if not (root / t).is_file())
if missing:
    print("note: the docs name test files that do not exist: " + ", ".join(missing))
if stale:
    print("note: the docs name tests not found in the files they cite: " + ", ".join(stale))
PY

start=$SECONDS
NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict "$@"
echo "docs: built in $((SECONDS - start)) s"
