"""Bad input found by hand-testing the CLI as a user (qa): each is one line on stderr and
exit status 2, never a traceback, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from minibam.cli import main


def one_line_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


def test_exercises_start_into_an_unwritable_place(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = one_line_error(capsys, "exercises", "start", str(blocker / "sub"))
    assert f"cannot write {blocker / 'sub'}: Not a directory" in err and "Errno" not in err
    err = one_line_error(capsys, "exercises", "start", str(blocker))
    assert "exists and is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_exercises_start_with_an_empty_dir_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "DIR is empty" in one_line_error(capsys, "exercises", "start", "")
    assert list(tmp_path.iterdir()) == []


def test_verify_names_a_directory_and_a_factory_that_exits(tmp_path, capsys):
    pytest.importorskip("torch")
    assert f"{tmp_path}: a directory, not a Python file" in one_line_error(
        capsys, "verify", f"{tmp_path}:Net")
    user = tmp_path / "user.py"
    user.write_text("import sys\n\ndef exits():\n    sys.exit(4)\n\ndef number():\n    return 4\n")
    assert "exits() raised SystemExit: 4" in one_line_error(capsys, "verify", f"{user}:exits")
    assert "number() gave an int, not a torch.nn.Module" in one_line_error(capsys, "verify", f"{user}:number")


def test_exercises_check_says_what_was_passed_wrongly(capsys):
    from minibam.exercises import check

    with pytest.raises(TypeError, match=r"give your solution too, check\('Sigmoid', your_function\)"):
        check("Sigmoid")
    with pytest.raises(TypeError, match="to check as 'unbroadcast', got int"):
        check("unbroadcast", 42)

    def sigmoid(x):  # a plain function where the exercise wants a Function class
        return x

    assert check("Sigmoid", sigmoid) is False
    assert "your function is not a Function class (it has no forward and backward)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def torch_bam():
    pytest.importorskip("torch")
    from torch_bam import TorchBAM

    return TorchBAM(8, 2, 2, 4, "official")


@pytest.mark.parametrize("kwargs, error, words", [
    ({"shapes": [(2, 4, 5, 5)]}, ValueError, "shape (2, 4, 5, 5) has C=4, the module takes C=8"),
    ({"shapes": (2, 8, 5, 5)}, TypeError, "shapes must be a sequence of (N, C, H, W) shapes"),
    ({"shapes": [(2, 8, 5.0, 5)]}, TypeError, "shapes must be a sequence of (N, C, H, W) shapes"),
    ({"shapes": [(10**5, 8, 10**4, 10**4)]}, ValueError, "more than the"),
    ({"seed": -1}, ValueError, "seed must be a non-negative integer, got -1"),
])
def test_verify_refuses_bad_arguments_before_running_anything(torch_bam, kwargs, error, words):
    from minibam import verify

    for function in (verify.bam, verify.cbam):
        with pytest.raises(error) as raised:
            function(torch_bam, **kwargs)
        assert str(raised.value).startswith(f"verify.{function.__name__}: ")
        assert words in str(raised.value)


def test_cli_verify_refuses_a_huge_shape_in_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    user = tmp_path / "user.py"
    tests = str(Path(__file__).parent)
    user.write_text(f"import sys\nsys.path.insert(0, {tests!r})\nfrom torch_bam import TorchBAM\n\n"
                    "def Net():\n    return TorchBAM(8, 2, 2, 4, 'official')\n")
    err = one_line_error(capsys, "verify", f"{user}:Net", "--shape", "100000,8,10000,10000")
    assert "verify.bam: an input of shape (100000, 8, 10000, 10000)" in err and "GiB" in err


def test_verify_cbam_reads_the_order_of_the_channel_pool():
    torch = pytest.importorskip("torch")
    from torch_cbam import SpatialGate, TorchCBAM

    class MeanThenMax(SpatialGate):  # a port that stacks [mean; max] (the paper's order), not [max; mean]
        def forward(self, x):
            pooled = torch.stack([x.mean(dim=1), x.max(dim=1).values], dim=1)
            return x * torch.sigmoid(self.spatial(pooled))

    from minibam import verify

    model = TorchCBAM(16, 4)
    model.SpatialGate = MeanThenMax()
    report = verify.cbam(model, shapes=[(3, 16, 5, 6)], training=(True,))
    # issue 21: the order is part of the structure read, reported as a deviation, not a failure
    assert report.passed and report.variant is None and report.structure["spatial_pools"] == ["avg", "max"]
    order = next(d for d in report.deviations if d["field"] == "spatial_pools")
    assert order["differs_from"] == "released" and order["paper"] == ["avg", "max"]
    # the released order is the released variant
    assert verify.cbam(TorchCBAM(16, 4), shapes=[(3, 16, 5, 6)], training=(True,)).passed


@pytest.mark.parametrize("module", ["bam", "cbam"])
@pytest.mark.parametrize("array", ["x", "dy"])
def test_compare_refuses_a_case_whose_inputs_are_not_finite(tmp_path, capsys, module, array):
    import numpy as np

    good = tmp_path / "good.npz"
    assert main(["reference", "--module", module, "--channels", "8", "--shape", "2,3,4",
                 "--reduction", "4", "--out", str(good)]) == 0
    capsys.readouterr()
    arrays = dict(np.load(good))
    arrays[array] = arrays[array].copy()
    arrays[array][0, 1, 2, 3] = np.nan
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    err = one_line_error(capsys, "compare", str(bad))
    assert f"{array} holds NaN or inf, and minibam runs on it" in err


def test_compare_row_of_a_huge_difference_over_a_tiny_scale_is_inf_without_a_warning():
    import warnings

    import numpy as np

    from minibam.checks.compare import compare

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = compare("a", np.array([1e300]), np.array([1e-320]))
    assert row.max_rel == np.inf and not row.passed


@pytest.mark.parametrize("option", [["--pool-types", "avg"], ["--no-spatial"]])
def test_reference_refuses_cbam_options_for_a_bam(tmp_path, capsys, option):
    out = tmp_path / "case.npz"
    err = one_line_error(capsys, "reference", "--channels", "8", "--shape", "2,3,4", "--reduction", "4",
                         *option, "--out", str(out))
    assert "CBAM's options: add --module cbam" in err and not out.exists()
