"""BAM with random weights, and BAM as a ``minibam check`` case.

`random_bam` is what ``reference``, ``bench`` and ``check`` all start from:
Linear and Conv2d take PyTorch's default initialisation from a seed, and every
BatchNorm gets random affine parameters and running statistics, so that a reference
case also exercises the parts that the default (gamma = 1, beta = 0, mean = 0, var = 1)
would hide.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.checks.catalogue import shape_text
from minibam.checks.runner import Case, Probe
from minibam.nn import BAM, BatchNorm1d, BatchNorm2d
from minibam.random import manual_seed
from minibam.tensor import Tensor


def random_bam(gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
               dilation_val: int = 4, variant: str = "paper", seed: int = 0,
               dtype: Any = np.float64) -> BAM:
    """A BAM in training mode whose weights and BatchNorm state depend only on ``seed``.

    Reseeds minibam's initialisation generator (``mb.manual_seed(seed)``). Raises
    ``ValueError`` for an invalid configuration, as ``nn.BAM`` does.
    """
    manual_seed(seed)
    bam = BAM(gate_channel, reduction_ratio, dilation_conv_num, dilation_val, variant)
    rng = np.random.default_rng([seed, 1])  # a stream independent of the init generator
    for module in bam.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            c = module.num_features
            module.weight.data = rng.uniform(0.5, 1.5, c)
            module.bias.data = 0.2 * rng.standard_normal(c)
            module.running_mean.data = 0.2 * rng.standard_normal(c)
            module.running_var.data = rng.uniform(0.5, 2.0, c)
            module.num_batches_tracked = np.array(rng.integers(1, 1000), dtype=np.int64)
    return bam.to(dtype)


def buffer_arrays(bam: BAM) -> dict[str, np.ndarray]:
    """Copies of the module's buffers (running statistics and counters)."""
    return {k: np.array(v.data if isinstance(v, Tensor) else v) for k, v in bam.named_buffers()}


def bam_case(x_shape: tuple[int, int, int, int], variant: str, reduction_ratio: int = 4,
             dilation_conv_num: int = 2, dilation_val: int = 2, training: bool = True) -> Case:
    """The whole module: gradients for x and every parameter. Each evaluation first
    restores the running buffers, so the finite differences all see the same module."""
    config = (x_shape[1], reduction_ratio, dilation_conv_num, dilation_val, variant)

    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"seed": np.array(rng.integers(2**31)), "x": rng.standard_normal(x_shape)}

    def build(inputs: dict[str, np.ndarray]) -> BAM:
        return random_bam(*config, seed=int(inputs["seed"])).train(training)

    def minibam_probe(inputs: dict[str, np.ndarray]) -> Probe:
        bam = build(inputs)
        names = {name for name, _ in bam.named_parameters()}
        initial = {k: v for k, v in bam.state_dict().items() if k not in names}
        x = Tensor(inputs["x"], requires_grad=True)

        def run() -> Tensor:
            bam.load_state_dict(initial, strict=False)
            return bam(x)

        return Probe({"x": x, **dict(bam.named_parameters())}, run, lambda: buffer_arrays(bam))

    def torch_probe(torch: Any, inputs: dict[str, np.ndarray]) -> Probe:
        from minibam.torch_oracle import bam_like, numpy_state

        model = bam_like(build(inputs))
        x = torch.tensor(inputs["x"], requires_grad=True)
        return Probe({"x": x, **dict(model.named_parameters())}, lambda: model(x),
                     lambda: numpy_state(model, buffers_only=True))

    hidden = x_shape[1] // reduction_ratio
    count = sum(p.data.size for p in BAM(*config).parameters())
    shapes = (f"x {shape_text(x_shape)}, C/r={hidden}, "
              f"{dilation_conv_num} dilated (d={dilation_val}), {count} weights; "
              f"{'train' if training else 'eval'}")
    return Case(f"BAM {variant}", shapes, draw, minibam_probe, torch_probe)


def bam_cases(thorough: bool = False) -> list[Case]:
    cases = [
        bam_case((4, 8, 6, 5), "paper"),
        bam_case((4, 8, 5, 6), "official", dilation_val=4),
    ]
    if thorough:
        for variant in ("paper", "official"):
            cases += [
                bam_case((3, 8, 5, 5), variant, training=False),
                bam_case((2, 4, 4, 7), variant, reduction_ratio=2, dilation_conv_num=0),
                bam_case((3, 6, 5, 4), variant, reduction_ratio=3, dilation_conv_num=1, dilation_val=1),
                bam_case((3, 8, 6, 6), variant, dilation_conv_num=3, dilation_val=4),
                bam_case((5, 16, 4, 4), variant, reduction_ratio=16),
            ]
    return cases
