"""MkDocs hooks (mkdocs.yml: hooks) that make the site whole without a network.

1. **Renderers served from the site.** MathJax (math), Mermaid (diagrams) and
   iframe-worker (search from ``file://``) are JavaScript that the reader's browser runs.
   Instead of a CDN at view time, the build takes each from the npm registry once, at a
   pinned version whose tarball must match a pinned SHA-512, and copies the files the site
   needs into ``javascripts/vendor/``. The tarballs come through ``npm pack`` (npm's own
   client), are checked here, and are unpacked into build/docs-vendor/, so later builds
   need no network at all.
2. **Notebooks with their outputs.** Every notebooks/*.ipynb is executed (or its fresh
   executed copy reused: scripts/run_notebooks.py) and handed to mkdocs-jupyter as
   ``notebooks/<name>.ipynb``; each gets a line under "Notebooks" in the navigation, so a
   new notebook needs no edit of mkdocs.yml.
3. **Nothing fetched by the notebook pages.** nbconvert's page template loads MathJax 2 and
   Mermaid from a CDN; those tags are removed, and the site's own MathJax typesets the
   notebooks' math. Mermaid is added only to the pages that draw a diagram.
4. **Notebook links that work in the site.** A notebook links to docs pages and other
   notebooks by their paths in the repository (../docs/symbols.md); in the site those
   become the pages' own addresses, and a notebook's table of contents the ids its
   headings really have.
5. **Measured numbers inserted, not typed.** A docs page may hold
   ``{{ notebook_output("06_cluttered_digits", "summary") }}``: the build replaces it
   with what the cell of that notebook whose first line is ``# summary: ...`` printed in
   this build's execution, so the page shows the numbers the current code gives
   (tests/test_prose_numbers.py checks the built page against the executed notebook).
   ``{{ command_output("minibam check") }}`` does the same for what a command prints.
6. **Pages that read cleanly.** The build refuses to run the notebooks without PyTorch,
   whose comparisons they print (``MINIBAM_DOCS_WITHOUT_TORCH=1`` builds anyway, for a
   quick preview); docs/stylesheets/extra.css keeps notebook outputs on their lines.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.utils import get_relative_url

ROOT = Path(__file__).resolve().parent.parent
VENDOR_CACHE = ROOT / "build" / "docs-vendor"
SITE_VENDOR = "javascripts/vendor"
NOTEBOOKS_SECTION = "Notebooks"

# npm package: (version, the tarball's SHA-512 as npm states it, {file in tarball: name in site}).
# To upgrade: change the version, and take the integrity from `npm view NAME@VERSION dist.integrity`.
VENDORED = {
    "mathjax": (
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        # The SVG output draws glyphs as paths: no web fonts to load (Chromium refuses
        # fonts from file:// pages), and every TeX extension built in, so nothing is
        # loaded on demand.
        {"package/es5/tex-svg-full.js": "tex-svg-full.js", "package/LICENSE": "LICENSE"},
    ),
    "mermaid": (
        # The major version the Material theme is written against.
        "11.17.2",
        "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg==",
        {"package/dist/mermaid.min.js": "mermaid.min.js", "package/LICENSE": "LICENSE"},
    ),
    "iframe-worker": (
        # Material's offline search runs its worker in an iframe where file:// forbids workers.
        "1.0.4",
        "sha512-roeaaI+Lg1LJNfgpCjoRe/+WzEjy9+Z08LoEvu85MCPbBjwm+qXz8Ag5U05lHa6V1CysZyGzE0SOkAtSUA5q7Q==",
        {"package/shim/index.js": "shim.js", "package/LICENSE": "LICENSE"},
    ),
}


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_notebooks = _load_script("run_notebooks")


# --- vendored JavaScript ---------------------------------------------------------------

def _vendor_dir(name: str) -> Path:
    version = VENDORED[name][0]
    return VENDOR_CACHE / f"{name}-{version}"


def _fetch(name: str) -> None:
    """Unpack the pinned files of npm package ``name`` into build/docs-vendor/, once."""
    version, integrity, members = VENDORED[name]
    target = _vendor_dir(name)
    if all((target / dest).is_file() for dest in members.values()):
        return
    if shutil.which("npm") is None:
        raise PluginError(
            f"the docs serve {name} {version} from the site itself and take it from the npm "
            "registry once, with npm, which is not installed (Debian: apt-get install npm)")
    VENDOR_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=VENDOR_CACHE) as tmp:
        packed = subprocess.run(
            ["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", tmp],
            capture_output=True, text=True, check=False)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if packed.returncode != 0 or len(tarballs) != 1:
            raise PluginError(f"npm pack {name}@{version} failed:\n{packed.stderr.strip()}")
        algorithm, _, expected = integrity.partition("-")
        actual = base64.b64encode(hashlib.new(algorithm, tarballs[0].read_bytes()).digest()).decode()
        if actual != expected:
            raise PluginError(f"{tarballs[0].name}: {algorithm} is {actual}, expected {expected}")
        unpacked = Path(tmp) / "files"
        unpacked.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for member, dest in members.items():
                source = tar.extractfile(member)
                if source is None:
                    raise PluginError(f"{tarballs[0].name} has no file {member}")
                (unpacked / dest).write_bytes(source.read())
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # whole, or not at all


def vendored_files() -> dict[str, Path]:
    """Site path -> file on disk, for every vendored file (fetching what is missing)."""
    files = {}
    for name, (_, _, members) in VENDORED.items():
        _fetch(name)
        for dest in members.values():
            files[f"{SITE_VENDOR}/{name}/{dest}"] = _vendor_dir(name) / dest
    return files


# --- hooks -------------------------------------------------------------------------------

def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # Before Material's offline plugin looks: it adds a CDN copy of this shim when none is set.
    config.extra["polyfills"] = [f"{SITE_VENDOR}/iframe-worker/shim.js"]
    for item in config.nav or []:
        if isinstance(item, dict) and NOTEBOOKS_SECTION in item:
            section = item[NOTEBOOKS_SECTION]
            if not isinstance(section, list):
                section = item[NOTEBOOKS_SECTION] = [section]
            listed = {entry for entry in section if isinstance(entry, str)}
            section.extend(f"notebooks/{path.name}" for path in run_notebooks.notebooks()
                           if f"notebooks/{path.name}" not in listed)
            break
    else:
        raise PluginError(f'mkdocs.yml: the nav needs a "{NOTEBOOKS_SECTION}" section for the notebooks')
    return config


def _require_torch() -> None:
    """The notebooks print their comparisons with PyTorch; a site without them says
    "not installed, skipping" on every notebook page, so the build stops instead."""
    if os.environ.get("MINIBAM_DOCS_WITHOUT_TORCH") == "1":
        return
    if importlib.util.find_spec("torch") is None:
        raise PluginError(
            "the notebooks compare minibam with PyTorch, which is not installed in the build's "
            "Python: pip install torch==2.13.0 (the notebooks extra has it; scripts/build_docs.sh "
            "installs it), or set MINIBAM_DOCS_WITHOUT_TORCH=1 for a preview without it")


@event_priority(100)  # before mkdocs-jupyter wraps every .ipynb into a page
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, path in vendored_files().items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    _require_torch()
    try:
        executed = run_notebooks.execute_all(run_notebooks.notebooks())
    except Exception as error:  # nbclient's CellExecutionError names the cell and traceback
        raise PluginError(f"a notebook failed to run:\n{error}") from error
    for path, _, _ in executed:
        # A file of its own folder, not a generated one: mkdocs-jupyter reads the path from
        # the folder and the name, which a generated file does not have.
        files.append(File(f"notebooks/{path.name}", src_dir=str(run_notebooks.CACHE),
                          dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    return files


_CDN_SCRIPTS = [
    # nbconvert's MathJax 2 loader (its URL left empty by mkdocs-jupyter) and its config.
    re.compile(r'<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->', re.S),
    # nbconvert's Mermaid loader, which imports Mermaid from a CDN when an output has a diagram.
    re.compile(r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded".*?</script>', re.S),
]


_HEADING_ID = re.compile(r'<h[1-6]\b[^>]*\bid="([^"]+)"')


def on_page_context(context: dict, page: Page, config: MkDocsConfig, nav) -> dict:
    """A notebook's table of contents links to the ids its headings really have.

    mkdocs-jupyter makes the table of contents from a Markdown copy of the notebook, whose
    ids lose inline code (`sum()` in a title), while the page's headings keep it; the
    headings and the entries come in the same order, so each entry takes its heading's id.
    """
    if not page.file.src_uri.endswith(".ipynb"):
        return context
    ids = _HEADING_ID.findall(page.content or "")
    entries = []
    stack = list(reversed(page.toc.items))
    while stack:
        entry = stack.pop()
        entries.append(entry)
        stack.extend(reversed(entry.children))
    if len(entries) != len(ids):
        raise PluginError(f"{page.file.src_uri}: {len(entries)} contents entries, {len(ids)} headings")
    for entry, heading_id in zip(entries, ids):
        entry.id = heading_id
    return context


_NOTEBOOK_OUTPUT = re.compile(r'\{\{\s*notebook_output\("([\w-]+)",\s*"([\w -]+)"\)\s*\}\}')


def cell_output(notebook, marker: str) -> str:
    """The text printed (stdout) by the one code cell whose first line is ``# marker:``."""
    cells = [c for c in notebook.cells if c.cell_type == "code"
             and c.source.lstrip().startswith(f"# {marker}:")]
    if len(cells) != 1:
        raise PluginError(f"expected one code cell starting '# {marker}:', found {len(cells)}")
    text = "".join(o.get("text", "") for o in cells[0].outputs
                   if o.output_type == "stream" and o.name == "stdout")
    if not text.strip():
        raise PluginError(f"the cell '# {marker}:' printed nothing")
    return text.rstrip("\n")


def insert_outputs(markdown: str, notebook_for) -> str:
    """Replace every ``{{ notebook_output("NAME", "MARKER") }}`` with a text block of what
    that notebook's cell printed; ``notebook_for(NAME)`` gives the executed notebook."""
    def block(match: re.Match) -> str:
        name, marker = match.groups()
        return "```text\n" + cell_output(notebook_for(name), marker) + "\n```"
    return _NOTEBOOK_OUTPUT.sub(block, markdown)


def _executed_notebook(name: str):
    path = run_notebooks.NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise PluginError(f"notebook_output: there is no notebooks/{name}.ipynb")
    return run_notebooks.executed(path)[0]


_COMMAND_OUTPUT = re.compile(r'\{\{\s*command_output\("minibam ([\w -]*)"\)\s*\}\}')


def command_output(args: str) -> str:
    """What ``minibam ARGS`` prints, run from this checkout; kept in build/executed/commands/
    and run again only when minibam's code, the arguments or Python change (as the notebooks)."""
    digest = hashlib.sha256(args.encode())
    digest.update(run_notebooks.fingerprint(Path(__file__)).encode())  # minibam's sources, Python
    cache = run_notebooks.CACHE / "commands" / f"{digest.hexdigest()[:16]}.txt"
    if cache.is_file():
        return cache.read_text(encoding="utf-8")
    code = f"import sys; from minibam.cli import main; sys.exit(main({args.split()!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_notebooks.kernel_env(),
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PluginError(f"minibam {args} failed:\n{result.stdout}\n{result.stderr}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(result.stdout, encoding="utf-8")
    return result.stdout


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if "command_output(" in markdown:
        markdown = _COMMAND_OUTPUT.sub(
            lambda m: f"```console\n$ minibam {m.group(1)}\n{command_output(m.group(1)).rstrip()}\n```",
            markdown)
    if "notebook_output(" in markdown:
        markdown = insert_outputs(markdown, _executed_notebook)
    return markdown


_BUNDLE = re.compile(r'<script src="[^"]*assets/javascripts/bundle\.[^"]*"></script>')


# A notebook links to what lies beside it in the repository: docs pages (../docs/x.md)
# and other notebooks (y.ipynb). In the site those are x.html and y.html.
_REPO_LINK = re.compile(r'href="((?:\.\./docs/)?)([\w./-]+?)\.(md|ipynb)(#[^"]*)?"')


def _site_link(match: re.Match, page: Page, files: Files) -> str:
    to_docs, path, suffix, anchor = match.groups()
    if suffix == "md" and not to_docs:
        return match.group(0)  # not a docs page: leave it for the strict link check to judge
    src_uri = f"{path}.md" if to_docs else f"notebooks/{path}.ipynb"
    target = files.get_file_from_path(src_uri)
    if target is None:
        raise PluginError(f"{page.file.src_uri} links to {match.group(0)[6:-1]}, not a page of the site")
    return f'href="{target.url_relative_to(page.file)}{anchor or ""}"'


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        html = _REPO_LINK.sub(lambda m: _site_link(m, page, files), html)
    return html


def on_post_page(output: str, page: Page, config: MkDocsConfig) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        for pattern in _CDN_SCRIPTS:
            output = pattern.sub("", output)
    if 'class="mermaid"' in output:
        # Material draws every diagram with the `mermaid` it finds defined; loaded before
        # Material's own script, so it never reaches for its CDN copy.
        src = get_relative_url(f"{SITE_VENDOR}/mermaid/mermaid.min.js", page.url)
        bundle = _BUNDLE.search(output)
        if bundle is None:
            raise PluginError(f"{page.file.src_uri}: the theme's script tag was not found")
        output = f'{output[:bundle.start()]}<script src="{src}"></script>{output[bundle.start():]}'
    return output
