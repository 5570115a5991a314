"""The documentation site as a reader without a network sees it, opened from disk.

The site is the one scripts/test.sh built (``MINIBAM_SITE_DIR``), or one built here with
``mkdocs build --strict`` (it needs the ``docs`` and ``notebooks`` extras, and npm the first
time: scripts/mkdocs_hooks.py). Pages open from ``file://`` in Debian's headless Chromium,
its proxy a dead port so that nothing can be fetched, and the DOM is read after the
page's scripts ran. Without Chromium these tests skip, saying so; scripts/test.sh
installs it when run as root, and under CI as root a missing Chromium is a failure.

Checked: math and diagrams are typeset (no TeX or Mermaid source left in the visible
text, no TeX error); every notebook page shows every figure its notebook drew; no page
loads anything from another host; every link of every page leads to a file (a page,
not a folder, which file:// would show as a listing), and to an anchor that exists;
the API reference has no raw Sphinx roles, no private module, and every public name.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BUILD_NEEDS = ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter", "nbclient", "ipykernel")
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
RUN_NOTEBOOKS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RUN_NOTEBOOKS)
NOTEBOOK_PAGES = [f"notebooks/{p.stem}.html" for p in RUN_NOTEBOOKS.notebooks()]
DERIVATION_PAGES = sorted(f"derivations/{p.stem}.html" for p in (ROOT / "docs" / "derivations").glob("*.md"))
RENDERED_PAGES = ["index.html", "architecture.html", "bam.html", "api.html", *DERIVATION_PAGES, *NOTEBOOK_PAGES]

# TeX left as text: delimiters, common commands, or $...$ that MathJax did not take.
RAW_TEX = re.compile(r"\\[(\[]|\\(frac|sum|partial|mathbf|hat|bar|sigma|odot|qquad|left|right)\b"
                     r"|\$\$|\$[^$\s][^$\n]{0,200}\$")
RAW_MERMAID = re.compile(r"\b(flowchart|graph) (LR|RL|TB|TD|BT)\b|-->")


def _under_ci_as_root() -> bool:
    return bool(os.environ.get("CI")) and hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("MINIBAM_SITE_DIR")
    if given:
        path = Path(given)
        assert (path / "index.html").is_file(), f"MINIBAM_SITE_DIR={given} holds no built site"
        return path
    for name in BUILD_NEEDS:
        if os.environ.get("CI"):
            importlib.import_module(name)
        else:
            pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[docs,notebooks]')")
    path = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stdout + build.stderr
    return path


class _Text(HTMLParser):
    """The text a reader sees: no scripts, styles, drawings, code, MathJax's hidden MathML,
    or the hidden copy of each notebook cell's code that its copy button uses."""

    SKIP_TAGS = {"script", "style", "svg", "pre", "code", "textarea", "template", "mjx-assistive-mml"}
    SKIP_CLASSES = {"clipboard-copy-txt"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, bool]] = []  # (tag, whether its text is hidden)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        hidden = tag in self.SKIP_TAGS or bool(classes & self.SKIP_CLASSES)
        self.open.append((tag, hidden or (bool(self.open) and self.open[-1][1])))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):  # close it, and whatever was left open inside
            if self.open[i][0] == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        if not (self.open and self.open[-1][1]):
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def _dump_dom(page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
             f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0 and "</html>" in result.stdout, (
        f"chromium could not render {page}:\n{result.stderr[-2000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def rendered(site: Path) -> dict[str, str]:
    """Page -> its DOM after its scripts ran, for the pages with math, diagrams or notebooks."""
    if CHROMIUM is None:
        reason = ("SITE NOT CHECKED IN A BROWSER: Debian's chromium is not installed "
                  "(apt-get install chromium; scripts/test.sh does it when run as root)")
        if _under_ci_as_root():
            pytest.fail(reason)
        pytest.skip(reason)
    with ThreadPoolExecutor(max_workers=2) as pool:
        doms = pool.map(_dump_dom, [site / page for page in RENDERED_PAGES])
        return dict(zip(RENDERED_PAGES, doms))


@pytest.mark.parametrize("page", ["architecture.html", "bam.html", "api.html", *DERIVATION_PAGES, *NOTEBOOK_PAGES])
def test_math_and_diagrams_are_typeset(page: str, site: Path, rendered: dict[str, str]) -> None:
    source = (site / page).read_text(encoding="utf-8")
    dom = rendered[page]
    text = visible_text(dom)
    tex = RAW_TEX.search(text)
    assert tex is None, f"{page} shows raw TeX: ...{text[max(0, tex.start() - 80):tex.end() + 80]}..."
    mermaid = RAW_MERMAID.search(text)
    assert mermaid is None, f"{page} shows diagram source: ...{text[mermaid.start():mermaid.end() + 80]}..."
    error = re.search(r'<g\b[^>]*data-mml-node="merror"[^>]*>.{0,300}', dom, re.S)
    assert error is None, f"{page} has a formula MathJax could not parse: {error and error.group()}"
    formulas = source.count('class="arithmatex"')
    assert dom.count("<mjx-container") >= formulas, f"{page}: {formulas} formulas, not all typeset"
    diagrams = source.count('<pre class="mermaid">')
    # Material swaps each diagram's source for a <div class="mermaid"> holding the drawing.
    assert dom.count('<div class="mermaid">') == diagrams, f"{page}: {diagrams} diagrams, not all drawn"


def test_the_pages_with_math_and_diagrams_have_some(site: Path) -> None:
    """The checks above would pass on empty pages: these pages do have math and diagrams."""
    assert '<pre class="mermaid">' in (site / "architecture.html").read_text(encoding="utf-8")
    for page in DERIVATION_PAGES[1:]:
        assert 'class="arithmatex"' in (site / page).read_text(encoding="utf-8"), page
    assert any("$" in (site / page).read_text(encoding="utf-8") for page in NOTEBOOK_PAGES)


def _figures(notebook) -> int:
    images = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(1 for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs if any(m in output.get("data", {}) for m in images))


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_notebook_pages_show_their_figures(page: str, site: Path, rendered: dict[str, str]) -> None:
    dom = rendered[page]
    images = re.findall(r'<img\b[^>]*\bsrc="data:image/(?:png|jpeg)[^"]{200,}"', dom)
    drawings = dom.count('class="jp-RenderedSVG')
    path = ROOT / "notebooks" / f"{Path(page).stem}.ipynb"
    notebook = RUN_NOTEBOOKS.fresh_copy(path)
    if notebook is not None:
        assert len(images) + drawings == _figures(notebook), (
            f"{page}: {len(images)} images and {drawings} drawings, the notebook drew {_figures(notebook)}")
    if path.stem != "01_autograd":  # every notebook but the first draws with matplotlib
        assert images, f"{page} shows no figure"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.loads: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        for name in ("src", "href"):
            if tag in ("script", "img", "iframe", "link", "source", "video", "audio") and attrs.get(name):
                self.loads.append(attrs[name])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_links_work_from_disk_and_nothing_is_fetched(site: Path) -> None:
    # 404.html is for a web server, which serves it for any missing path: its links are absolute.
    pages = sorted(p for p in site.rglob("*.html") if p != site / "404.html")
    parsed = {page: _parse(page) for page in pages}
    assert site / "index.html" in parsed and len(parsed[site / "index.html"].links) > 20
    problems = []
    for page, links in parsed.items():
        where = page.relative_to(site)
        for load in links.loads:
            if re.match(r"(https?:)?//", load):
                problems.append(f"{where} loads {load} from another host")
        for href in links.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue  # a link out of the site, for a reader with a network
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.is_file():
                kind = "a folder" if target.is_dir() else "nothing"
                problems.append(f"{where} links to {href}, which is {kind} from file://")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where} links to {href}, whose anchor does not exist")
    assert not problems, "\n".join(problems)


# The public names of the API contract (../shared/API.md), by the module a reader imports
# them from. A module or name that does not exist yet (it is being written) is checked
# as soon as it does.
PUBLIC = {
    "minibam": ["Tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
                "manual_seed", "save", "load"],
    "minibam.functional": ["conv2d", "im2col", "col2im", "linear", "batch_norm", "sigmoid",
                           "relu", "global_avg_pool2d"],
    "minibam.nn": ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "BatchNorm1d",
                   "BatchNorm2d", "ReLU", "Sigmoid", "Flatten", "ChannelGate", "SpatialGate",
                   "BAM", "CBAM"],
    "minibam.manual": ["bam_forward", "bam_backward", "cbam_forward", "cbam_backward"],
    "minibam.verify": ["bam", "cbam", "VARIANTS", "CBAM_VARIANTS", "Report"],
    "minibam.exercises": ["check"],
}


def _resolve(dotted: str) -> object | None:
    """The object a heading id of the API page names, or None."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def test_api_reference_reads_well(site: Path) -> None:
    page = (site / "api.html").read_text(encoding="utf-8")
    text = html.unescape(visible_text(page))
    roles = re.findall(r":(?:class|meth|func|mod|attr|exc|obj|data):`[^`]*`", page)
    assert not roles, f"api.html shows raw Sphinx roles: {sorted(set(roles))}"
    ids = set(re.findall(r'\bid="(minibam[\w.]*)"', page))
    private = sorted(i for i in ids if re.search(r"\._[a-z]", i))
    assert not private, f"api.html documents private names: {private}"
    documented = {id(obj) for obj in map(_resolve, ids) if obj is not None}
    missing = []
    for module_name, names in PUBLIC.items():
        spec = importlib.util.find_spec(module_name)
        if spec is None or ROOT not in Path(spec.origin or "").parents:
            continue  # not written yet (an editable install may see another checkout's)
        module = importlib.import_module(module_name)
        missing += [f"{module_name}.{name}" for name in names
                    if hasattr(module, name) and id(getattr(module, name)) not in documented]
    assert not missing, (
        "api.html lacks public names (add a `::: module` block to docs/api.md): " + ", ".join(missing))
    assert "Tensor" in text


def test_citation_names_minibam_bam_and_cbam() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs extra (MkDocs needs it)")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["title"].startswith("minibam")
    assert citation["authors"] and citation["version"]
    papers = {ref["identifiers"][0]["value"]: ref for ref in citation["references"]}
    assert papers["arXiv:1807.06514"]["title"].startswith("BAM")
    assert papers["arXiv:1807.06521"]["title"].startswith("CBAM")
    for paper in papers.values():
        assert [a["family-names"] for a in paper["authors"]][2:] == ["Lee", "Kweon"]
        assert paper["year"] == 2018
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## How to cite" in readme and "1807.06514" in readme and "1807.06521" in readme


def test_notebooks_page_shows_what_notebook_6_printed(site: Path) -> None:
    """docs/notebooks.md inserts notebook 6's summary at build time: the page must show
    exactly what the executed notebook printed, line by line (tests/test_prose_numbers.py)."""
    page = html.unescape((site / "notebooks.html").read_text(encoding="utf-8"))
    assert "notebook_output(" not in page, "a placeholder was left in the built page"
    notebook = RUN_NOTEBOOKS.fresh_copy(ROOT / "notebooks" / "06_cluttered_digits.ipynb")
    if notebook is None:
        pytest.skip("no fresh executed copy of notebook 6 to compare with")
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("# summary:"))
    printed = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    text = re.sub(r"<[^>]+>", "", page)
    missing = [line for line in printed.splitlines() if line.strip() and line.strip() not in text]
    assert not missing, f"notebooks.html does not show these printed lines: {missing}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_notebook_pages_show_no_skipped_oracle_or_progress_wall(page: str, site: Path) -> None:
    """Every published notebook shows its PyTorch comparison, and no progress bar."""
    source = (site / page).read_text(encoding="utf-8")
    # What the cells printed (not their code, which names the messages it could print).
    outputs = [html.unescape(re.sub(r"<[^>]+>", "", block)) for block in re.findall(
        r'<div class="jp-RenderedText jp-OutputArea-output[^"]*"[^>]*>(.*?)</div>', source, re.S)]
    assert outputs, f"{page}: no printed output found (has the page layout changed?)"
    skipped = [o.strip()[:120] for o in outputs if re.search(r"(PyTorch|torch)\b.*not installed", o)]
    assert not skipped, f"{page} was built without PyTorch (scripts/build_docs.sh installs it): {skipped}"
    stderr = re.findall(r'<div [^>]*data-mime-type="application/vnd\.jupyter\.stderr"[^>]*>(.*?)</div>',
                        source, re.S)
    lines = sum(block.count("\n") for block in stderr)
    assert lines <= 5, f"{page} shows {lines} lines of stderr (a progress bar?)"
    assert not re.search(r'class="[^"]*\bcell-tag\b', source), f"{page} shows cell tags"


def test_no_page_shows_an_unfilled_placeholder(site: Path) -> None:
    """The build fills every {{ notebook_output(...) }} and {{ command_output(...) }}."""
    left = [str(p.relative_to(site)) for p in site.rglob("*.html")
            if re.search(r"\{\{\s*(?:notebook|command)_output\(", p.read_text(encoding="utf-8"))]
    assert not left, f"pages with unfilled placeholders: {left}"
    for name in ("getting-started.html", "cli.html"):
        page = html.unescape((site / name).read_text(encoding="utf-8"))
        assert re.search(r"all \d+ checks passed", page), f"{name} lacks minibam check's output"
