"""verify.cbam: a user's PyTorch CBAM checked against the released code, and each common
port mistake named. The modules are written in plain PyTorch in tests/torch_cbam.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch_cbam import RenamedCBAM, TorchCBAM, cbam_with_bug  # noqa: E402

from minibam import verify  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
C, R = 16, 4
BUGS = ["missing-sigmoid", "missing-spatial-sigmoid", "avg-twice", "unshared-mlp", "non-adaptive-pool"]


def test_the_released_cbam_passes_with_every_array_compared():
    report = verify.cbam(TorchCBAM(C, R))
    assert report.passed and report.variant == report.closest == "released", report
    assert report.first_divergence is None
    fp = report.fingerprint
    assert (fp["C"], fp["r"], fp["pool_types"], fp["names"]) == (C, R, "avg,max", "the authors' names")
    names = {r.name.split(" ", 2)[-1] for r in report.rows}
    assert {"y", "dx", "grad.ChannelGate.mlp.1.weight", "grad.ChannelGate.mlp.3.bias",
            "grad.SpatialGate.spatial.conv.weight", "grad.SpatialGate.spatial.bn.weight",
            "after.SpatialGate.spatial.bn.running_var"} <= names
    assert {r.name.split(" ")[0] for r in report.rows} == {"train", "eval"}
    assert any(r.name.startswith("train (3,16,6,10)") for r in report.rows)  # a non-square map
    assert set(verify.CBAM_VARIANTS) == {"released", "paper", *BUGS}
    json.dumps(report.to_dict())


@pytest.mark.parametrize("pools", [("avg", "max", "lp", "lse"), ("max",)])
def test_other_pool_types_and_no_spatial(pools):
    report = verify.cbam(TorchCBAM(C, R, pools, no_spatial=pools == ("max",)), training=(True,))
    assert report.passed, report
    assert report.fingerprint["pool_types"] == ",".join(pools)


@pytest.mark.parametrize("bug", BUGS)
def test_each_port_bug_is_named(bug):
    report = verify.cbam(cbam_with_bug(bug, C, R))
    assert not report.passed
    assert report.variant == report.closest == bug, report
    assert f"port bug {bug!r}" in str(report)


def test_an_unknown_bug_fails_and_says_where():
    report = verify.cbam(cbam_with_bug("no-relu", C, R))
    assert not report.passed and report.variant is None and report.closest == "released"
    assert report.first_divergence == "ChannelGate.mlp.2", report


def test_a_momentum_of_its_own_is_read_and_is_a_deviation():
    report = verify.cbam(cbam_with_bug("momentum-0.1", C, R))
    assert report.passed and report.variant == "released", report
    assert report.fingerprint["bn_momentum"] == 0.1 and "(momentum?)" not in str(report)
    found = next(d for d in report.deviations if d["field"] == "bn_momentum")
    assert (found["module"], found["released"], found["differs_from"]) == (0.1, 0.01, "both")


def test_the_callers_module_is_never_changed():
    model = TorchCBAM(C, R).train()
    model(torch.randn(2, C, 5, 5)).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    verify.cbam(model, training=(True,))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, grads[k]), k


def test_other_names_are_placed_by_structure_or_key_map():
    report = verify.cbam(RenamedCBAM(C, R))
    assert report.passed and report.fingerprint["names"].startswith("structure"), report
    key_map = {"fc1": "ChannelGate.mlp.1", "fc2": "ChannelGate.mlp.3", "conv": "SpatialGate.spatial.conv",
               "norm": "SpatialGate.spatial.bn"}
    assert verify.cbam(RenamedCBAM(C, R), key_map=key_map, training=(False,)).passed
    with pytest.raises(ValueError, match="key_map names keys the module does not have: nope"):
        verify.cbam(RenamedCBAM(C, R), key_map={**key_map, "nope": "x"})


def test_float32_modules_pass_at_float32_tolerance():
    report = verify.cbam(TorchCBAM(C, R), dtype="float32", training=(True,))
    assert report.passed, report


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant must be 'auto' or one of"):
        verify.cbam(TorchCBAM(C, R), variant="nope")
    with pytest.raises(ValueError, match="variant 'paper' does not fit the module's structure .spatial BatchNorm: yes"):
        verify.cbam(TorchCBAM(C, R), variant="paper")
    with pytest.raises(ValueError, match=r"shape \(2, 8, 4, 4\) must be \(N, C=16"):
        verify.cbam(TorchCBAM(C, R), shapes=[(2, C, 4, 4), (2, 8, 4, 4)])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        verify.cbam(object())


def test_cli_verify_module_cbam(tmp_path):
    source = tmp_path / "mine.py"
    source.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                      "from torch_cbam import TorchCBAM, cbam_with_bug\n"
                      "def good(c):\n    return TorchCBAM(c, 4)\n"
                      "def bad(c):\n    return cbam_with_bug('avg-twice', c, 4)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def verify_cli(*argv):
        return subprocess.run([sys.executable, "-m", "minibam", "verify", *argv], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)

    good = verify_cli(f"{source}:good", "--module", "cbam", "--channels", "16", "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["variant"] == "released"
    bad = verify_cli(f"{source}:bad", "--module", "cbam", "--channels", "16")
    assert bad.returncode == 1 and "port bug 'avg-twice'" in bad.stdout
    wrong = verify_cli(f"{source}:good", "--module", "cbam", "--channels", "16", "--variant", "paper")
    assert wrong.returncode == 2 and "variant" in wrong.stderr


def test_the_documented_examples_give_the_documented_verdicts():
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        import my_cbams
    finally:
        sys.path.remove(str(ROOT / "docs" / "examples"))
    good, bad = verify.cbam(my_cbams.MyCBAM(64)), verify.cbam(my_cbams.PortedCBAM(64))
    assert good.passed and good.variant == "released"
    assert not bad.passed and bad.variant == "avg-twice"
    assert any(n.startswith("against 'released': 40 of 48 arrays differ; first divergence ")
               for n in bad.notes), bad.notes


def test_a_module_that_raises_on_a_legal_input_fails_and_says_where():
    class ValueErrorInTraining(TorchCBAM):  # a ValueError of the module's own is a finding too
        def forward(self, x):
            if self.training:
                raise ValueError("Expected more than 1 value per channel")
            return super().forward(x)

    report = verify.cbam(ValueErrorInTraining(C, R), shapes=[(2, C, 8, 8)])
    assert not report.passed
    assert report.raised == f"train (2,{C},8,8): ValueError: Expected more than 1 value per channel"

    class Crashes(TorchCBAM):
        def forward(self, x):
            raise RuntimeError("boom")

    report = verify.cbam(Crashes(C, R))
    assert not report.passed and report.closest is None and report.raised == f"eval (4,{C},8,8): RuntimeError: boom"
    assert str(report).startswith("verify.cbam: FAIL: the module raised on a legal input")
