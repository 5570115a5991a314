"""minibam reference --module cbam and minibam compare on CBAM cases: minibam's own files,
a file written from the PyTorch CBAM of tests/torch_cbam.py, and files that must fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minibam.checks.reference import load_arrays, save_arrays
from minibam.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("extra", [(), ("--eval", "--dtype", "float32", "--pool-types", "lp,lse,max"),
                                   ("--no-spatial",)])
def test_reference_then_compare_passes(capsys, tmp_path, extra):
    path = tmp_path / "case.npz"
    code, out, _ = run(capsys, "reference", "--module", "cbam", "--channels", "8", "--reduction", "2",
                       "--shape", "3,5,7", "--out", str(path), *extra)
    assert code == 0 and "CBAM C=8, r=2" in out
    arrays = load_arrays(path)
    assert "param.ChannelGate.mlp.1.weight" in arrays and str(arrays["meta.format"]) == "minibam-cbam-reference"
    assert ("param.SpatialGate.spatial.conv.weight" in arrays) == ("--no-spatial" not in extra)
    code, out, _ = run(capsys, "compare", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["config"].startswith("CBAM")
    assert {r["name"] for r in report["rows"]} >= {"y", "dx", "grad.ChannelGate.mlp.1.weight"}


def test_a_case_written_from_pytorch_passes_and_a_wrong_one_fails(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from torch_cbam import random_params, run_reference

    rng = np.random.default_rng(0)
    params = random_params(8, 2, rng=rng)
    x, dy = rng.standard_normal((3, 8, 4, 6)), rng.standard_normal((3, 8, 4, 6))
    ref = run_reference(params, x, dy, ("avg", "max"), training=True)
    arrays = {"x": x, "dy": dy, "y": ref["y"], "dx": ref["dx"],
              **{f"param.{k}": v for k, v in params.items()},
              **{f"grad.{k}": v for k, v in ref["grads"].items()},
              **{f"after.{k}": v for k, v in ref["running"].items()}}  # no meta: all inferred
    path = tmp_path / "torch.npz"
    save_arrays(path, arrays)
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 0 and "PASS" in out and "CBAM C=8, r=2" in out, out
    assert torch is not None

    arrays["grad.ChannelGate.mlp.3.bias"] = arrays["grad.ChannelGate.mlp.3.bias"] * 1.01
    save_arrays(path, arrays)
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 1 and "differs: grad.ChannelGate.mlp.3.bias" in out
    assert "hint: the pool types were assumed" in out


def test_compare_with_other_pool_types_says_it_overrides(capsys, tmp_path):
    path = tmp_path / "case.npz"
    run(capsys, "reference", "--module", "cbam", "--channels", "8", "--reduction", "2", "--shape", "2,4,4",
        "--pool-types", "avg,lse", "--out", str(path))
    code, out, _ = run(capsys, "compare", str(path), "--pool-types", "avg,max")
    assert code == 1 and "overrides the file's meta.pool_types = avg,lse" in out


@pytest.mark.parametrize("argv, message", [
    (("--reduction", "2", "--pool-types", "avg,median"), "pool_types must be a non-empty sequence drawn from"),
    (("--reduction", "16"), "gate_channels=8 // reduction_ratio=16 is 0"),
])
def test_reference_refuses_bad_cbam_options(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "reference", "--module", "cbam", "--channels", "8", "--shape", "2,4,4",
                       "--out", str(tmp_path / "x.npz"), *argv)
    assert code == 2 and message in err and not (tmp_path / "x.npz").exists()
