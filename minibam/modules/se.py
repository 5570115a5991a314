"""Squeeze-and-Excitation, described once (`minibam.nn.SqueezeExcitation`).

One option, ``squeeze_channels`` (the hidden width S, read off ``fc1.weight`` (S, C, 1, 1));
no batch norm, so a reference case has no ``after.*`` and its mode does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from minibam.modules import Config, Description, Option, at_least
from minibam.nn import Module, SqueezeExcitation

_FC1 = "fc1.weight"


class SeDescription(Description):
    name = "se"
    title = "SqueezeExcitation"
    module_class = SqueezeExcitation
    format = "minibam-se-reference"
    signature = _FC1
    options = (
        Option("--squeeze-channels", "squeeze_channels", at_least(1), lambda channels: max(channels // 4, 1),
               "squeeze_channels S", metavar="S", default_text="C // 4, at least 1"),
    )

    def construct(self, channels: int, options: Mapping[str, Any]) -> Module:
        return SqueezeExcitation(channels, options["squeeze_channels"])

    def summary(self, config: Config) -> str:
        return f"SqueezeExcitation C={config.channels}, S={config.options['squeeze_channels']}"

    def label(self, config: Config) -> str:
        return "SE"

    def detail(self, config: Config) -> str:
        return f"S={config.options['squeeze_channels']}"

    def infer(self, channels: int, params: Mapping[str, np.ndarray],
              meta: Callable[[str, type], Any]) -> dict[str, Any]:
        fc1 = params[_FC1]
        if fc1.ndim != 4 or fc1.shape[1:] != (channels, 1, 1) or fc1.shape[0] < 1:
            raise ValueError(f"param.{_FC1} has shape {fc1.shape}, which is not (S, C={channels}, 1, 1)")
        return {"squeeze_channels": fc1.shape[0]}

    def twin(self, module: Module) -> Any:
        from minibam import torch_oracle

        torch = torch_oracle.load()

        class TorchSE(torch.nn.Module):
            """SE in torch.nn under the same child names, written here without torchvision."""

            def __init__(self, channels: int, squeeze: int) -> None:
                super().__init__()
                self.fc1 = torch.nn.Conv2d(channels, squeeze, 1)
                self.fc2 = torch.nn.Conv2d(squeeze, channels, 1)

            def forward(self, x: Any) -> Any:
                z = x.mean(dim=(2, 3), keepdim=True)
                return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))

        return torch_oracle.holding(TorchSE(module.input_channels, module.squeeze_channels), module)

    def check_configs(self, thorough: bool) -> list[tuple[tuple[int, int, int, int], Config]]:
        def case(shape: tuple[int, int, int, int], squeeze: int, training: bool = True) -> Any:
            return shape, self.config(shape[1], training, squeeze_channels=squeeze)

        # Four hidden units or more: with one or two ReLUs a whole path is often switched off.
        cases = [case((3, 8, 5, 6), 4)]
        if thorough:
            cases += [case((2, 6, 4, 4), 6), case((1, 16, 3, 7), 8, training=False), case((4, 4, 1, 1), 4)]
        return cases

    def memory_elements(self, config: Config, shape: tuple[int, int, int, int]) -> int:
        n, c, h, w = shape
        return 8 * n * c * h * w + 2 * c * config.options["squeeze_channels"] + 4 * n * c


DESCRIPTION = SeDescription()
