"""Benchmarks of minibam against PyTorch (or against another minibam tree), measured fairly.

Used by ``minibam bench`` and the scripts in ``benchmarks/``, so that they cannot drift
apart. `minibam.bench.harness` runs each library in its own process, alternating
the sides; `minibam.bench.workloads` is what one such process times. The suites:

- ``bam``: BAM forward + backward in training mode where the paper places it in
  ResNet-50, and a CIFAR-sized placement;
- ``cbam``: CBAM forward + backward in training mode at the same shapes;
- ``conv``: conv2d forward + backward for the convolutions of BAM's spatial gate;
- ``step``: one training step (forward, loss, backward, Adam) of ``nn.BAMNet``;
- ``memory``: peak extra resident memory of one BAM forward + backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from minibam.bench.harness import (
    ALLOCATORS,
    SPREAD_LIMIT,
    Measurement,
    Side,
    allocator_environment,
    measure,
)
from minibam.bench.threads import blas_description, set_blas_threads

__all__ = ["ALLOCATORS", "BAM_SHAPES", "CONV_CASES", "QUICK_SHAPES", "SPREAD_LIMIT", "STEP_SHAPES", "SUITES", "Case",
           "Measurement", "Side", "allocator_environment", "blas_description", "cases", "measure", "set_blas_threads"]

# (8, 64, 32, 32) a CIFAR-sized placement; the others follow ResNet-50's stages 1-3 at
# the paper's batch sizes.
BAM_SHAPES = [(8, 64, 32, 32), (4, 256, 56, 56), (8, 512, 28, 28), (16, 1024, 14, 14)]
QUICK_SHAPES = [(2, 32, 8, 8), (4, 64, 6, 6)]
# BAM's spatial-gate convolutions (r = 16) at the three ResNet-50 placements of
# BAM_SHAPES: (N, C, H, W, O, kernel, dilation), padding = dilation * (kernel - 1) / 2.
CONV_CASES = {"3x3 dilation 4, 16->16": (4, 16, 56, 56, 16, 3, 4),
              "3x3 dilation 4, 32->32 at 28x28": (8, 32, 28, 28, 32, 3, 4),
              "3x3 dilation 4, 64->64 at 14x14": (16, 64, 14, 14, 64, 3, 4),
              "1x1, 256->16": (4, 256, 56, 56, 16, 1, 1)}
# nn.BAMNet's default network (widths 16, 32, 64; r = 4) on a batch of 32 one-channel
# 32 x 32 images.
STEP_SHAPES = [(32, 1, 32, 32)]
SUITES = ("bam", "cbam", "conv", "step", "memory")


@dataclass(frozen=True)
class Case:
    """One row of a suite: the workload, its label and shape, the dtype."""

    workload: str
    label: str
    shape: tuple[int, ...]
    dtype: str


def cases(suite: str, dtypes: tuple[str, ...], shapes: list[tuple[int, ...]] | None = None) -> list[Case]:
    """The rows of ``suite``; ``shapes`` replaces the default (N, C, H, W) shapes of
    ``bam`` and ``memory`` (and the (N, 1, H, W) of ``step``)."""
    if suite == "conv":
        return [Case("conv", name, shape, dt) for name, shape in CONV_CASES.items() for dt in dtypes]
    default = STEP_SHAPES if suite == "step" else BAM_SHAPES
    return [Case(suite, "(" + ",".join(map(str, s)) + ")", tuple(s), dt)
            for s in (shapes or default) for dt in dtypes]
