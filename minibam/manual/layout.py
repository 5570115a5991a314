"""The ``state_dict()`` layouts of BAM and CBAM: every layer's name and parameter shapes.

``params`` of ``manual.bam_forward`` and ``manual.cbam_forward`` use these names, which are
those of ``minibam.nn.BAM`` / ``nn.CBAM`` and of the authors' PyTorch code, so a checkpoint
of either can be fed in unchanged. Weights and biases are ``f"{layer}.weight"`` and
``f"{layer}.bias"``; a batch norm also has the buffers in ``BN_BUFFERS``.
"""

# ---- BAM (Park et al., 2018) ---------------------------------------------------------
FC_0 = "channel_att.gate_c.gate_c_fc_0"
BN_1 = "channel_att.gate_c.gate_c_bn_1"
FC_FINAL = "channel_att.gate_c.gate_c_fc_final"
BN_C_FINAL = "channel_att.gate_c.gate_c_bn_final"
CONV_REDUCE = "spatial_att.gate_s.gate_s_conv_reduce0"
BN_REDUCE = "spatial_att.gate_s.gate_s_bn_reduce0"
CONV_FINAL = "spatial_att.gate_s.gate_s_conv_final"
BN_S_FINAL = "spatial_att.gate_s.gate_s_bn_final"
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def conv_di(i: int) -> str:
    """Name of the i-th dilated 3x3 convolution (i counts from 0)."""
    return f"spatial_att.gate_s.gate_s_conv_di_{i}"


def bn_di(i: int) -> str:
    """Name of the batch norm after the i-th dilated convolution."""
    return f"spatial_att.gate_s.gate_s_bn_di_{i}"


def _linear(o: int, i: int) -> dict[str, tuple]:
    return {"weight": (o, i), "bias": (o,)}


def _conv(o: int, i: int, k: int) -> dict[str, tuple]:
    return {"weight": (o, i, k, k), "bias": (o,)}


def _bn(c: int) -> dict[str, tuple]:
    return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}


def bam_layers(C: int, Cr: int, n: int, variant: str) -> dict[str, dict[str, tuple]]:
    """Every layer of BAM(C, C/r = Cr, n dilated convs) in state_dict order, with the
    shapes of its parameters and buffers (``num_batches_tracked`` left out)."""
    layers = {FC_0: _linear(Cr, C), BN_1: _bn(Cr), FC_FINAL: _linear(C, Cr)}
    if variant == "paper":
        layers[BN_C_FINAL] = _bn(C)
    layers |= {CONV_REDUCE: _conv(Cr, C, 1), BN_REDUCE: _bn(Cr)}
    for i in range(n):
        layers |= {conv_di(i): _conv(Cr, Cr, 3), bn_di(i): _bn(Cr)}
    layers[CONV_FINAL] = _conv(1, Cr, 1)
    if variant == "paper":
        layers[BN_S_FINAL] = _bn(1)
    return layers


def bam_param_names(n: int, variant: str) -> list[str]:
    """BAM's weight and bias names, in state_dict order (shapes do not matter here)."""
    return [f"{layer}.{p}" for layer in bam_layers(1, 1, n, variant) for p in ("weight", "bias")]


# ---- CBAM (Woo et al., 2018), the released code's names -------------------------------
CBAM_FC_0, CBAM_FC_1 = "ChannelGate.mlp.1", "ChannelGate.mlp.3"
CBAM_CONV, CBAM_BN = "SpatialGate.spatial.conv", "SpatialGate.spatial.bn"
CBAM_POOLS = ("avg", "max", "lp", "lse")


def cbam_layers(C: int, Cr: int, no_spatial: bool) -> dict[str, dict[str, tuple]]:
    """Every layer of CBAM(C, hidden width Cr) in state_dict order (no conv bias)."""
    layers = {CBAM_FC_0: _linear(Cr, C), CBAM_FC_1: _linear(C, Cr)}
    if not no_spatial:
        layers |= {CBAM_CONV: {"weight": (1, 2, 7, 7)}, CBAM_BN: _bn(1)}
    return layers
