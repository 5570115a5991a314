"""CBAM, described once (`minibam.nn.CBAM`; the mathematics: docs/cbam.md).

Options: ``reduction_ratio`` (read off the MLP's hidden width), ``pool_types`` (not
visible in any shape: a reference case stores it as "avg,max", or ``compare
--pool-types`` says it) and ``no_spatial`` (whether the spatial gate's conv exists).
The released code's batch norm has momentum 0.01.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from minibam.modules import Config, Description, Option, at_least, name_list
from minibam.nn import CBAM, Module
from minibam.nn.cbam import SPATIAL_BN_MOMENTUM

_W0 = "ChannelGate.mlp.1.weight"
_CONV = "SpatialGate.spatial.conv.weight"


class CbamDescription(Description):
    name = "cbam"
    title = "CBAM"
    module_class = CBAM
    format = "minibam-cbam-reference"
    signature = _W0
    momentum = SPATIAL_BN_MOMENTUM
    options = (
        Option("--reduction", "reduction_ratio", at_least(1), 16, "reduction_ratio", metavar="R"),
        Option("--pool-types", "pool_types", name_list, ("avg", "max"),
               "the pools, from avg, max, lp, lse", metavar="P,P", compare=True),
        Option("--no-spatial", "no_spatial", bool, False, "without the spatial gate", switch=True),
    )

    def construct(self, channels: int, options: Mapping[str, Any]) -> Module:
        return CBAM(channels, options["reduction_ratio"], options["pool_types"], options["no_spatial"])

    def manual_pair(self, config: Config) -> tuple[Callable[..., Any], Callable[..., Any]]:
        from minibam import manual

        o = config.options

        def forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict]:
            return manual.cbam_forward(x, dict(params), o["pool_types"], o["no_spatial"], config.training,
                                       config.eps)

        return forward, manual.cbam_backward

    def summary(self, config: Config) -> str:
        o = config.options
        return (f"CBAM C={config.channels}, r={o['reduction_ratio']}, pool_types={','.join(o['pool_types'])}"
                f"{', no spatial gate' if o['no_spatial'] else ''}")

    def detail(self, config: Config) -> str:
        o = config.options
        return (f"C/r={config.channels // o['reduction_ratio']}, {'+'.join(o['pool_types'])}"
                f"{', no spatial' if o['no_spatial'] else ''}")

    def infer(self, channels: int, params: Mapping[str, np.ndarray],
              meta: Callable[[str, type], Any]) -> dict[str, Any]:
        w0 = params[_W0]
        if w0.ndim != 2 or w0.shape[1] != channels or not 1 <= w0.shape[0] <= channels:
            raise ValueError(f"param.{_W0} has shape {w0.shape}, which does not fit C={channels} channels of x")
        hidden = w0.shape[0]
        reduction = meta("reduction_ratio", int)  # several ratios floor to one width: the file's, if it fits
        if reduction is None or reduction < 1 or channels // reduction != hidden:
            reduction = channels // hidden
        if channels // reduction != hidden:
            raise ValueError(f"param.{_W0} has {hidden} rows: no reduction ratio gives C // r = {hidden} "
                             f"for C={channels}")
        return {"reduction_ratio": reduction, "no_spatial": _CONV not in params}

    def twin(self, module: Module) -> Any:
        from minibam.torch_oracle import cbam_like

        return cbam_like(module)

    def check_configs(self, thorough: bool) -> list[tuple[tuple[int, int, int, int], Config]]:
        def case(shape: tuple[int, int, int, int], pool_types: tuple[str, ...] = ("avg", "max"),
                 reduction_ratio: int = 4, no_spatial: bool = False, training: bool = True) -> Any:
            return shape, self.config(shape[1], training, reduction_ratio=reduction_ratio,
                                      pool_types=pool_types, no_spatial=no_spatial)

        # Hidden widths of 4 and 8: with only one or two hidden ReLUs, a pool's whole MLP path
        # is often switched off, and a wrong backward of that pool would go unseen.
        cases = [
            case((3, 8, 6, 5), ("avg", "max"), reduction_ratio=2),
            case((3, 16, 3, 5), ("avg", "max", "lp", "lse"), reduction_ratio=2, training=False),
        ]
        if thorough:
            cases += [
                case((3, 8, 5, 5), ("avg", "max"), training=False),
                case((2, 6, 3, 8), ("max",), reduction_ratio=3),
                case((2, 4, 5, 4), ("lp", "lse"), reduction_ratio=2),
                case((3, 8, 4, 6), ("avg", "max"), no_spatial=True),
                case((1, 16, 4, 3), ("avg", "max"), reduction_ratio=16),
            ]
        return cases

    def memory_elements(self, config: Config, shape: tuple[int, int, int, int]) -> int:
        # CBAM's layers are a subset of a BAM's without dilated convolutions: BAM's bound holds.
        n, c, h, w = shape
        hidden = max(c // max(config.options["reduction_ratio"], 1), 1)
        return 12 * n * c * h * w + 4 * n * hidden * h * w + 2 * c * hidden

    def hints(self, arrays: Mapping[str, np.ndarray], config: Config, notes: list[str],
              failed: list[str], agrees: Callable[[Config], bool]) -> list[str]:
        out = []
        if any(n.startswith("pool_types not stored") for n in notes):
            out.append("the pool types were assumed (avg,max): if the file used others, say --pool-types")
        if all(name.startswith("after.") for name in failed):
            out.append("only the running statistics differ? the released CBAM's batch norm has momentum "
                       "0.01, PyTorch's default is 0.1")
        return out


DESCRIPTION = CbamDescription()


def random_cbam(gate_channels: int, reduction_ratio: int = 16, pool_types: Any = ("avg", "max"),
                no_spatial: bool = False, seed: int = 0, dtype: Any = np.float64) -> CBAM:
    """A CBAM in training mode whose weights and batch-norm state depend only on ``seed``."""
    config = DESCRIPTION.config(gate_channels, True, dtype, reduction_ratio=reduction_ratio,
                                pool_types=tuple(pool_types), no_spatial=no_spatial)
    return DESCRIPTION.random(config, seed)
