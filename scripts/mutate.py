"""Mutation testing of every hand-written backward pass: do the gradient tests catch bugs?

    python scripts/mutate.py                      # every backward in minibam/ops
    python scripts/mutate.py --only attention     # one op family
    python scripts/mutate.py --list               # show the mutants, run nothing

Each mutant changes one thing inside one ``backward`` method of a ``Function`` in
``minibam/ops/*.py``, the kind of slip a person makes when deriving a gradient by hand:

    swap     a + b -> a - b, a - b -> a + b, a * b -> a / b, a / b -> a * b
    drop     a + b -> a, a - b -> a (a dropped term)
    negate   -a -> a
    assign   x += y -> x = y (assignment instead of accumulation), x -= y -> x += y
    number   k -> k + 1 for an integer constant (wrong axis, off-by-one window)
    compare  a > b -> a >= b, a < b -> a <= b
    transpose  a.T -> a

Then the op family's own test file runs (hypothesis "ci" profile, stop at the first
failure): a mutant is *killed* when some test fails or errors, *survives* when all
pass. Survivors are listed with their line so a reader can judge each: either a real
blind spot of the tests, or an equivalent mutant (the change does not alter the
result, e.g. ``a + 0``). The score is killed / all mutants.

Why a script and not mutmut: mutmut 3 mutates whole modules and first runs the whole
suite under its own tracing; restricting it to the backward methods takes a pragma on
every other line. This file needs nothing but the standard library and pytest, and
forks one child per mutant from a parent that has already imported NumPy, PyTorch and
hypothesis, so a mutant costs the tests' own time, not the imports'.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Which test file checks each op family's gradients (default: tests/test_<family>.py).
TESTS = {
    "empty": ["tests/test_reliability.py", "-k", "empty_batch"],
    "pool": ["tests/test_pool.py", "tests/test_pool_cbam.py"],
    "conv_flat": ["tests/test_conv.py"],
}


@dataclass
class Mutant:
    path: Path
    method: str  # Class.backward
    line: int
    kind: str
    before: str
    after: str
    source: str  # the whole mutated module

    def __str__(self) -> str:
        return f"minibam/ops/{self.path.name}:{self.line} {self.method} [{self.kind}] {self.before}  ->  {self.after}"


_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_COMPARES = {ast.Gt: ast.GtE, ast.Lt: ast.LtE, ast.GtE: ast.Gt, ast.LtE: ast.Lt}


def _variants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(kind, replacement) for every mutation of ``node`` itself."""
    if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
        yield "swap", ast.BinOp(node.left, _SWAPS[type(node.op)](), node.right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            yield "drop", node.left
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "negate", node.operand
    elif isinstance(node, ast.AugAssign):
        if isinstance(node.op, ast.Add):
            yield "assign", ast.Assign([node.target], node.value)
        elif isinstance(node.op, ast.Sub):
            yield "swap", ast.AugAssign(node.target, ast.Add(), node.value)
        elif isinstance(node.op, ast.Mult):
            yield "swap", ast.AugAssign(node.target, ast.Div(), node.value)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield "number", ast.Constant(node.value + 1)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARES:
        yield "compare", ast.Compare(node.left, [_COMPARES[type(node.ops[0])]()], node.comparators)
    elif isinstance(node, ast.Attribute) and node.attr == "T":
        yield "transpose", node.value


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().generic_visit(node)


def _backward_functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    """(name, function): every op's ``backward``, and the module-level helpers that
    compute a backward for it (named ``*backward*`` or ``*_grad_*``, e.g. the flat
    layout's ``flat_backward`` or conv's ``_input_grad_by_correlation``)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "backward":
                    yield f"{node.name}.backward", fn
        elif isinstance(node, ast.FunctionDef) and ("backward" in node.name or "_grad_" in node.name):
            yield node.name, node


def mutants(path: Path) -> Iterator[Mutant]:
    tree = ast.parse(path.read_text())
    for name, fn in _backward_functions(tree):
        body = [n for stmt in fn.body for n in ast.walk(stmt)]
        # -1 -> -2 is no mutant: NumPy reads any negative size in a reshape as "the rest".
        negated = {id(n.operand) for n in body if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)}
        for node in body:
            if id(node) in negated:
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            for kind, replacement in _variants(node):
                # Mutate a deep copy, found again by position in the same walk order.
                mutated = copy.deepcopy(tree)
                index = list(ast.walk(tree)).index(node)
                target = list(ast.walk(mutated))[index]
                rep = _variants_copy(target, kind, replacement, node)
                new = ast.fix_missing_locations(_Replace(target, rep).visit(mutated))
                yield Mutant(path, name, node.lineno, kind,
                             ast.unparse(node), ast.unparse(rep), ast.unparse(new))


def _variants_copy(target: ast.AST, kind: str, replacement: ast.AST, original: ast.AST) -> ast.AST:
    """The same mutation built on the copied tree's node (so it shares no children)."""
    for k, r in _variants(target):
        if k == kind and ast.dump(r) == ast.dump(replacement):
            return r
    raise AssertionError(f"mutation {kind} of {ast.unparse(original)} not reproducible")


def tests_for(path: Path) -> list[str]:
    return TESTS.get(path.stem, [f"tests/test_{path.stem}.py"])


def run_tests(args: list[str], timeout: float) -> str:
    """'killed', 'survived' or 'timeout': pytest in a forked child with a fresh minibam."""
    pid = os.fork()
    if pid == 0:  # child
        signal.alarm(int(timeout))
        for name in [m for m in sys.modules if m == "minibam" or m.startswith("minibam.")]:
            del sys.modules[name]
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest

        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *args])
        os._exit(int(code))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
        return "timeout"
    return "survived" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "killed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="op families (file stems) to mutate")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant (default 300)")
    args = parser.parse_args(argv)

    # Mutants are written into a copy of the tree, never into the checkout itself.
    work = Path(tempfile.mkdtemp(prefix="minibam-mutate-"))
    for part in ("minibam", "tests"):
        shutil.copytree(ROOT / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", work)
    files = sorted(p for p in (work / "minibam" / "ops").glob("*.py") if not p.stem.startswith("__"))
    if args.only:
        files = [p for p in files if p.stem in args.only]
    todo = [m for path in files for m in mutants(path)]
    if args.list:
        for m in todo:
            print(m)
        print(f"{len(todo)} mutants")
        shutil.rmtree(work)
        return 0

    os.chdir(work)
    os.environ["PYTHONPATH"] = str(work)
    # The mutants are of the plain ops: the tests must run the plain path, or the plain
    # backward of an op with a fast twin (BamCombine, Conv2d) is never reached and its
    # mutants survive without saying anything about the tests.
    os.environ["MINIBAM_FAST"] = "0"
    sys.path.insert(0, str(work))
    sys.path.insert(0, str(work / "tests"))
    import hypothesis  # imported once, before forking
    import numpy  # noqa: F401

    # The CI profile's examples, but no shrinking: a mutant needs one failing example,
    # not the smallest one, and shrinking is most of the time of a failing test.
    hypothesis.settings.register_profile(
        "mutate", max_examples=15, derandomize=True, deadline=None, database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    os.environ["HYPOTHESIS_PROFILE"] = "mutate"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the copy is removed

    try:
        import torch

        torch.set_num_threads(1)  # threads and fork do not mix
    except ImportError:
        pass

    originals = {path: path.read_text() for path in files}
    counts = {"killed": 0, "survived": 0, "timeout": 0}
    survivors: list[Mutant] = []
    start = time.monotonic()
    try:
        for i, m in enumerate(todo, 1):
            m.path.write_text(m.source)
            outcome = run_tests(tests_for(m.path), args.timeout)
            m.path.write_text(originals[m.path])  # the next mutant starts from the original
            counts[outcome] += 1
            if outcome == "survived":
                survivors.append(m)
            print(f"[{i}/{len(todo)}] {outcome:8} {m}", flush=True)
    finally:
        shutil.rmtree(work)
    killed = counts["killed"] + counts["timeout"]
    print(f"\n{len(todo)} mutants of {len(files)} files: {killed} killed "
          f"({counts['timeout']} by timeout), {counts['survived']} survived; "
          f"score {killed / max(len(todo), 1):.1%}; {time.monotonic() - start:.0f} s")
    for m in survivors:
        print(f"  survived: {m}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
