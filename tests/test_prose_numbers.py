"""Measured numbers come from the code that measures them, never from typed prose.

The rule (notebooks/README.md, "Writing or changing a notebook"): a notebook's Markdown
cells, the README and the notebooks page of the docs state no measured number. A
notebook prints each number from the cell that measures it, and a docs page that needs
one takes it from the executed notebook at build time
(``{{ notebook_output("NAME", "MARKER") }}``, scripts/mkdocs_hooks.py). These tests:

- find measured-looking numbers (percentages, "a ± b", times, ratios "1.6 ×", numbers
  in e-notation) in that prose, so a hand-typed result cannot come back;
- check the build's insertion on a small notebook: what the page shows is what the
  cell printed;
- check notebook 6's printed summary against itself, where an executed copy exists:
  each printed mean and sample standard deviation is that of the printed per-seed
  values, and the bar of its check is above the strongest no-learning rule.

tests/test_docs_site.py checks the built notebooks page against the executed notebook.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# What a measured number looks like in prose. Constants of a set-up (400 steps, a
# momentum of 0.01, "Python 3.10+") do not match; results do.
MEASURED = re.compile(
    r"\d(?:[.,]\d+)?\s*(?:\\?%|per\s?cent)"          # 81%, 6.25 \%
    r"|\d\s*\\?%?\s*(?:±|\\pm)\s*\d"                  # 81 ± 6, 81% ± 6%
    r"|\b\d+(?:\.\d+)?\s*(?:ms|s|min)\b(?!-)"        # 145 s, 6.4 ms
    r"|\b\d+\.\d+\s*(?:×|x\b|\\times\s*(?:PyTorch|faster|slower))"  # 0.89 ×
    r"|\b\d(?:\.\d+)?e-\d+\b"                         # 2.6e-15
)

_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
RUN_NOTEBOOKS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RUN_NOTEBOOKS)


def _measured(text: str) -> list[str]:
    return [text[max(0, m.start() - 40):m.end() + 10].replace("\n", " ") for m in MEASURED.finditer(text)]


def test_the_pattern_finds_what_the_old_prose_typed() -> None:
    """The pattern is not vacuous: sentences of the old README and notebook 6 match."""
    for sentence in ("mean 81% ± 6%, against a chance rate of 6.25%",
                     "used 0.6-1.0x PyTorch's CPU time", "| the docs build | 142 s |",
                     "max |difference| = 2.6e-15", "78% ± 0.5%"):
        assert _measured(sentence), sentence
    for sentence in ("400 steps of 64 fresh canvases", "a momentum of 0.01", "Python 3.10+",
                     "torch==2.13.0", "$8\\times8$ digits", "the 1.6-2 range of dilations"):
        assert not _measured(sentence), sentence


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_text_states_no_measured_number(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = [(i, hit) for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "markdown"
             for hit in _measured("".join(cell["source"]))]
    assert not found, (f"{path.name}: Markdown cells state measured numbers; print them from "
                       f"the cell that measures them instead: {found}")


@pytest.mark.parametrize("page", ["README.md", "docs/notebooks.md", "notebooks/README.md"])
def test_front_pages_state_no_measured_number(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks: commands and examples
    assert not _measured(text), f"{page} states measured numbers: {_measured(text)}"


def test_readme_is_a_front_page() -> None:
    """What minibam is, the two commands, a first BAM, where to read on; no history."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for heading in ("## Two commands", "## A first BAM", "## Where to read on", "## How to cite"):
        assert heading in readme
    assert "minibam check" in readme and "bash scripts/test.sh" in readme
    for history in ("this round", "fell by", "previous one", "was tried"):
        assert history not in readme.lower(), history


def _hooks():
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_inserts_what_the_cell_printed() -> None:
    nbformat = pytest.importorskip("nbformat")
    hooks = _hooks()
    cell = nbformat.v4.new_code_cell("# summary: the numbers\nprint(0.25)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="accuracy 25.0% ± 1.0%\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="a warning\n")]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), cell])
    page = 'Before.\n\n{{ notebook_output("06_cluttered_digits", "summary") }}\n\nAfter.'
    out = hooks.insert_outputs(page, lambda name: notebook)
    assert out == "Before.\n\n```text\naccuracy 25.0% ± 1.0%\n```\n\nAfter."
    with pytest.raises(Exception, match="one code cell"):
        hooks.insert_outputs('{{ notebook_output("x", "nothing") }}', lambda name: notebook)


def test_docs_pages_insert_only_cells_that_exist() -> None:
    """Every {{ notebook_output(...) }} of the docs names a notebook and a marked cell."""
    calls = []
    for page in (ROOT / "docs").rglob("*.md"):
        calls += re.findall(r'notebook_output\("([\w-]+)",\s*"([\w -]+)"\)', page.read_text(encoding="utf-8"))
    assert ("06_cluttered_digits", "summary") in calls
    for name, marker in calls:
        notebook = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        marked = [c for c in notebook["cells"] if c["cell_type"] == "code"
                  and "".join(c["source"]).lstrip().startswith(f"# {marker}:")]
        assert len(marked) == 1, f"notebooks/{name}.ipynb has {len(marked)} cells marked '# {marker}:'"


# ---------------------------------------------------------------------------------------
# notebook 6's printed numbers, where an executed copy exists
# ---------------------------------------------------------------------------------------

_PERCENT = r"(-?\d+\.\d)%"


def _executed_06():
    pytest.importorskip("nbformat")
    notebook = RUN_NOTEBOOKS.fresh_copy(ROOT / "notebooks" / "06_cluttered_digits.ipynb")
    if notebook is None:
        pytest.skip("no fresh executed copy of notebook 6 (python scripts/run_notebooks.py)")
    return notebook


def _stdout(notebook) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def test_notebook_6_means_and_sample_sds_are_those_of_its_seeds() -> None:
    import numpy as np

    text = _stdout(_executed_06())
    rows = re.findall(r"^\s*(BAM|CBAM)\s+after:\s+" + r"\s+".join([_PERCENT] * 3)
                      + r"\s+mean " + _PERCENT + " ± " + _PERCENT, text, re.M)
    assert {r[0] for r in rows} == {"BAM", "CBAM"}, "the summary's per-seed lines are missing"
    for _, *numbers in rows:
        seeds, mean, sd = np.array(numbers[:3], float), float(numbers[3]), float(numbers[4])
        assert abs(seeds.mean() - mean) <= 0.1
        assert abs(seeds.std(ddof=1) - sd) <= 0.1  # the sample sd, not the population sd


def test_notebook_6_bar_is_above_every_rule_that_ignores_the_image() -> None:
    text = _stdout(_executed_06())
    rules = dict(re.findall(r"(chance|position prior|best fixed cell) (\d+\.\d+)%", text))
    assert set(rules) == {"chance", "position prior", "best fixed cell"}
    bar = re.search(r"3 standard errors above it: (\d+\.\d)%", text)
    assert bar and float(bar.group(1)) > max(map(float, rules.values()))
