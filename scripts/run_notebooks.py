"""Execute the teaching notebooks once, and keep the executed copies for whoever needs them.

    python scripts/run_notebooks.py             # execute every stale notebooks/*.ipynb, 2 at a time
    python scripts/run_notebooks.py --jobs 1 notebooks/04_bam.ipynb

The committed notebooks carry no outputs (scripts/strip_notebooks.py). Two things need
them executed: the documentation site, which shows every notebook with its figures, and
tests/test_notebooks.py, which fails on any error, warning or missing figure. Both ask
``executed(path)`` here, which runs a notebook only when no fresh executed copy exists.
A copy is fresh when its fingerprint matches: the notebook's bytes, every minibam source
file and the Python version. Changing any of them runs the notebook again, so a copy can
never show what older code printed. The copies live in build/executed/notebooks/
(ignored by git; delete it to force a re-run).

Each notebook runs in a fresh kernel that imports minibam from this checkout (the
repository root goes first on the kernel's PYTHONPATH), with one BLAS thread: the
matrices are small, and on a shared 2-core machine BLAS threads that spin-wait for each
other can make a notebook several times slower.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock, as before
    fcntl = None

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# Executed copies mirror the repository's layout: build/executed/notebooks/NAME.ipynb.
CACHE = ROOT / "build" / "executed"
# Per cell. Each notebook takes seconds to a minute, 06's training cell a few minutes
# (more on a busy machine); this only stops a hung kernel.
CELL_TIMEOUT = 900
METADATA_KEY = "minibam_executed"


def notebooks() -> list[Path]:
    """Every notebook of the repository, in reading order."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def fingerprint(path: Path) -> str:
    """What an executed copy of ``path`` depends on: the notebook, minibam's code, Python."""
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted((ROOT / "minibam").rglob("*.py")):
        digest.update(source.relative_to(ROOT).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def copy_path(path: Path) -> Path:
    """Where the executed copy of ``path`` is kept."""
    return CACHE / "notebooks" / path.name


def fresh_copy(path: Path) -> Any | None:
    """The executed copy of ``path`` if it exists and is fresh, else None."""
    import nbformat

    copy = copy_path(path)
    if not copy.is_file():
        return None
    notebook = nbformat.read(copy, as_version=4)
    stamp = notebook.metadata.get(METADATA_KEY, {})
    return notebook if stamp.get("fingerprint") == fingerprint(path) else None


def kernel_env() -> dict[str, str]:
    """The environment a notebook's kernel starts in: this checkout first, one BLAS thread."""
    env = dict(os.environ)
    pythonpath = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    # A progress bar is for a person at a terminal; on a page it is a wall of stderr.
    env["TQDM_DISABLE"] = "1"
    return env


def _last_progress_line(text: str) -> str:
    """The last state of a progress bar: what a terminal would show once it finished."""
    lines = [line for chunk in text.split("\n") for line in chunk.split("\r")]
    last = next((line for line in reversed(lines) if line.strip()), "")
    return last + "\n" if last else ""


def tidy(notebook: Any) -> Any:
    """Make an executed notebook read cleanly as a page, in place.

    - A stderr stream that redraws itself with carriage returns (a progress bar) keeps
      only its final line; repeated stderr outputs of one cell are merged first, so a
      bar drawn in many pieces leaves one line, not one per piece.
    - Cell tags are build instructions, not content: they are removed, so no page shows
      them.
    """
    for cell in notebook.cells:
        cell.metadata.pop("tags", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            is_stderr = output.output_type == "stream" and output.name == "stderr"
            if is_stderr and outputs and outputs[-1].output_type == "stream" and outputs[-1].name == "stderr":
                outputs[-1].text += output.text
            else:
                outputs.append(output)
        for output in outputs:
            if output.output_type == "stream" and output.name == "stderr" and "\r" in output.text:
                output.text = _last_progress_line(output.text)
        cell.outputs = [o for o in outputs if not (o.output_type == "stream" and not o.text)]
    return notebook


def execute(path: Path) -> Any:
    """Run ``path`` top to bottom in a fresh kernel; keep and return the executed notebook.

    Raises nbclient's ``CellExecutionError`` (naming the cell, with its traceback) on any
    error; nothing is kept then. The copy is written beside its target and renamed over
    it, so an interrupted run never leaves half a notebook behind.
    """
    import nbclient
    import nbformat

    fingerprint_before = fingerprint(path)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    tidy(notebook)
    seconds = round(time.perf_counter() - start, 1)
    notebook.metadata[METADATA_KEY] = {"fingerprint": fingerprint_before, "seconds": seconds}
    target = copy_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        nbformat.write(notebook, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return notebook


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock: one process at a time runs (or reads) a notebook.

    scripts/test.sh runs notebook 6 (then the docs build) beside the other notebooks; a
    process that reaches a notebook another one is running waits for that copy instead of
    running the notebook a second time.
    """
    lock = copy_path(path).with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def executed(path: Path) -> tuple[Any, bool]:
    """``(notebook with outputs, whether it was run now)``: the fresh copy, or a new run."""
    with _locked(path):
        notebook = fresh_copy(path)
        if notebook is not None:
            return notebook, False
        return execute(path), True


def execute_all(paths: list[Path], jobs: int = 2) -> list[tuple[Path, Any, bool]]:
    """``executed`` for every path, ``jobs`` kernels at a time; raises the first error."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(executed, paths))
    return [(path, notebook, ran) for path, (notebook, ran) in zip(paths, results)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--jobs", type=int, default=2, help="kernels running at once (default 2)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for path, notebook, ran in execute_all([p.resolve() for p in args.paths] or notebooks(), args.jobs):
        seconds = notebook.metadata[METADATA_KEY]["seconds"]
        print(f"{path.name}: {'ran in' if ran else 'up to date, ran in'} {seconds} s")
    print(f"notebooks: {time.perf_counter() - start:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
