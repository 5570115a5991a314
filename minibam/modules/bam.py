"""BAM, described once (`minibam.nn.BAM`; the mathematics: docs/bam.md).

Options: ``variant`` ("paper" or "official", read off the closing batch norms),
``reduction_ratio`` (C / the channel MLP's hidden width), ``dilation_conv_num`` (the
``gate_s_conv_di_{i}`` layers) and ``dilation_val`` (not visible in any shape: a reference
case stores it, or ``compare --dilation`` says it). A comparison may also ask for the
authors' released pooling (``nn.BAM(..., pooling="window")``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from minibam.modules import Config, Description, Option, at_least
from minibam.nn import BAM, Module
from minibam.nn.bam import VARIANTS

_FC0 = "channel_att.gate_c.gate_c_fc_0.weight"
_CLOSING_BN = ("channel_att.gate_c.gate_c_bn_final.weight", "spatial_att.gate_s.gate_s_bn_final.weight")
MAX_DILATION = 8  # the dilations a hint tries when the case does not store its own


class BamDescription(Description):
    name = "bam"
    title = "BAM"
    module_class = BAM
    format = "minibam-bam-reference"
    signature = _FC0
    options = (
        Option("--variant", "variant", str, "paper", "the variant", choices=VARIANTS),
        Option("--reduction", "reduction_ratio", at_least(1), 16, "reduction_ratio", metavar="R"),
        Option("--dilation-conv-num", "dilation_conv_num", at_least(0), 2,
               "number of dilated 3x3 convs", metavar="K"),
        Option("--dilation", "dilation_val", at_least(1), 4, "dilation_val", metavar="D", compare=True),
    )
    extra_options = ("pooling",)

    def construct(self, channels: int, options: Mapping[str, Any]) -> Module:
        return BAM(channels, options["reduction_ratio"], options["dilation_conv_num"],
                   options["dilation_val"], options["variant"], pooling=options.get("pooling", "global"))

    def manual_pair(self, config: Config) -> tuple[Callable[..., Any], Callable[..., Any]]:
        from minibam import manual

        o = config.options

        def forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict]:
            return manual.bam_forward(x, dict(params), o["variant"], config.training, o["dilation_val"],
                                      config.eps)

        return forward, manual.bam_backward

    def summary(self, config: Config) -> str:
        o = config.options
        return (f"BAM variant={o['variant']}, C={config.channels}, r={o['reduction_ratio']}, "
                f"dilated convs={o['dilation_conv_num']}, dilation={o['dilation_val']}")

    def label(self, config: Config) -> str:
        return f"BAM {config.options['variant']}"

    def detail(self, config: Config) -> str:
        o = config.options
        return (f"C/r={config.channels // o['reduction_ratio']}, "
                f"{o['dilation_conv_num']} dilated (d={o['dilation_val']})")

    def infer(self, channels: int, params: Mapping[str, np.ndarray],
              meta: Callable[[str, type], Any]) -> dict[str, Any]:
        fc0 = params[_FC0]
        if fc0.ndim != 2 or fc0.shape[1] != channels or fc0.shape[0] < 1 or channels % fc0.shape[0]:
            raise ValueError(f"param.{_FC0} has shape {fc0.shape}, which does not fit C={channels} channels of x")
        dilated = 0
        while f"spatial_att.gate_s.gate_s_conv_di_{dilated}.weight" in params:
            dilated += 1
        variant = "paper" if any(k in params for k in _CLOSING_BN) else "official"
        stored = meta("variant", str)
        if stored is not None and stored != variant:
            raise ValueError(f"meta.variant is {stored!r} but the parameters are those of {variant!r}")
        return {"variant": variant, "reduction_ratio": channels // fc0.shape[0], "dilation_conv_num": dilated}

    def twin(self, module: Module) -> Any:
        from minibam.torch_oracle import bam_like

        return bam_like(module)

    def check_configs(self, thorough: bool) -> list[tuple[tuple[int, int, int, int], Config]]:
        def case(shape: tuple[int, int, int, int], variant: str, reduction_ratio: int = 4,
                 dilation_conv_num: int = 2, dilation_val: int = 2, training: bool = True) -> Any:
            return shape, self.config(shape[1], training, variant=variant, reduction_ratio=reduction_ratio,
                                      dilation_conv_num=dilation_conv_num, dilation_val=dilation_val)

        cases = [case((4, 8, 6, 5), "paper"), case((4, 8, 5, 6), "official", dilation_val=4)]
        if thorough:
            for variant in VARIANTS:
                cases += [
                    case((3, 8, 5, 5), variant, training=False),
                    case((2, 4, 4, 7), variant, reduction_ratio=2, dilation_conv_num=0),
                    case((3, 6, 5, 4), variant, reduction_ratio=3, dilation_conv_num=1, dilation_val=1),
                    case((3, 8, 6, 6), variant, dilation_conv_num=3, dilation_val=4),
                    case((5, 16, 4, 4), variant, reduction_ratio=16),
                ]
        return cases

    def memory_elements(self, config: Config, shape: tuple[int, int, int, int]) -> int:
        # x, dy, y, dx, the attention map and its temporaries: a generous 12 full-size
        # arrays; the spatial branch with its 3x3 im2col columns; the weights.
        n, c, h, w = shape
        hidden = max(c // max(config.options["reduction_ratio"], 1), 1)
        dilated = config.options["dilation_conv_num"]
        return (12 * n * c * h * w + (4 + 9 * dilated) * n * hidden * h * w
                + 2 * c * hidden + 9 * dilated * hidden * hidden)

    def hints(self, arrays: Mapping[str, np.ndarray], config: Config, notes: list[str],
              failed: list[str], agrees: Callable[[Config], bool]) -> list[str]:
        """The released code's pooling on a non-square map (a rerun with it), and an assumed
        dilation (dilations 1 to `MAX_DILATION` rerun)."""
        out, possible = [], None
        _, _, h, w = arrays["x"].shape
        if h != w and h <= w < 2 * h and "y" in failed:  # where the released code runs at all
            window = config.with_options(pooling="window")
            if agrees(window):
                config = window
                out.append(f"x is {h}x{w}: with the authors' released pooling (only the top-left {h}x{h} "
                           f"window, avg_pool2d with kernel H) every array agrees, so the file comes from "
                           f"the released code (verify.bam calls it 'official-released'); minibam pools "
                           f"the whole map")
            else:
                possible = (f"x is {h}x{w}, not square: if the file came from the authors' released code, "
                            f"its channel branch pools only the top-left {h}x{h} window (avg_pool2d with "
                            f"kernel H), a probable cause")
        assumed = config.options["dilation_val"]
        if config.options["dilation_conv_num"] and any(n.startswith("dilation_val not stored") for n in notes):
            for d in range(1, MAX_DILATION + 1):
                if d != assumed and agrees(config.with_options(dilation_val=d)):
                    out.append(f"the dilation was assumed ({assumed}); with --dilation {d} every array agrees")
                    break
        return out or ([possible] if possible else [])


DESCRIPTION = BamDescription()


def random_bam(gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
               dilation_val: int = 4, variant: str = "paper", seed: int = 0,
               dtype: Any = np.float64) -> BAM:
    """A BAM in training mode whose weights and batch-norm state depend only on ``seed``
    (`Description.random`); reseeds minibam's initialisation generator."""
    config = DESCRIPTION.config(gate_channel, True, dtype, reduction_ratio=reduction_ratio,
                                dilation_conv_num=dilation_conv_num, dilation_val=dilation_val,
                                variant=variant)
    return DESCRIPTION.random(config, seed)
