"""The BAM variants that ``verify.bam`` knows, and minibam's run of each.

Every variant is minibam's BAM layers (``nn.BAM``, the authors' child names) with three
choices: whether a BatchNorm closes each branch, how the branches are combined, and
how the channel branch pools. `run_variant` runs one forward and backward pass
step by step so that the input and output of every layer can be compared with the
user's (their forward hooks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minibam import functional as F
from minibam.checks.bam import buffer_arrays
from minibam.nn import BAM
from minibam.ops.attention import bam_combine
from minibam.tensor import Tensor
from minibam.verify.harness import Run


@dataclass(frozen=True)
class Variant:
    name: str
    description: str  # one line
    source: str  # where this form comes from
    closing_bn: bool  # a BatchNorm ends each branch (gate_c_bn_final, gate_s_bn_final)
    combine: str  # "sum": sigmoid(M_c + M_s); "product": sigmoid(M_c * M_s)
    pooling: str  # "global": mean over H x W; "window": mean over the top-left H x H window


KNOWN = (
    Variant("paper", "a BatchNorm closes each branch, branches summed: x * (1 + sigmoid(M_c + M_s))",
            "Park, Woo, Lee, Kweon, BAM, BMVC 2018, eqs. (1)-(4); minibam's nn.BAM(variant='paper')",
            True, "sum", "global"),
    Variant("official", "no closing BatchNorm, branches multiplied: x * (1 + sigmoid(M_c * M_s)), "
            "true global average", "the authors' released code (Jongchan/attention-module, MODELS/bam.py) "
            "with its pooling fixed; minibam's nn.BAM(variant='official')", False, "product", "global"),
    Variant("official-released", "the released code exactly: as 'official', but the channel branch "
            "pools only the H x H window (avg_pool2d with kernel H); crashes for W >= 2H or W < H",
            "Jongchan/attention-module, MODELS/bam.py as published", False, "product", "window"),
    Variant("sum-no-bn", "branches summed as in the paper but no closing BatchNorm: "
            "x * (1 + sigmoid(M_c + M_s))",
            "ports that take the paper's sum onto the released code's layers (a popular one also uses "
            "3 dilated convs of dilation 2; verify reads both from the module)", False, "sum", "global"),
)

SPECS = {v.name: v for v in KNOWN}
VARIANTS: dict[str, str] = {v.name: v.description for v in KNOWN}


def build(spec: Variant, channels: int, reduction_ratio: int, dilation_conv_num: int,
          dilation_val: int) -> BAM:
    """minibam's layers for ``spec``, in float64 (the reference always is)."""
    return BAM(channels, reduction_ratio, dilation_conv_num, dilation_val,
               "paper" if spec.closing_bn else "official")


def run_variant(bam: BAM, spec: Variant, x: np.ndarray, dy: np.ndarray, training: bool,
                buffers_before: dict[str, np.ndarray]) -> Run:
    """One forward and backward pass of ``spec`` on minibam's layers ``bam``, starting
    from ``buffers_before``; ``steps`` holds every layer's input and output."""
    bam.load_state_dict(buffers_before, strict=False)
    bam.train(training)
    for p in bam.parameters():
        p.grad = None
    n, c, h, w = x.shape
    xt = Tensor(x, requires_grad=True)
    steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def through(prefix: str, seq: object, value: Tensor) -> Tensor:
        for name, child in seq.named_children():
            out = child(value)
            steps[f"{prefix}.{name}"] = (value.data, out.data)
            value = out
        return value

    if spec.pooling == "window" and not h <= w < 2 * h:
        raise ValueError(f"verify: the released code's pooling cannot run on a {h}x{w} map (needs H <= W < 2H)")
    if training and n < 2:
        raise ValueError(f"verify: training mode needs a batch of at least 2, got shape {x.shape}")
    pooled_from = xt if spec.pooling == "global" else xt[:, :, :h, :h]
    mc = through("channel_att.gate_c", bam.channel_att.gate_c, F.global_avg_pool2d(pooled_from))
    ms = through("spatial_att.gate_s", bam.spatial_att.gate_s, xt)
    y = bam_combine(xt, mc.reshape(n, c, 1, 1), ms, spec.combine)
    y.backward(dy)
    grads = {k: p.grad.copy() if p.grad is not None else np.zeros(p.shape) for k, p in bam.named_parameters()}
    return Run(y.data.copy(), xt.grad.copy(), grads, buffer_arrays(bam), steps)


def previous_step(name: str, order: list[str]) -> str:
    """The step whose output feeds ``name`` in minibam's forward: the previous layer of
    the same branch, or the branch itself (its pooling, or x) for its first layer."""
    branch = name.split(".")[0]
    # flatten only reshapes: what feeds the first linear layer is the pooling
    same = [s for s in order if s.split(".")[0] == branch and not s.endswith(".flatten")]
    i = same.index(name)
    return same[i - 1] if i > 0 else branch
