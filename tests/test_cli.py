"""The ``minibam`` command line: check, reference, compare, bench, and bad input.

Most tests call ``main()`` in-process (fast, with capsys); a few run the real
``python -m minibam`` once, to see exit codes and stderr as a shell does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minibam
from minibam import cli
from minibam.cli import main
from minibam.modules.bam import random_bam
from minibam.nn import BAM

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_minibam(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minibam", *argv], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


def table_rows(out: str) -> list[str]:
    """Rows of a check table ("12/34  op ...") or a compare table ("name ... pass")."""
    return [line for line in out.splitlines()
            if re.match(r"\s*\d+/\d+\s", line) or line.endswith((" pass", " FAIL"))]


# ------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["check", "reference", "compare", "bench"])
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert f"usage: minibam {command}" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and command in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and minibam.__version__ in out


def test_importing_minibam_does_not_import_torch():
    code = ("import sys, minibam, minibam.cli, minibam.checks, minibam.checks.reference, minibam.bench; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, cwd=ROOT, timeout=60)


# ------------------------------------------------------------------------ check
def test_check_default_run_passes_as_a_process():
    """The main job, end to end: every op and both BAM variants, exit status 0."""
    done = subprocess_minibam("check", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    ops = {row.split()[1] for row in rows}
    for op in ("add", "matmul", "linear", "sigmoid", "relu", "sum", "mean", "reshape", "transpose",
               "expand", "slice", "conv2d", "batch_norm", "global_avg_pool2d", "bam_combine", "BAM"):
        assert op in ops, op
    assert sum("BAM paper" in r for r in rows) == 1 and sum("BAM official" in r for r in rows) == 1
    assert all(" pass " in r for r in rows)
    assert "checks passed" in done.stdout


def test_check_compares_with_torch_when_installed(capsys):
    pytest.importorskip("torch")
    code, out, _ = run(capsys, "check", "-k", "conv2d", "-k", "batch_norm")
    assert code == 0
    assert "PyTorch 2" in out and "skipped" not in out
    rows = table_rows(out)
    assert len(rows) == 8
    for row in rows:
        fd, vs_torch = (float(v) for v in row.split()[-5:-3])
        assert fd < 1e-5 and vs_torch < 1e-10, row


def test_check_without_torch_says_it_skipped(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "minibam.torch_oracle", raising=False)
    monkeypatch.delattr(minibam, "torch_oracle", raising=False)
    code, out, _ = run(capsys, "check", "-k", "relu", "-k", "linear")
    assert code == 0
    assert "PyTorch comparison skipped (torch is not installed)" in out
    rows = table_rows(out)
    assert len(rows) == 2 and all("skipped" in r for r in rows)


def test_check_no_torch_flag(capsys):
    code, out, _ = run(capsys, "check", "-k", "sigmoid", "--no-torch")
    assert code == 0 and "skipped (--no-torch)" in out


def test_check_fails_on_a_wrong_batch_norm_backward(capsys, monkeypatch):
    """Drop the mean term of the training-mode backward: a bug a sum() loss would miss."""
    from minibam.ops import norm

    correct = norm.BatchNorm.backward

    def wrong(ctx, grad):
        dx, dw, db = correct(ctx, grad)
        if dx is not None and ctx.training:
            dx = dx + (grad - grad.mean(axis=0, keepdims=True)) * 1e-3
        return dx, dw, db

    monkeypatch.setattr(norm.BatchNorm, "backward", staticmethod(wrong))
    code, out, _ = run(capsys, "check", "-k", "batch_norm", "--no-torch")
    assert code == 1
    rows = table_rows(out)
    assert [r.split()[-3] for r in rows] == ["FAIL", "FAIL", "pass"]  # train, train, eval
    assert "worst vs FD: dx" in out and "2 of 3 checks FAILED" in out


def test_check_reports_a_crashing_op_as_a_failed_row(capsys, monkeypatch):
    from minibam.checks import catalogue

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(catalogue.F, "global_avg_pool2d", broken)
    code, out, _ = run(capsys, "check", "-k", "global_avg", "--no-torch")
    assert code == 1
    assert "FAIL global_avg_pool2d" in out and "RuntimeError: boom" in out


def test_check_seed_changes_inputs_but_still_passes(capsys):
    code, out, _ = run(capsys, "check", "-k", "bam_combine", "--seed", "7", "--no-torch")
    assert code == 0 and "seed 7" in out


def test_check_thorough_has_more_cases():
    from minibam.checks import all_cases

    assert len(all_cases(thorough=True)) > 2 * len(all_cases())


# -------------------------------------------------------------------- reference
def make_reference(tmp_path: Path, *extra: str, name: str = "ref.npz") -> tuple[Path, dict]:
    path = tmp_path / name
    code = main(["reference", "--channels", "8", "--shape", "4,5,6", "--reduction", "4",
                 "--out", str(path), *extra])
    assert code == 0
    with np.load(path, allow_pickle=False) as f:
        return path, {k: f[k] for k in f.files}


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_reference_file_holds_every_array(tmp_path, capsys, variant):
    path, arrays = make_reference(tmp_path, "--variant", variant, "--seed", "3")
    out = capsys.readouterr().out
    assert f"wrote {path}" in out
    bam = BAM(8, 4, variant=variant)
    state_keys = list(bam.state_dict())
    param_keys = [k for k, _ in bam.named_parameters()]
    assert {"x", "dy", "y", "dx"} <= set(arrays)
    assert sorted(k[6:] for k in arrays if k.startswith("param.")) == sorted(state_keys)
    assert sorted(k[5:] for k in arrays if k.startswith("grad.")) == sorted(param_keys)
    assert arrays["x"].shape == arrays["dy"].shape == arrays["y"].shape == arrays["dx"].shape == (4, 8, 5, 6)
    assert str(arrays["meta.variant"]) == variant and bool(arrays["meta.training"])
    assert int(arrays["meta.reduction_ratio"]) == 4 and int(arrays["meta.dilation_conv_num"]) == 2
    assert int(arrays["meta.dilation_val"]) == 4 and int(arrays["meta.format_version"]) == 1
    # BatchNorm state is randomised, not PyTorch's defaults.
    bn = "spatial_att.gate_s.gate_s_bn_reduce0"
    assert not np.allclose(arrays[f"param.{bn}.weight"], 1.0)
    assert not np.allclose(arrays[f"param.{bn}.running_var"], 1.0)
    assert not np.allclose(arrays[f"param.{bn}.running_mean"], 0.0)
    # param.* are the buffers *before* the pass: training moved the running statistics.
    assert not np.allclose(arrays[f"param.{bn}.running_mean"], arrays[f"after.{bn}.running_mean"])
    assert int(arrays[f"after.{bn}.num_batches_tracked"]) == int(arrays[f"param.{bn}.num_batches_tracked"]) + 1


def test_reference_is_reproducible_and_seeded(tmp_path):
    _, a = make_reference(tmp_path, "--seed", "5", name="a.npz")
    _, b = make_reference(tmp_path, "--seed", "5", name="b.npz")
    _, c = make_reference(tmp_path, "--seed", "6", name="c.npz")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    assert not np.array_equal(a["param.channel_att.gate_c.gate_c_fc_0.weight"],
                              c["param.channel_att.gate_c.gate_c_fc_0.weight"])


def test_reference_eval_and_float32(tmp_path):
    _, arrays = make_reference(tmp_path, "--eval", "--dtype", "float32", "--dilation-conv-num", "1",
                               "--dilation", "2")
    assert not bool(arrays["meta.training"])
    assert arrays["x"].dtype == arrays["y"].dtype == arrays["dx"].dtype == np.float32
    assert all(arrays[k].dtype == np.float32 for k in arrays if k.startswith("grad."))
    assert "param.spatial_att.gate_s.gate_s_conv_di_0.weight" in arrays
    assert "param.spatial_att.gate_s.gate_s_conv_di_1.weight" not in arrays
    bn = "channel_att.gate_c.gate_c_bn_1"
    assert np.array_equal(arrays[f"param.{bn}.running_mean"], arrays[f"after.{bn}.running_mean"])


@pytest.mark.parametrize("variant,training", [("paper", True), ("official", True), ("paper", False)])
def test_reference_agrees_with_an_independent_torch_bam(tmp_path, variant, training):
    pytest.importorskip("torch")
    from torch_bam import run_reference

    extra = ["--variant", variant, "--dilation", "2"] + ([] if training else ["--eval"])
    _, arrays = make_reference(tmp_path, *extra)
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param.")}
    ref = run_reference(params, arrays["x"], arrays["dy"], variant, training, dilation_val=2)
    np.testing.assert_allclose(arrays["y"], ref["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(arrays["dx"], ref["dx"], rtol=1e-9, atol=1e-12)
    for name, grad in ref["grads"].items():
        np.testing.assert_allclose(arrays[f"grad.{name}"], grad, rtol=1e-8, atol=1e-10, err_msg=name)
    for name, value in ref["running"].items():
        np.testing.assert_allclose(arrays[f"after.{name}"], value, rtol=1e-10, err_msg=name)


# ---------------------------------------------------------------------- compare
def test_compare_accepts_minibams_own_reference(tmp_path, capsys):
    path, _ = make_reference(tmp_path, "--variant", "official", "--dilation", "3")
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--verbose")
    assert code == 0
    assert out.splitlines()[0] == f"minibam compare {path}: PASS: all 34 arrays agree"
    assert "variant=official" in out and "dilation=3" in out
    rows = table_rows(out)
    assert len(rows) == 2 + 20 + 12  # y, dx, 20 gradients, 4 BatchNorms x 3 buffers after
    assert all(r.endswith("pass") for r in rows)
    assert "note:" not in out and "hint:" not in out  # everything came from meta
    # without --verbose: the summary only
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 0 and table_rows(out) == [] and "--verbose for the full table" in out


def test_compare_flags_a_wrong_array(tmp_path, capsys):
    path, arrays = make_reference(tmp_path)
    name = "grad.spatial_att.gate_s.gate_s_conv_di_0.weight"
    arrays[name] = arrays[name] * (1 + 1e-5)
    np.savez(path, **arrays)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--verbose")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith("FAIL: 1 of 44 arrays differ beyond tolerance")
    assert any(line.strip().startswith(f"differs: {name}") for line in lines[:4])  # summary first
    failed = [r for r in table_rows(out) if r.endswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith(name)
    assert "hint:" not in out  # x is not square and nothing was assumed: no misleading hint
    # a looser tolerance accepts it
    assert run(capsys, "compare", str(path), "--rtol", "1e-4")[0] == 0


def test_compare_json(tmp_path, capsys):
    path, arrays = make_reference(tmp_path)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] is True and len(report["rows"]) == 44
    row = report["rows"][0]
    assert {"name", "shape", "max_abs", "max_rel", "mismatched", "size", "worst_index", "passed"} <= set(row)
    assert report["rtol"] == 1e-7 and report["atol"] == 1e-7  # torch.testing.assert_close, float64
    arrays["y"] = arrays["y"] + 1e-3
    np.savez(path, **arrays)
    code, out, _ = run(capsys, "compare", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["passed"] is False
    assert [r["name"] for r in report["rows"] if not r["passed"]] == ["y"]


def test_compare_says_when_a_flag_overrides_the_files_meta(tmp_path, capsys):
    path, _ = make_reference(tmp_path)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--eval")
    assert code == 1
    assert "--eval overrides the file's meta.training = True" in out


def torch_reference_file(path: Path, variant: str, training: bool, dtype, dilation: int = 4,
                         dilated: int = 2, channels: int = 8, reduction: int = 2) -> None:
    """A reference case written by PyTorch code alone (no minibam, no meta.*)."""
    torch = pytest.importorskip("torch")
    from torch_bam import TorchBAM, load_params, random_params

    rng = np.random.default_rng(11)
    params = random_params(channels, reduction, dilated, variant, rng=rng)
    model = load_params(TorchBAM(channels, reduction, dilated, dilation, variant), params)
    model.to(torch.float32 if dtype == np.float32 else torch.float64).train(training)
    x = rng.standard_normal((3, channels, 6, 5)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    y = model(xt)
    y.backward(torch.from_numpy(dy))
    arrays = {"x": x, "dy": dy, "y": y.detach().numpy(), "dx": xt.grad.numpy()}
    arrays.update({f"param.{k}": np.asarray(v) for k, v in params.items()})
    arrays.update({f"grad.{k}": p.grad.numpy() for k, p in model.named_parameters()})
    arrays.update({f"after.{k}": b.numpy() for k, b in model.named_buffers()})
    np.savez(path, **arrays)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compare_accepts_a_file_written_by_pytorch(tmp_path, capsys, variant, training, dtype):
    path = tmp_path / "torch.npz"
    torch_reference_file(path, variant, training, dtype)
    code, out, _ = run(capsys, "compare", str(path), "--verbose")
    assert code == 0, out
    assert f"variant={variant}" in out and "r=2" in out and "dilated convs=2" in out
    # assumptions are only worth saying when they could explain a failure; --json keeps them
    assert "dilation_val not stored" not in out and "mode not stored" not in out
    assert all(r.endswith("pass") for r in table_rows(out))
    notes = json.loads(run(capsys, "compare", str(path), "--json")[1])["notes"]
    assert f"the running means after the pass say {'training' if training else 'eval'}" in " ".join(notes)
    assert len(table_rows(out)) == 2 + (24 if variant == "paper" else 20) + (18 if variant == "paper" else 12)


def test_compare_pytorch_file_with_other_dilation(tmp_path, capsys):
    path = tmp_path / "torch.npz"
    torch_reference_file(path, "paper", True, np.float64, dilation=2, dilated=1, channels=12, reduction=3)
    code, out, _ = run(capsys, "compare", str(path), "--dilation", "2")
    assert code == 0 and "dilated convs=1, dilation=2" in out and "C=12, r=3" in out
    # assuming the wrong dilation or mode is caught, not silently accepted, and the rerun says why
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 1 and "differ beyond tolerance" in out
    assert "dilation_val not stored in the file, assumed 4" in out
    assert "hint: the dilation was assumed (4); with --dilation 2 every array agrees" in out
    assert "a probable cause" not in out  # 6x5 is not a map the released code runs on
    code, out, _ = run(capsys, "compare", str(path), "--dilation", "2", "--eval")
    assert code == 1 and "differ beyond tolerance" in out and "hint:" not in out


def test_compare_hints_at_the_released_pooling_on_a_non_square_map(tmp_path, capsys):
    """A file written by the released code (H x H pooling) on a 6x5... map: non-square fails."""
    torch = pytest.importorskip("torch")
    from torch_bam import ReleasedBAM, random_params

    rng = np.random.default_rng(5)
    params = random_params(8, 2, 2, "official", rng=rng)
    model = ReleasedBAM(8, 2, 2, 4).double()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()})
    x = rng.standard_normal((3, 8, 5, 8))
    dy = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    y = model(xt)
    y.backward(torch.from_numpy(dy))
    arrays = {"x": x, "dy": dy, "y": y.detach().numpy(), "dx": xt.grad.numpy(),
              **{f"param.{k}": v for k, v in params.items()},
              **{f"grad.{k}": p.grad.numpy() for k, p in model.named_parameters()},
              "meta.dilation_val": np.array(4), "meta.training": np.array(True)}
    path = tmp_path / "released.npz"
    np.savez(path, **arrays)
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 1
    assert ("hint: x is 5x8: with the authors' released pooling (only the top-left 5x5 window, avg_pool2d "
            "with kernel H) every array agrees, so the file comes from the released code") in out
    assert "--dilation" not in out  # the dilation came from meta: no hint about it
    # the same file cut to a square map would pass; a wrong dilation on top is not explained by pooling alone
    code, out, _ = run(capsys, "compare", str(path), "--dilation", "3")
    assert code == 1 and "--dilation 3 overrides the file's meta.dilation_val = 4" in out
    assert "a probable cause" in out


# -------------------------------------------------------------------- bad input
def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def bad_files(tmp: Path) -> dict[str, str]:
    good = tmp / "good.npz"
    main(["reference", "--channels", "4", "--shape", "2,3,3", "--reduction", "2", "--out", str(good)])
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    files = {
        "missing": str(tmp / "nope.npz"),
        "directory": str(tmp),
        "text": _write(tmp / "notes.txt", b"hello, not an archive\n"),
        "random bytes": _write(tmp / "noise.npz", np.random.default_rng(0).bytes(300)),
        "truncated": _write(tmp / "cut.npz", good.read_bytes()[:400]),
    }
    np.save(tmp / "single.npy", np.zeros(3))
    files["npy"] = str(tmp / "single.npy")
    np.savez(tmp / "other.npz", weights=np.ones(3), labels=np.arange(3))
    files["other format"] = str(tmp / "other.npz")
    np.savez(tmp / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    files["pickled"] = str(tmp / "pickled.npz")
    np.savez(tmp / "newer.npz", **{**arrays, "meta.format_version": np.array(99)})
    files["newer version"] = str(tmp / "newer.npz")
    np.savez(tmp / "foreign.npz", **{**arrays, "meta.format": np.array("something-else")})
    files["foreign meta"] = str(tmp / "foreign.npz")
    shapes = dict(arrays)
    shapes["param.spatial_att.gate_s.gate_s_conv_final.weight"] = np.zeros((1, 3, 1, 1))
    np.savez(tmp / "shapes.npz", **shapes)
    files["wrong param shape"] = str(tmp / "shapes.npz")
    no_dy = {k: v for k, v in arrays.items() if k != "dy"}
    np.savez(tmp / "no_dy.npz", **no_dy)
    files["no dy"] = str(tmp / "no_dy.npz")
    ints = {**arrays, "x": arrays["x"].astype(np.int64)}
    np.savez(tmp / "ints.npz", **ints)
    files["int x"] = str(tmp / "ints.npz")
    return files


BAD_ARGS = [
    [],
    ["frobnicate"],
    ["check", "--seed", "abc"],
    ["check", "-k", "no_such_op"],
    ["reference", "--channels", "8", "--shape", "4,x,8", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "4,8", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "0,8,8", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "-2,8,8", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "4,8,8", "--variant", "cbam", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "4,8,8", "--out", "{tmp}/r.npz"],  # 8 % 16
    ["reference", "--channels", "8", "--shape", "1,8,8", "--reduction", "2", "--out", "{tmp}/r.npz"],
    ["reference", "--channels", "8", "--shape", "4,8,8", "--reduction", "2", "--out", "{tmp}/no/dir/r.npz"],
    ["reference", "--channels", "8", "--shape", "4,8,8", "--dtype", "float16", "--out", "{tmp}/r.npz"],
    ["reference", "--shape", "4,8,8", "--out", "{tmp}/r.npz"],
    ["compare", "{tmp}/good.npz", "--rtol", "-1"],
    ["compare", "{tmp}/good.npz", "--eval", "--train"],
    ["bench", "--shapes", "4,8,8"],
    ["bench", "--shapes", "1,16,4,4"],
    ["bench", "--shapes", "2,24,4,4"],
    ["bench", "--dtype", "float16"],
    ["bench", "--repeat", "0"],
]


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    files = bad_files(tmp_path)
    capsys.readouterr()
    for kind, path in files.items():
        code, _, err = run(capsys, "compare", path)
        assert_one_line_error(code, err)
        assert "minibam compare" in err, (kind, err)
    for argv in BAD_ARGS:
        code, out, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv))
        assert_one_line_error(code, err)
        assert out == "", argv
    assert not (tmp_path / "r.npz").exists()


def test_bad_input_messages_say_what_is_wrong(tmp_path, capsys):
    files = bad_files(tmp_path)
    capsys.readouterr()
    expected = {
        "missing": "no such file", "other format": "not a BAM reference case",
        "pickled": "not a readable .npz", "npy": "single .npy array",
        "newer version": "format version 99", "wrong param shape": "gate_s_conv_final.weight",
        "no dy": "no dy", "foreign meta": "something-else",
    }
    for kind, words in expected.items():
        _, _, err = run(capsys, "compare", files[kind])
        assert words in err, (kind, err)
    out = str(tmp_path / "r.npz")
    _, _, err = run(capsys, "reference", "--channels", "8", "--shape", "4,x,8", "--out", out)
    assert "--shape" in err and "4,x,8" in err
    _, _, err = run(capsys, "reference", "--channels", "8", "--shape", "4,8,8", "--out", out)
    assert "gate_channel=8" in err and "reduction_ratio=16" in err


def test_bad_input_as_a_process(tmp_path):
    done = subprocess_minibam("compare", str(tmp_path / "missing.npz"))
    assert_one_line_error(done.returncode, done.stderr)
    assert done.stdout == ""


@given(st.text(max_size=12))
def test_parse_shape_accepts_only_positive_triples(text):
    try:
        shape = cli.parse_shape(text, "NHW")
    except cli.argparse.ArgumentTypeError:
        return
    assert len(shape) == 3 and all(isinstance(n, int) and n >= 1 for n in shape)


@given(st.tuples(*[st.integers(1, 10**6)] * 4), st.sampled_from([",", ", ", "x"]))
def test_parse_shape_round_trips(shape, sep):
    assert cli.parse_shape(sep.join(map(str, shape)), "NCHW") == shape
    assert cli.parse_shape(str(shape), "NCHW") == shape


# ------------------------------------------------------------------------ bench
# (the bench command's own tests: tests/test_bench.py)


def test_random_bam_randomises_batch_norm_but_is_seeded():
    a, b = random_bam(16, 4, seed=1), random_bam(16, 4, seed=1)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert np.array_equal(va, vb), key
    running_var = a.state_dict()["spatial_att.gate_s.gate_s_bn_di_1.running_var"]
    assert running_var.min() >= 0.5 and not np.allclose(running_var, 1.0)
