"""The keyword-only options of nn.BAM and nn.CBAM that verify builds from the structures it
reads: the defaults keep the authors' layout and names, each option is checked against
finite differences, and bad values are refused by name. (Each option is also checked
against PyTorch, through the port layouts of tests/test_verify_ports.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import minibam as mb
from minibam import nn

BAM_KEYS = {"channel_att.gate_c.gate_c_fc_0.weight", "channel_att.gate_c.gate_c_bn_1.running_var",
            "channel_att.gate_c.gate_c_fc_final.bias", "spatial_att.gate_s.gate_s_conv_reduce0.weight",
            "spatial_att.gate_s.gate_s_bn_di_1.weight", "spatial_att.gate_s.gate_s_conv_final.bias"}


def test_defaults_keep_the_authors_layout_and_names():
    assert BAM_KEYS <= set(nn.BAM(16, 4).state_dict())
    assert "channel_att.gate_c.gate_c_bn_final.weight" in nn.BAM(16, 4).state_dict()
    assert "channel_att.gate_c.gate_c_bn_final.weight" not in nn.BAM(16, 4, variant="official").state_dict()
    assert set(nn.CBAM(16, 4).state_dict()) == {
        "ChannelGate.mlp.1.weight", "ChannelGate.mlp.1.bias", "ChannelGate.mlp.3.weight", "ChannelGate.mlp.3.bias",
        "SpatialGate.spatial.conv.weight", "SpatialGate.spatial.bn.weight", "SpatialGate.spatial.bn.bias",
        "SpatialGate.spatial.bn.running_mean", "SpatialGate.spatial.bn.running_var",
        "SpatialGate.spatial.bn.num_batches_tracked"}


def test_options_change_the_layers_as_documented():
    bam = nn.BAM(16, 4, 3, 2, hidden=(4, 4), mlp_bias=False, mlp_bn=False, reduce_bn=False, reduce_relu=False,
                 closing_bn=False, conv_bias=False)
    keys = set(bam.state_dict())
    assert "channel_att.gate_c.gate_c_fc_1.weight" in keys and "channel_att.gate_c.gate_c_fc_0.bias" not in keys
    assert not any("gate_c_bn" in k or "bn_reduce0" in k or k.endswith("conv_final.bias") for k in keys)
    assert "spatial_att.gate_s.gate_s_conv_di_2.weight" in keys
    single = nn.BAM(16, 4, hidden=())  # no bottleneck: one Linear(C, C)
    assert single.state_dict()["channel_att.gate_c.gate_c_fc_final.weight"].shape == (16, 16)
    cbam = nn.CBAM(16, 4, hidden=(8, 4), mlp_bn=True, shared_mlp=False, spatial_bn=False, spatial_bias=True,
                   kernel_size=3)
    keys = set(cbam.state_dict())
    assert {"ChannelGate.mlp.1.weight", "ChannelGate.mlp.2.running_var", "ChannelGate.mlp.7.weight",
            "ChannelGate.mlp1.7.bias", "SpatialGate.spatial.conv.bias"} <= keys
    assert not any("spatial.bn" in k for k in keys)


@pytest.mark.parametrize("options", [
    {"combine": "product", "closing_bn": True}, {"residual": False}, {"pooling": "window"},
    {"hidden": (2, 2), "mlp_bn": False, "reduce_relu": False, "padding": 1, "kernel_size": 3},
])
def test_bam_options_pass_finite_differences(options):
    mb.manual_seed(1)
    bam = nn.BAM(8, 4, 1, 1, **options).eval()
    rng = np.random.default_rng(0)
    for _, b in bam.named_buffers():  # running statistics that are not the defaults
        array = b.data if isinstance(b, mb.Tensor) else b
        if array.dtype.kind == "f":
            array[...] = rng.uniform(0.5, 1.5, array.shape)
    x = mb.Tensor(rng.standard_normal((2, 8, 4, 6)), requires_grad=True)
    params = list(bam.parameters())
    assert mb.gradcheck(lambda x, *p: bam(x), [x, *params])


@pytest.mark.parametrize("options", [
    {"spatial_pools": ("avg", "max"), "spatial_bn": False}, {"spatial_input": "input", "residual": True},
    {"hidden": (), "mlp_bias": False, "spatial_bias": True, "kernel_size": 3},
    {"shared_mlp": False, "channel_gate": "identity", "spatial_gate": "identity"},
    {"pool_terms": "first-twice", "mlp_bn": True},
])
def test_cbam_options_pass_finite_differences(options):
    mb.manual_seed(2)
    cbam = nn.CBAM(8, 2, **options).eval()
    x = mb.Tensor(np.random.default_rng(1).standard_normal((2, 8, 4, 5)), requires_grad=True)
    assert mb.gradcheck(lambda x, *p: cbam(x), [x, *cbam.parameters()])


def test_attention_maps_are_the_forward_passes_maps():
    mb.manual_seed(3)
    x = mb.Tensor(np.random.default_rng(2).standard_normal((3, 8, 5, 7)))
    for options in ({}, {"residual": False, "combine": "product"}):
        bam = nn.BAM(8, 4, **options).eval()
        maps = bam.attention_maps(x)
        expected = x.data * (maps["attention"] + (1.0 if bam.residual else 0.0))
        np.testing.assert_allclose(bam(x).data, expected, rtol=1e-12, atol=1e-12)


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="BAM: combine must be one of"):
        nn.BAM(16, 4, combine="max")
    with pytest.raises(ValueError, match="BAM: pooling must be one of"):
        nn.BAM(16, 4, pooling="adaptive")
    with pytest.raises(TypeError, match="BAM: hidden must be a sequence"):
        nn.BAM(16, 4, hidden=4)
    with pytest.raises(ValueError, match="CBAM: spatial_pools must be"):
        nn.CBAM(16, 4, spatial_pools=("max", "max"))
    with pytest.raises(ValueError, match="CBAM: kernel_size must be odd"):
        nn.CBAM(16, 4, kernel_size=4)
    with pytest.raises(ValueError, match="CBAM: spatial_input must be one of"):
        nn.CBAM(16, 4, spatial_input="x")
    with pytest.raises(TypeError):
        nn.BAM(16, 4, 2, 4, "paper", (4,))  # the options are keyword-only
    bam = nn.BAM(16, 4, pooling="window").eval()
    with pytest.raises(ValueError, match="needs H <= W < 2H, got a 4x9 map"):
        bam(mb.Tensor(np.zeros((2, 16, 4, 9))))
