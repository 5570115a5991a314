"""verify on the layouts of public BAM and CBAM ports (tests/ports/: our own modules, one per
layout; docs/verify.md, "Ports in the wild", says what verify says of each).

Each layout must get its verdict on both counts: ``passed`` (it computes what its own
structure says) and ``deviations`` (how that structure differs from the paper and the
released code), with the closest named variant; a layout minibam cannot read gets a
refusal naming, in the user's terms, the layer it could not read.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from ports import bam_layouts as bl  # noqa: E402
from ports import cbam_layouts as cl  # noqa: E402
from torch_bam import ReleasedBAM  # noqa: E402
from torch_cbam import TorchCBAM  # noqa: E402

from minibam import verify  # noqa: E402

C = 16

# layout -> (check, variant, fields that must differ from both the paper and the released code)
PASSING = {
    "released BAM (Jongchan/attention-module)": (verify.bam, lambda: ReleasedBAM(C, 4), "official-released", set()),
    "zoo BAM, no BN inside the MLP or after the reduction": (
        verify.bam, lambda: bl.ZooBAM(C), "paper", {"mlp_hidden_bn", "reduce_bn", "reduce_relu"}),
    "deep-MLP BAM, 3 dilated convs of dilation 2": (
        verify.bam, lambda: bl.DeepMlpBAM(C), "sum-no-bn", {"mlp_depth", "dilated_convs", "dilation", "padding"}),
    "1x1-conv MLP BAM": (verify.bam, lambda: bl.ConvMlpBAM(C), "paper", {"mlp_layers"}),
    "BAM from the paper's equations": (
        verify.bam, lambda: bl.LiteralPaperBAM(C), "paper-literal", {"mlp_hidden_bn", "reduce_bn", "dilated_bn"}),
    "BAM with the residual outside": (verify.bam, lambda: bl.OutsideResidualBAM(C), "official", {"residual"}),
    "released CBAM (Jongchan/attention-module)": (verify.cbam, lambda: TorchCBAM(C, 4), "released", set()),
    "image-model library CBAM (timm)": (
        verify.cbam, lambda: cl.ImageModelCBAM(C), None, {"mlp_layers", "bn_momentum"}),
    "tutorial CBAM (luuuyi/CBAM.PyTorch)": (verify.cbam, lambda: cl.TutorialCBAM(C), "paper", {"mlp_layers"}),
    "model-zoo CBAM, residual inside, conv bias": (
        verify.cbam, lambda: cl.ResidualCBAM(C), None, {"residual", "spatial_bias", "kernel", "mlp_layers"}),
    "YOLO CBAM, no bottleneck": (
        verify.cbam, lambda: cl.NoBottleneckCBAM(C), "paper", {"mlp_depth", "channel_pools", "mlp_layers"}),
    "parallel CBAM, both gates read x": (
        verify.cbam, lambda: cl.ParallelCBAM(C), "paper",
        {"spatial_input", "spatial_bias", "channel_pools", "mlp_layers"}),
    "detection-toolbox CBAM (mmyolo)": (verify.cbam, lambda: cl.ToolboxCBAM(C), "paper", {"spatial_bias", "mlp_layers"}),
}


@pytest.mark.parametrize("layout", list(PASSING))
def test_each_layout_passes_with_its_deviations(layout):
    check, make, variant, differ = PASSING[layout]
    report = check(make(), training=(True,)) if layout != "released BAM (Jongchan/attention-module)" else check(make())
    assert report.passed and report.variant == variant, report
    both = {d["field"] for d in report.deviations if d["differs_from"] == "both"}
    assert both == differ, report.deviations
    assert report.closest in verify.VARIANTS or report.closest in verify.CBAM_VARIANTS
    data = json.loads(json.dumps(report.to_dict()))
    assert data["structure"]["C"] == C and len(data["deviations"]) == len(report.deviations)


def test_deviations_say_what_paper_and_released_code_have():
    report = verify.bam(bl.ZooBAM(C), training=(False,))
    hidden = next(d for d in report.deviations if d["field"] == "mlp_hidden_bn")
    assert (hidden["module"], hidden["paper"], hidden["released"]) == (False, True, True)
    assert hidden["what"].startswith("BatchNorm after each hidden layer of the channel MLP: no (paper: yes; "
                                     "released code: yes)")
    s = report.structure
    assert (s["mlp_depth"], s["reduce_bn"], s["reduce_relu"], s["closing_bn_channel"], s["combine"]) == \
        (1, False, False, True, "sum")


def test_the_users_names_are_used_in_rows_and_divergence():
    class Slipped(bl.ZooBAM):  # the context convs' ReLU replaced by a Tanh: a slip
        def __init__(self):
            super().__init__(C)
            self.context[2] = torch.nn.Tanh()

    report = verify.bam(Slipped(), training=(True,))
    assert not report.passed and report.first_divergence == "context.2", report
    names = {r.name.split(" ", 2)[-1] for r in report.rows}
    assert {"grad.mlp.0.weight", "grad.map_norm.weight", "after.mlp_norm.running_mean"} <= names


@pytest.mark.parametrize("check, make, words", [
    (verify.bam, lambda: bl.NoReductionBAM(C), "where (Conv2d 16->1, kernel (7, 7))"),
    (verify.cbam, lambda: cl.LightCBAM(C), "conv.0 (Conv2d 1->1, kernel (7, 7)): a spatial conv over one pooled map"),
])
def test_an_unreadable_layout_is_refused_in_the_users_terms(check, make, words):
    with pytest.raises(ValueError, match="cannot read the module as a") as error:
        check(make())
    assert words in str(error.value)


def test_a_bug_in_a_port_layout_is_still_named():
    class TwiceAvg(cl.TutorialCBAM):  # the copy-paste slip x1 + x1, in the tutorial's layout
        def forward(self, x):
            ca = self.ca
            a = ca.fc2(ca.relu1(ca.fc1(ca.avg_pool(x))))
            ca.fc2(ca.relu1(ca.fc1(ca.max_pool(x))))
            x = ca.sigmoid(a + a) * x
            return self.sa(x) * x

    report = verify.cbam(TwiceAvg(C), training=(True,))
    assert not report.passed and report.variant == "avg-twice", report


def test_functional_relus_in_the_spatial_branch_are_assumed_and_said():
    class Functional(bl.ZooBAM):  # F.relu in the spatial branch (nn.ReLU only in the MLP)
        def forward(self, x):
            n, c = x.shape[:2]
            channel = self.mlp_norm(self.mlp(self.pool(x).view(n, c))).view(n, c, 1, 1)
            h = torch.relu(self.squeeze(x))
            for i in (0, 3):
                h = torch.relu(self.context[i + 1](self.context[i](h)))
            return x + x * torch.sigmoid(channel + self.map_norm(self.to_map(h)))

    report = verify.bam(Functional(C), training=(True,))
    assert report.passed and report.structure["reduce_relu"] is True, report
    assert any("no nn.ReLU layers" in note for note in report.notes)


def test_a_cumulative_batch_norm_momentum_is_read():
    model = cl.ImageModelCBAM(C)
    model.spatial[1].momentum = None
    report = verify.cbam(model, training=(True,))
    assert report.passed and report.structure["bn_momentum"] == "cumulative average", report


def test_a_layer_the_forward_pass_never_calls_is_noted_not_compared():
    class DeadWeight(bl.ZooBAM):  # a leftover layer, as ports often carry
        def __init__(self):
            super().__init__(C)
            self.unused_fc = torch.nn.Linear(C, C)
            self.unused_bn = torch.nn.BatchNorm2d(C)

    report = verify.bam(DeadWeight(), training=(True,))
    assert report.passed, report
    assert any(note.endswith("not compared: unused_fc, unused_bn") for note in report.notes), report.notes
    assert not any("unused" in r.name for r in report.rows)
