"""The BAM variants that ``verify.bam`` names, as data: each is a few choices about
minibam's configurable ``nn.BAM`` (closing BatchNorms, how the branches are combined,
how the channel branch pools). Nothing here runs a forward pass: ``verify`` builds
``nn.BAM`` with the matching options (`minibam.verify.bam`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    description: str  # one line
    source: str  # where this form comes from
    closing_bn: bool  # a BatchNorm ends each branch (gate_c_bn_final, gate_s_bn_final)
    combine: str  # "sum": sigmoid(M_c + M_s); "product": sigmoid(M_c * M_s)
    pooling: str  # "global": mean over H x W; "window": mean over the top-left H x H window
    inner_bn: bool | None = None  # BatchNorms inside the branches (None: either)


KNOWN = (
    Variant("paper", "a BatchNorm closes each branch, branches summed: x * (1 + sigmoid(M_c + M_s))",
            "Park, Woo, Lee, Kweon, BAM, BMVC 2018, eqs. (1)-(4); minibam's nn.BAM(variant='paper')",
            True, "sum", "global", True),
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
    Variant("paper-literal", "the paper's equations (1)-(4) taken literally: a BatchNorm closes each "
            "branch and none is inside them, branches summed", "ports written from the paper's "
            "equations alone", True, "sum", "global", False),
)

SPECS = {v.name: v for v in KNOWN}
VARIANTS: dict[str, str] = {v.name: v.description for v in KNOWN}


def name_of(closing_bn: bool, combine: str, pooling: str, inner_bn: bool) -> str | None:
    """The named variant these choices are, if any."""
    for v in KNOWN:
        if (v.closing_bn, v.combine, v.pooling) == (closing_bn, combine, pooling) \
                and v.inner_bn in (None, inner_bn):
            return v.name
    return None
