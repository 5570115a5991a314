"""A small CNN with an attention module between its stages, as the BAM paper places BAM
in a ResNet: after every stage but the last, where the feature map is about to be
downsampled.

    stem -> stage0 -> att0 -> stage1 -> att1 -> ... -> stage_last -> GAP -> linear

The attention module is BAM (children ``bam0``, ``bam1``, ...), CBAM (``cbam0``, ...) or
none, at the same places, so that three networks that differ only in their attention
can be trained side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

from minibam import functional as F
from minibam.nn.bam import BAM
from minibam.nn.cbam import CBAM
from minibam.nn.layers import BatchNorm2d, Conv2d, Linear, ReLU, checked_int
from minibam.nn.module import Module, Sequential
from minibam.tensor import Tensor

ATTENTION = ("bam", "cbam", None)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> Sequential:
    return Sequential(Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                      BatchNorm2d(c_out), ReLU())


class BAMNet(Module):
    """Conv stages of ``widths`` channels (each after the first halves H and W), with an
    attention module after each stage but the last.

    ``attention``: "bam" (default), "cbam" or None. ``use_bam=False`` also means none.
    ``reduction_ratio`` serves both modules; ``dilation_val`` and ``variant`` are BAM's,
    ``pool_types`` CBAM's.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 use_bam: bool = True, reduction_ratio: int = 4, dilation_val: int = 2,
                 variant: str = "paper", attention: str | None = "bam",
                 pool_types: Sequence[str] = ("avg", "max")) -> None:
        super().__init__()
        if not isinstance(widths, (tuple, list)) or not widths:
            raise TypeError(f"BAMNet: widths must be a non-empty tuple of ints, got {widths!r}")
        for i, width in enumerate(widths):
            checked_int(width, f"widths[{i}]", "BAMNet")
        checked_int(in_channels, "in_channels", "BAMNet")
        checked_int(num_classes, "num_classes", "BAMNet")
        checked_int(reduction_ratio, "reduction_ratio", "BAMNet")
        checked_int(dilation_val, "dilation_val", "BAMNet")
        if not isinstance(variant, str):
            raise ValueError(f"BAMNet: variant must be 'paper' or 'official', got {variant!r}")
        if not (attention is None or isinstance(attention, str)) or attention not in ATTENTION:
            raise ValueError(f"BAMNet: attention must be one of {ATTENTION}, got {attention!r}")
        self.attention = attention if use_bam else None
        self.use_bam = self.attention == "bam"
        # Checked here, so that the error names widths, not the attention module's gate_channel.
        for i, width in enumerate(widths[:-1] if self.attention else ()):
            if self.attention == "bam" and width % reduction_ratio:
                raise ValueError(f"BAMNet: widths[{i}]={width} (a BAM's channels) is not divisible by "
                                 f"reduction_ratio={reduction_ratio}")
            if self.attention == "cbam" and width < reduction_ratio:
                raise ValueError(f"BAMNet: widths[{i}]={width} (a CBAM's channels) is smaller than "
                                 f"reduction_ratio={reduction_ratio}: its hidden width would be 0")
        self.stem = _conv_bn_relu(in_channels, widths[0], 1)
        previous = widths[0]
        for i, width in enumerate(widths):
            self.add_module(f"stage{i}", _conv_bn_relu(previous, width, 1 if i == 0 else 2))
            if self.attention == "bam" and i < len(widths) - 1:
                self.add_module(f"bam{i}", BAM(width, reduction_ratio, dilation_val=dilation_val,
                                               variant=variant))
            if self.attention == "cbam" and i < len(widths) - 1:
                self.add_module(f"cbam{i}", CBAM(width, reduction_ratio, pool_types))
            previous = width
        self.head = Linear(previous, num_classes)

    def attention_modules(self) -> list[Module]:
        """The BAM or CBAM modules, first stage first."""
        return [m for m in self.children() if isinstance(m, (BAM, CBAM))]

    def bams(self) -> list[BAM]:
        return [m for m in self.children() if isinstance(m, BAM)]

    def features(self, x: Tensor) -> Tensor:
        for name, module in self.named_children():
            if name != "head":
                x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.global_avg_pool2d(self.features(x)))
