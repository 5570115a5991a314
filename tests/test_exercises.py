"""Exercises: the checker, the diagnosis of known mistakes, the workbook and the grader.

For every exercise: the unsolved stub fails; the correct solution in
``tests/exercise_solutions/`` (written from the derivations, never imported by minibam)
passes; every catalogued mistake fails *and* is named. Then the workbook and the grader
end to end, in real processes: the untouched workbook fails everywhere, one solved
exercise passes alone, and broken submissions (a hang, a 100 GB allocation, a syntax
error, a missing function, a wrong signature) are failed rows, not a crashed grader.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibam.cli import main
from minibam.exercises import EXERCISES, check, find, run_check
from minibam.exercises.grader import find_submissions, only_checks
from minibam.exercises.workbook import WORKBOOK, write_workbook
from minibam.function import Context, Function

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = Path(__file__).parent / "exercise_solutions"
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
NAMES = [e.name for e in EXERCISES]


def solution(name: str):
    return runpy.run_path(str(SOLUTIONS / f"{name}.py"))[name]


def stub(name: str):
    namespace = {"np": np, "Function": Function, "Context": Context}
    exec(find(name).stub, namespace)
    return namespace[name]


def minibam(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minibam", *argv], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


# --------------------------------------------------------------------------- the catalogue


def test_catalogue_in_teaching_order_with_derivations_and_mistakes():
    assert NAMES[:2] == ["unbroadcast", "Div"] and NAMES.index("bam_combine_backward") < NAMES.index("bam_backward")
    assert len(NAMES) == len(set(NAMES)) >= 12
    for exercise in EXERCISES:
        page, _, section = exercise.doc.partition("#")
        text = (ROOT / "docs" / page).read_text()
        assert section, exercise.name
        assert len(exercise.mistakes) >= 2, exercise.name
        for mistake in exercise.mistakes:
            assert (ROOT / "docs" / mistake.doc.partition("#")[0]).exists(), mistake.name
        assert "raise NotImplementedError" in exercise.stub
        assert text  # the page the intro points to exists
    assert (SOLUTIONS / "README.md").exists()
    assert sorted(p.stem for p in SOLUTIONS.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stub_fails_as_not_implemented(name):
    report = run_check(find(name), stub(name))
    assert not report.passed
    assert report.failed_case == 1 and "not implemented yet" in report.problem


@pytest.mark.parametrize("name", NAMES)
def test_correct_solution_passes(name):
    start = time.perf_counter()
    report = run_check(find(name), solution(name))
    assert report.passed, str(report)
    assert time.perf_counter() - start < 5  # the budget for one check on 2 cores


@pytest.mark.parametrize("name,index", [(e.name, i) for e in EXERCISES for i in range(len(e.mistakes))])
def test_every_catalogued_mistake_fails_and_is_named(name, index):
    exercise = find(name)
    mistake = exercise.mistakes[index]
    report = run_check(exercise, mistake.wrong)
    assert not report.passed
    assert report.mistake is mistake, f"diagnosed {report.mistake and report.mistake.name!r}"
    text = str(report)
    assert f"Known mistake: {mistake.name}." in text and f"docs/{mistake.doc}" in text


def test_an_independently_written_mistake_is_recognised():
    """Not the catalogue's own function: a student's col2im that assigns where it should add."""

    def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
        n, c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        z = cols.reshape(n, c, kh, kw, oh, ow)
        out = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
        for i in range(kh):
            for j in range(kw):
                for a in range(oh):
                    for b in range(ow):
                        out[:, :, a * sh + i * dh, b * sw + j * dw] = z[:, :, i, j, a, b]
        return out[:, :, ph:ph + h, pw:pw + w]

    report = run_check(find("col2im"), col2im)
    assert report.mistake is not None and report.mistake.name == "assigns instead of accumulating"

    def batch_norm_backward(grad, x, gamma, eps):  # the evaluation-mode formula, written out
        axes = (0, *range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        x_hat = (x - mu) / np.sqrt(var + eps)
        dx = grad * gamma.reshape(shape) / np.sqrt(var + eps)
        return dx, (grad * x_hat).sum(axis=axes), grad.sum(axis=axes)

    report = run_check(find("batch_norm_backward"), batch_norm_backward)
    assert report.mistake is not None and report.mistake.name.startswith("no mean terms")


def test_docs_page_shows_every_mistake():
    page = (ROOT / "docs" / "exercises.md").read_text()
    for exercise in EXERCISES:
        assert f"`{exercise.name}`" in page
        for mistake in exercise.mistakes:
            assert f'??? failure "{mistake.name}"' in page, mistake.name


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(1, 2**31 - 1))
def test_other_seeds_draw_other_cases_with_the_same_verdicts(seed):
    """The verdicts do not depend on the seed's luck: solutions pass, mistakes are named
    (the whole BAM, slower, is covered by the seed-0 tests above)."""
    for exercise in (e for e in EXERCISES if e.name != "bam_backward"):
        assert run_check(exercise, solution(exercise.name), seed).passed, exercise.name
        for mistake in exercise.mistakes:
            assert run_check(exercise, mistake.wrong, seed).mistake is mistake, mistake.name


# --------------------------------------------------------------------------- the checker's words


def test_check_finds_the_exercise_by_name_prints_and_returns(capsys):
    unbroadcast = solution("unbroadcast")
    assert check(unbroadcast) is True
    assert "unbroadcast: passed all" in capsys.readouterr().out
    assert check("unbroadcast", stub("unbroadcast")) is False
    out = capsys.readouterr().out
    assert "FAILED on case 1" in out and "not implemented yet" in out

    def nothing_like_an_exercise(x):
        return x

    with pytest.raises(ValueError, match="no exercise named 'nothing_like_an_exercise'.*unbroadcast"):
        check(nothing_like_an_exercise)
    with pytest.raises(TypeError):
        check(3)


def test_a_students_exception_is_reported_with_their_lines_only(capsys):
    def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
        n, c, h, w = input_shape
        return np.zeros((n, c, h, w)) + cols.reshape(n, c, h, w)  # the student's bug

    assert check(col2im) is False  # reported, not raised
    out = capsys.readouterr().out
    assert "your code raised ValueError: cannot reshape" in out
    assert "Traceback (your code only):" in out
    assert "test_exercises.py" in out and "cols.reshape(n, c, h, w)" in out
    assert "numpy" not in out.split("Traceback")[1].split("Hint")[0]  # library frames trimmed
    assert "minibam/" not in out.split("Traceback")[1].split("Hint")[0]


def test_wrong_shape_and_dtype_are_said_as_such():
    def unbroadcast(grad, shape):
        return grad

    report = run_check(find("unbroadcast"), unbroadcast)
    assert "`grad_x` has the wrong shape: yours (2, 3, 4), expected (3, 1)" in report.problem

    right = solution("unbroadcast")

    def unbroadcast(grad, shape):  # noqa: F811
        return right(grad, shape).astype(np.float32)

    report = run_check(find("unbroadcast"), unbroadcast)
    assert "`grad_x` has the wrong dtype: yours float32, expected float64" in report.problem


def test_wrong_values_name_the_case_the_worst_element_and_both_values():
    right = solution("conv2d_backward")

    def conv2d_backward(grad, x, weight, stride, padding, dilation):
        gx, gw, gb = right(grad, x, weight, stride, padding, dilation)
        gw = gw.copy()
        gw[0, 0, 0, 0] += 1.0
        return gx, gw, gb

    report = run_check(find("conv2d_backward"), conv2d_backward)
    assert not report.passed and report.mistake is None
    text = str(report)
    assert "FAILED on case 1 of" in text and "stride=(1, 2)" in text and "dilation=(2, 1)" in text
    assert "`grad_weight`: 1 of" in text and "worst at index (0, 0, 0, 0)" in text
    assert "finite differences:" in text and "Hint:" in text


def test_changing_an_argument_in_place_fails():
    def global_avg_pool2d_backward(grad, x_shape):
        n, c, h, w = x_shape
        grad /= h * w  # in place: the caller's array changes
        return np.broadcast_to(grad[:, :, None, None], x_shape).copy()

    report = run_check(find("global_avg_pool2d_backward"), global_avg_pool2d_backward)
    assert "changed its argument `grad` in place" in report.problem


def test_a_sum_loss_would_pass_the_batch_norm_mistake_but_the_checker_does_not():
    exercise = find("batch_norm_backward")
    no_mean_terms = exercise.mistakes[0].wrong
    x = np.random.default_rng(0).standard_normal((4, 3))
    gamma = np.ones(3)
    ones = np.ones_like(x)  # the upstream gradient of y.sum()
    reference = exercise.reference(ones, x, gamma, 1e-5)[0]
    assert np.allclose(reference, 0, atol=1e-12)  # the true gradient is zero ...
    assert not np.allclose(no_mean_terms(ones, x, gamma, 1e-5)[0], 0)  # ... this one is not, yet
    assert not run_check(exercise, no_mean_terms).passed  # random upstream: caught


# --------------------------------------------------------------------------- workbook and grader


@pytest.fixture(scope="module")
def workbook(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("class") / "untouched"
    write_workbook(folder)
    return folder / WORKBOOK


def with_solved(workbook: Path, target: Path, names: list[str], replace: dict[str, str] | None = None) -> Path:
    """A copy of the workbook with the named stubs replaced by the solutions (or by code)."""
    notebook = json.loads(workbook.read_text())
    code = {name: (SOLUTIONS / f"{name}.py").read_text() for name in names} | (replace or {})
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        for name, text in code.items():
            if cell["cell_type"] == "code" and (f"def {name}(" in source or f"class {name}(" in source):
                cell["source"] = text.splitlines(keepends=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook))
    return target


def test_workbook_has_stubs_checks_and_links_and_no_solution(workbook):
    notebook = json.loads(workbook.read_text())
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    text = "".join("".join(c["source"]) for c in notebook["cells"])
    for exercise in EXERCISES:
        assert f"check({exercise.name})" in code
        assert f"docs/{exercise.doc.partition('#')[0]}" in text
    assert sum("raise NotImplementedError" in c for c in code) == len(EXERCISES)
    assert "exercise_solutions" not in text and "manual.bam_backward" not in "".join(code)
    assert notebook["nbformat"] == 4


def test_start_refuses_a_folder_holding_the_workbook_and_writes_nothing(workbook, capsys):
    before = workbook.read_bytes(), sorted(workbook.parent.iterdir())
    assert main(["exercises", "start", str(workbook.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds minibam-exercises.ipynb" in err
    assert (workbook.read_bytes(), sorted(workbook.parent.iterdir())) == before


def test_list_in_teaching_order(capsys):
    assert main(["exercises", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == NAMES and all(e["title"] for e in listed)
    assert main(["exercises", "list"]) == 0
    assert f"{len(NAMES)}. {NAMES[-1]}" in capsys.readouterr().out
    for command in (["exercises", "--help"], ["grade", "--help"], ["exercises", "start", "--help"]):
        assert main(command) == 0
        assert f"usage: minibam {command[0]}" in capsys.readouterr().out


def test_grade_untouched_and_one_solved_in_real_processes(workbook, tmp_path):
    solved = with_solved(workbook, tmp_path / "bob" / WORKBOOK, ["col2im"])
    start = time.perf_counter()
    done = minibam("grade", str(workbook.parent), str(solved), "--json")
    elapsed = time.perf_counter() - start
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert all({"submission", "exercise", "passed", "reason"} <= set(r) for r in rows)
    untouched = [r for r in rows if r["submission"] == str(workbook.parent)]
    assert [r["exercise"] for r in untouched] == NAMES
    assert not any(r["passed"] for r in untouched)
    assert all("not implemented yet" in r["reason"] for r in untouched)
    bob = {r["exercise"]: r["passed"] for r in rows if r["submission"] == str(solved)}
    assert [name for name, passed in bob.items() if passed] == ["col2im"]
    assert elapsed < 60


def test_broken_submissions_are_failed_rows_and_the_others_are_still_graded(workbook, tmp_path):
    with_solved(workbook, tmp_path / "class" / "carol" / WORKBOOK, ["Sigmoid"], {
        "unbroadcast": "def unbroadcast(grad, shape)\n    return grad\n",  # syntax error
        "Div": "x = 1\n",  # no Div at all
        "matmul_backward": "def matmul_backward(g, a):\n    return g\n",  # wrong signature
        "reduce_backward": ("import numpy as np\n\ndef reduce_backward(grad, shape, axis, keepdims, op):\n"
                            "    return np.ones((10**11,))  # 800 GB\n"),
        # a magic, a solution, then an exit: the magic is skipped, the exit ends only this cell
        "im2col": f"%matplotlib inline\n{(SOLUTIONS / 'im2col.py').read_text()}\nimport sys\nsys.exit(3)\n",
    })
    with_solved(workbook, tmp_path / "class" / "dave" / WORKBOOK, ["unbroadcast"])
    assert [s.name for s in find_submissions([str(tmp_path / "class")])] == [
        str(tmp_path / "class" / "carol"), str(tmp_path / "class" / "dave")]
    done = minibam("grade", str(tmp_path / "class"), "--json", "--memory", "1024")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    rows = {(Path(r["submission"]).name, r["exercise"]): r for r in json.loads(done.stdout)}
    reason = {k: r["reason"] for k, r in rows.items() if k[0] == "carol"}
    assert "missing: no `unbroadcast` defined" in reason[("carol", "unbroadcast")]
    assert "SyntaxError" in reason[("carol", "unbroadcast")]
    assert "missing: no `Div` defined" in reason[("carol", "Div")]
    assert ("keep the stub's argument names: yours is matmul_backward(g, a), the checker calls "
            "matmul_backward(grad, a, b)") in reason[("carol", "matmul_backward")]
    assert "MemoryError" in reason[("carol", "reduce_backward")]
    assert rows[("carol", "Sigmoid")]["passed"]
    assert rows[("carol", "im2col")]["passed"]
    assert rows[("dave", "unbroadcast")]["passed"]
    assert all("\n" not in r["reason"] for r in rows.values())


def test_a_hanging_submission_is_cut_off_at_the_timeout_and_runs_in_its_folder(workbook, tmp_path):
    hang = with_solved(workbook, tmp_path / "erin" / WORKBOOK, [], {
        # imported from a module beside the notebook: the child runs in the notebook's folder
        "unbroadcast": "from helper import unbroadcast\n",
        "Div": "class Div:\n    @staticmethod\n    def forward(ctx, a, b):\n        while True:\n"
               "            pass\n\n    @staticmethod\n    def backward(ctx, grad):\n        pass\n",
    })
    (hang.parent / "helper.py").write_text((SOLUTIONS / "unbroadcast.py").read_text())
    start = time.perf_counter()
    done = minibam("grade", str(hang.parent), "--timeout", "4", "--json")
    elapsed = time.perf_counter() - start
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    rows = {r["exercise"]: r for r in json.loads(done.stdout)}
    assert rows["unbroadcast"]["passed"]
    assert "timed out" in rows["Div"]["reason"] and "4 s" in rows["Div"]["reason"]
    assert "not implemented yet" in rows["matmul_backward"]["reason"]  # a fresh worker, graded
    assert elapsed < 4 + 15


def test_only_check_cells_are_skipped_by_the_grader():
    assert only_checks("check(col2im)\n") and only_checks("# try it\ncheck('col2im', f);\n")
    assert not only_checks("x = 1\ncheck(f)") and not only_checks("check(f(x))")


def test_grade_bad_input_is_exit_2(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nobody")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["grade", str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--timeout", "0"]) == 2
    capsys.readouterr()


# --------------------------------------------------------------------------- no false pass


def test_a_backward_returning_a_bare_array_fails_as_the_engine_would():
    class Sigmoid(Function):
        @staticmethod
        def forward(ctx, x):
            s = 0.5 * (1 + np.tanh(0.5 * x))
            ctx.save_for_backward(s)
            return s

        @staticmethod
        def backward(ctx, grad):
            (s,) = ctx.saved
            return grad * s * (1 - s)  # not a tuple

    report = run_check(find("Sigmoid"), Sigmoid)
    assert not report.passed
    assert "backward returned one ndarray, not a tuple" in report.problem


def test_state_kept_on_the_class_is_caught_by_two_forwards():
    class Div(Function):
        @staticmethod
        def forward(ctx, a, b):
            Div.saved_ab = (a, b)  # on the class: a second Div node overwrites it
            return a / b

        @staticmethod
        def backward(ctx, grad):
            a, b = Div.saved_ab
            return (solution("unbroadcast")(grad / b, a.shape),
                    solution("unbroadcast")(-grad * a / b**2, b.shape))

    report = run_check(find("Div"), Div)
    assert not report.passed and report.failed_case == 1


def test_a_mean_over_axis_none_that_is_never_divided_fails():
    right = solution("reduce_backward")

    def reduce_backward(grad, shape, axis, keepdims, op):
        if axis is None:
            return np.broadcast_to(grad, shape).copy()  # forgets the 1/n of a mean
        return right(grad, shape, axis, keepdims, op)

    report = run_check(find("reduce_backward"), reduce_backward)
    assert not report.passed and report.params["axis"] is None and report.params["op"] == "mean"


def test_an_overflow_is_named_only_when_the_form_matches():
    class Sigmoid(Function):
        @staticmethod
        def forward(ctx, x):
            s = 1 - 1 / (1 + np.exp(x))  # overflows at +1000, but ends with the right value
            ctx.save_for_backward(s)
            return s

        @staticmethod
        def backward(ctx, grad):
            (s,) = ctx.saved
            return (grad * s * (1 - s),)

    report = run_check(find("Sigmoid"), Sigmoid)
    assert not report.passed and report.mistake is None  # not "exp(x) / (1 + exp(x)) ... inf/inf"
    text = str(report)
    assert "FloatingPointError: overflow encountered in exp" in text
    assert "floating-point warnings are errors here" in text and "inf / inf" not in text
    assert run_check(find("Sigmoid"), find("Sigmoid").mistakes[1].wrong).mistake is find("Sigmoid").mistakes[1]


def test_a_renamed_parameter_is_told_to_keep_the_stubs_names():
    right = solution("unbroadcast")

    def unbroadcast(g, shape):
        return right(g, shape)

    report = run_check(find("unbroadcast"), unbroadcast)
    assert not report.passed
    assert report.problem.startswith("keep the stub's argument names: yours is unbroadcast(g, shape)")
    assert "Hint: keep the stub's function name and argument names" in str(report)

    def unbroadcast(*args, **kwargs):  # noqa: F811 - accepts the names: fine
        return right(**kwargs)

    assert run_check(find("unbroadcast"), unbroadcast).passed


def test_minibams_own_implementation_does_not_pass_check():
    from minibam.functional import im2col

    report = run_check(find("im2col"), im2col)
    assert not report.passed and report.failed_case is None
    assert "minibam.ops.conv.im2col" in report.reason and "its answers are right" in report.reason

    def col2im(cols, input_shape, kernel_size, stride, padding, dilation):  # a wrapper
        from minibam.functional import col2im as theirs

        return theirs(cols, input_shape, kernel_size, stride, padding, dilation)

    assert "minibam.ops.conv.col2im" in run_check(find("col2im"), col2im).reason
    # using minibam's im2col inside conv2d_backward is allowed, as the exercise says
    assert run_check(find("conv2d_backward"), solution("conv2d_backward")).passed


def test_every_own_entry_names_minibams_code():
    """Each exercise's ``own`` entries resolve (a moved op must move here too)."""
    from minibam.exercises.calling import own_code

    for exercise in EXERCISES:
        codes, prefixes = own_code(exercise.own)
        wanted = sum(":" in spec for spec in exercise.own)
        assert len(set(codes.values())) == wanted, exercise.name
        assert len(prefixes) > sum(":" not in spec for spec in exercise.own) or not exercise.own


def test_reaching_minibams_implementation_at_run_time_is_seen():
    """Through the engine (a Tensor graph) or by inheriting minibam's Function: the trace of
    the calls sees it, where no import names it."""
    import minibam
    from minibam.ops.activation import Sigmoid as Theirs

    def reduce_backward(grad, shape, axis, keepdims, op):
        x = minibam.Tensor(np.zeros(shape), requires_grad=True)
        y = x.sum(axis=axis, keepdims=keepdims) if op == "sum" else x.mean(axis=axis, keepdims=keepdims)
        y.backward(grad)
        return x.grad

    report = run_check(find("reduce_backward"), reduce_backward)
    assert not report.passed and "minibam.ops.reduce.Sum" in report.reason

    class Sigmoid(Theirs):
        pass

    assert "minibam.ops.activation.Sigmoid" in run_check(find("Sigmoid"), Sigmoid).reason


def test_the_source_scan_never_runs_what_it_reads():
    """``minibam.__main__`` runs the command line when imported: naming it in a notebook
    must not make the grader import it."""
    import sys as _sys

    from minibam.exercises.scan import flags

    _sys.modules.pop("minibam.__main__", None)
    source = "import minibam.__main__\nimport minibam.ops.conv as C\ndef col2im(*a):\n    return C.col2im(*a)\n"
    found = flags([("work.ipynb [cell 2]", source)], EXERCISES)
    assert "minibam.__main__" not in _sys.modules
    assert found == {"col2im": "cell 2 uses minibam's own implementation (minibam.ops.conv.col2im)"}
