"""Bad input found by hand-testing the CLI as a user (qa): each is one line on stderr and
exit status 2, never a traceback, and nothing is written."""

from __future__ import annotations

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
