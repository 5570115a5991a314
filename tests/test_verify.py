"""minibam.verify: a user's PyTorch BAM checked against the known variants.

The modules checked are written in plain PyTorch in tests/torch_bam.py (the variants,
the released code and seeded bugs), not derived from minibam.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_bam import (  # noqa: E402
    RENAMED_KEY_MAP,
    NoSigmoidBAM,
    ReleasedBAM,
    RenamedBAM,
    SumNoBnBAM,
    TorchBAM,
    with_bug,
)

from minibam import verify  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
C, R = 16, 4


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_both_variants_are_recognised(variant):
    report = verify.bam(TorchBAM(C, R, 2, 4, variant))
    assert report.passed, report
    assert report.variant == report.closest == variant and report.first_divergence is None
    assert report.fingerprint["C"] == C and report.fingerprint["r"] == R
    assert report.fingerprint["dilated_convs"] == 2 and report.fingerprint["names"] == "the authors' names"
    names = {r.name.split(" ", 2)[-1] for r in report.rows}
    assert {"y", "dx", "grad.channel_att.gate_c.gate_c_fc_0.weight",
            "after.spatial_att.gate_s.gate_s_bn_di_1.running_var"} <= names
    modes = {r.name.split(" ")[0] for r in report.rows}
    assert modes == {"train", "eval"}
    # the default shapes include a non-square map
    assert any(h != w for _, _, h, w in verify.default_shapes(C))
    # a bias right before a training-mode batch norm: exactly zero, judged on the case's scale
    assert any(r.on_case_scale and r.name.endswith("gate_s_conv_reduce0.bias") for r in report.rows)


def test_released_pooling_is_recognised_on_a_non_square_map():
    report = verify.bam(ReleasedBAM(C, R))
    assert report.passed and report.variant == "official-released", report
    # told to check it as "official", it fails where the pooling is
    strict = verify.bam(ReleasedBAM(C, R), variant="official")
    assert not strict.passed and strict.closest == "official"
    assert strict.first_divergence == "channel_att"
    assert "(3,16,6,10)" in strict.divergence_detail
    # on square maps alone the two cannot be told apart, and the report says so
    square = verify.bam(ReleasedBAM(C, R), shapes=[(4, C, 8, 8)])
    assert square.passed and square.variant == "official"
    assert any("cannot tell apart" in note for note in square.notes)


def test_a_port_summing_without_closing_bn_is_named():
    report = verify.bam(SumNoBnBAM(C, R, dilation_conv_num=3, dilation_val=2))
    assert report.passed and report.variant == "sum-no-bn", report
    assert report.fingerprint["dilated_convs"] == 3 and report.fingerprint["dilation"] == 2
    assert any("dilation 2" in note for note in report.notes)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_a_missing_sigmoid_diverges_at_combine(variant):
    report = verify.bam(NoSigmoidBAM(C, R, 2, 4, variant))
    assert not report.passed and report.variant is None
    assert report.closest == variant and report.first_divergence == "combine"


def test_a_relu_left_out_of_the_spatial_branch_is_a_deviation_not_a_failure():
    # an nn.Identity where the ReLU was: the structure has no ReLU there, and computes that
    report = verify.bam(with_bug(TorchBAM(C, R, 2, 4, "official"), "spatial relu forgotten"))
    assert report.passed and report.variant == "official", report
    assert report.structure["reduce_relu"] is False
    found = [d for d in report.deviations if d["field"] == "reduce_relu"]
    assert found and found[0]["differs_from"] == "both" and found[0]["paper"] is True
    assert "ReLU after the spatial branch's 1x1 reduction: no" in str(report)


def test_a_wrong_activation_in_the_channel_mlp_is_found_there():
    report = verify.bam(with_bug(TorchBAM(C, R, 2, 4, "paper"), "channel activation wrong"))
    assert not report.passed and report.closest == "paper"
    assert report.first_divergence == "channel_att.gate_c.gate_c_relu_1"
    assert any("channel_att.gate_c.gate_c_relu_1 (Tanh)" in note for note in report.notes)


def test_a_renamed_module_passes_with_a_key_map_or_by_structure():
    report = verify.bam(RenamedBAM(C, R), key_map=RENAMED_KEY_MAP)
    assert report.passed and report.variant == "official" and report.fingerprint["names"] == "key_map"
    found = verify.bam(RenamedBAM(C, R))
    assert found.passed and found.variant == "official" and found.fingerprint["names"].startswith("structure")


def test_an_impossible_key_map_lists_the_keys():
    bad = {**RENAMED_KEY_MAP, "mlp.3": "channel_att.gate_c.gate_c_fc_0"}  # two layers on one name
    with pytest.raises(ValueError, match=r"placed twice: channel_att.gate_c.gate_c_fc_0 \(from mlp.0, mlp.3\)"):
        verify.bam(RenamedBAM(C, R), key_map=bad)
    with pytest.raises(ValueError, match="does not have: nope"):
        verify.bam(RenamedBAM(C, R), key_map={**RENAMED_KEY_MAP, "nope": "x"})
    with pytest.raises(ValueError, match="mlp.3.bias .minibam's BAM of this structure has no elsewhere.bias"):
        verify.bam(RenamedBAM(C, R), key_map={**RENAMED_KEY_MAP, "mlp.3": "elsewhere"})


def test_an_unplaceable_module_is_a_value_error():
    class Extra(TorchBAM):
        def __init__(self):
            super().__init__(C, R, 2, 4, "official")
            self.extra = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.extra(super().forward(x).transpose(1, 3)[..., :3]).mean() + super().forward(x)

    with pytest.raises(ValueError, match=r"cannot read the module as a BAM: .*extra \(Linear 3->3\)"):
        verify.bam(Extra())

    class Unused(TorchBAM):  # a layer the forward pass never calls: noted, not compared
        def __init__(self):
            super().__init__(C, R, 2, 4, "official")
            self.extra = torch.nn.Linear(3, 3)

    report = verify.bam(Unused(), training=(False,))
    assert report.passed and any(note.endswith("not compared: extra") for note in report.notes)


def test_the_callers_module_is_bit_identical_afterwards():
    module = TorchBAM(C, R, 2, 4, "paper").eval()
    module(torch.randn(2, C, 5, 7)).sum().backward()  # some gradients to keep
    before = {k: v.clone() for k, v in module.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in module.named_parameters()}
    dtype = next(module.parameters()).dtype
    report = verify.bam(module, dtype="float64")
    assert report.passed
    assert module.training is False and next(module.parameters()).dtype == dtype
    assert all(m.training is False for m in module.modules())
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, p in module.named_parameters():
        assert torch.equal(p.grad, grads[k]), k


def test_float32_and_json():
    report = verify.bam(TorchBAM(C, R, 2, 4, "official").float(), dtype="float32", training=(True,))
    assert report.passed, report
    assert report.rows[0].rtol == 1.3e-6 and report.rows[0].atol == 1e-5
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is True and data["variant"] == "official" and data["first_divergence"] is None
    assert {"name", "max_abs", "max_rel", "mismatched", "size", "worst_index", "passed"} <= set(data["rows"][0])
    assert str(report).startswith("verify.bam: PASS")


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant must be"):
        verify.bam(TorchBAM(C, R), variant="cbam")
    with pytest.raises(ValueError, match="must be \\(N, C=16"):
        verify.bam(TorchBAM(C, R), shapes=[(1, C, 8, 8)])
    with pytest.raises(ValueError, match="has closing BatchNorms"):
        verify.bam(TorchBAM(C, R, 2, 4, "official"), variant="paper")

    class Halves(TorchBAM):
        def forward(self, x):
            return super().forward(x)[:, : C // 2]

    with pytest.raises(ValueError, match="output is"):
        verify.bam(Halves(C, R))


class Crashes(TorchBAM):
    """A BAM that raises on every input (as a port with a shape bug does)."""

    def forward(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (32x3 and 16x4)\nmore detail")


class CrashesInTraining(TorchBAM):
    """Right in eval mode; raises, with an empty message, in training mode."""

    def forward(self, x):
        if self.training:
            raise ValueError()
        return super().forward(x)


def test_a_module_that_raises_on_a_legal_input_fails_and_says_where():
    module = Crashes(C, R)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    report = verify.bam(module)  # not an error: a wrong module, so a failed verdict
    assert not report.passed and report.variant is None and report.closest is None
    # the first of the shapes checked (shapes= is honoured from the first pass on)
    assert report.raised == f"eval (4,{C},8,8): RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x3 and 16x4)"
    assert [r.name for r in report.rows] == [f"eval (4,{C},8,8) forward raised"] and not report.rows[0].passed
    assert str(report).startswith(f"verify.bam: FAIL: the module raised on a legal input, {report.raised}")
    assert "Traceback" not in str(report) and "Traceback" in report.render(traceback=True)
    assert json.loads(json.dumps(report.to_dict()))["raised"] == report.raised
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())

    report = verify.bam(CrashesInTraining(C, R, 2, 4, "paper"))  # a ValueError with no message
    assert not report.passed and report.closest == "paper"
    assert report.raised == f"train (4,{C},8,8): ValueError"
    assert str(report).splitlines()[1] == f"  the module raised: {report.raised}"
    failed = [r.name for r in report.rows if not r.passed]
    assert failed == [f"train (4,{C},8,8) forward raised", f"train (3,{C},6,10) forward raised"]
    assert verify.bam(TorchBAM(C, R)).raised == ""


def test_importing_verify_does_not_import_torch():
    code = "import sys, minibam.verify; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_seeded_and_deterministic():
    a = verify.bam(TorchBAM(C, R), seed=3).to_dict()
    b = verify.bam(TorchBAM(C, R), seed=3).to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert np.isfinite([r["max_rel"] for r in a["rows"]]).all()


# ------------------------------------------------------------------ minibam verify
USER_FILE = '''
import sys
sys.path.insert(0, {tests!r})
from torch_bam import TorchBAM, with_bug, RenamedBAM

def Good(c=16):
    return TorchBAM(c, 4, 2, 4, "official")

def Buggy(c=16):
    return with_bug(TorchBAM(c, 4, 2, 4, "paper"), "channel activation wrong")

class Halves(TorchBAM):
    def forward(self, x):
        return super().forward(x)[:, :2]

def Renamed(c=16):
    return RenamedBAM(c, 4)

class Crashes(TorchBAM):
    def forward(self, x):
        raise RuntimeError("boom")

NOT_A_MODULE = 3

def gives_a_number(c=16):
    return 3
'''


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "mybam.py"
    path.write_text(USER_FILE.format(tests=str(ROOT / "tests")))
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    return path


def run_cli(capsys, *argv):
    from minibam.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_passes_and_fails_with_exit_codes(user_file, capsys):
    code, out, err = run_cli(capsys, "verify", f"{user_file}:Good")
    assert code == 0 and err == ""
    assert out.startswith("verify.bam: PASS: the module is BAM variant 'official'")
    code, out, _ = run_cli(capsys, "verify", f"{user_file}:Buggy", "--channels", "16")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("verify.bam: FAIL") and "closest is 'paper'" in lines[0]
    assert lines[2].startswith("  first divergence: channel_att.gate_c.gate_c_relu_1")


def test_cli_verify_json_parses(user_file, capsys):
    code, out, _ = run_cli(capsys, "verify", f"{user_file}:Buggy", "--json", "--mode", "train")
    data = json.loads(out)
    assert code == 1 and data["passed"] is False and data["closest"] == "paper"
    assert data["first_divergence"] == "channel_att.gate_c.gate_c_relu_1"
    assert all(r["name"].startswith("train ") for r in data["rows"])
    code, out, _ = run_cli(capsys, "verify", f"{user_file}:Renamed", "--json")
    assert code == 0 and json.loads(out)["variant"] == "official"


def test_cli_verify_bad_input_is_one_line_and_exit_2(user_file, capsys):
    folder = user_file.parent
    twice = json.dumps({"mlp.0": "channel_att.gate_c.gate_c_fc_0", "mlp.3": "channel_att.gate_c.gate_c_fc_0"})
    cases = {
        "does not import: ModuleNotFoundError": [f"{folder / 'broken.py'}:Good"],
        "does not import: SyntaxError": [f"{folder / 'syntax.py'}:Good"],
        "no such file": [f"{folder / 'nope.py'}:Good"],
        "has no 'Missing'": [f"{user_file}:Missing"],
        "is a int, not a class or a function": [f"{user_file}:NOT_A_MODULE"],
        "gave an int, not a torch.nn.Module": [f"{user_file}:gives_a_number"],
        "output is (4, 2, 8, 8)": [f"{user_file}:Halves", "--channels", "16"],
        "placed twice": [f"{user_file}:Renamed", "--key-map", twice],
        "expected FILE.py:NAME": [str(user_file)],
        "Good(7) raised ValueError": [f"{user_file}:Good", "--channels", "7"],
    }
    for words, argv in cases.items():
        code, out, err = run_cli(capsys, "verify", *argv)
        assert code == 2, (words, out, err)
        assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("minibam verify: error:") and words in err, (words, err)


def test_cli_verify_a_module_that_raises_is_a_fail_not_bad_input(user_file, capsys):
    code, out, err = run_cli(capsys, "verify", f"{user_file}:Crashes", "--channels", "16")
    assert code == 1 and err == ""
    assert out.startswith("verify.bam: FAIL: the module raised on a legal input, eval (4,16,8,8): RuntimeError: boom\n")
    assert "Traceback" not in out
    code, out, _ = run_cli(capsys, "verify", f"{user_file}:Crashes", "--channels", "16", "--verbose")
    assert code == 1 and "Traceback" in out and 'raise RuntimeError("boom")' in out
    code, out, _ = run_cli(capsys, "verify", f"{user_file}:Crashes", "--channels", "16", "--json")
    data = json.loads(out)
    assert code == 1 and data["passed"] is False and data["raised"].endswith("RuntimeError: boom")


def test_cli_verify_as_a_process(user_file):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "minibam", "verify", f"{user_file}:Halves"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1


def test_the_released_code_crashing_on_wide_maps_is_its_signature():
    shapes = [(2, C, 4, 9), (3, C, 6, 10)]  # W >= 2H: the released code raises
    report = verify.bam(ReleasedBAM(C, R), shapes=shapes)
    assert report.passed and report.variant == "official-released", report
    assert any("RuntimeError" in note for note in report.notes)
    # a module that runs there is not the released code
    report = verify.bam(TorchBAM(C, R, 2, 4, "official"), shapes=shapes)
    assert report.variant == "official"
    assert not next(c for c in report.candidates if c.name == "official-released").passed


def test_a_float32_module_with_a_bug_still_fails():
    module = with_bug(TorchBAM(C, R, 2, 4, "official"), "channel activation wrong").float()
    report = verify.bam(module, dtype="float32", training=(True,))
    assert not report.passed and report.first_divergence == "channel_att.gate_c.gate_c_relu_1"


def test_the_documented_examples_give_the_documented_verdicts():
    """docs/verify.md shows these three runs; keep the page honest."""
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        from my_bams import BuggyBAM, MyBAM, ReleasedBAM
    finally:
        sys.path.pop(0)
    mine = verify.bam(MyBAM(32))
    assert mine.passed and mine.variant == "paper" and mine.fingerprint["names"].startswith("structure")
    released = verify.bam(ReleasedBAM(32))
    assert released.passed and released.variant == "official-released"
    buggy = verify.bam(BuggyBAM(32))
    assert not buggy.passed and buggy.closest == "paper"
    assert buggy.first_divergence == "spatial.1"  # the ReLU, called before the BatchNorm
