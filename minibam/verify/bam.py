"""``verify.bam``: does a user's PyTorch BAM compute what its structure says, and how does
that structure differ from the paper and the released code?

    report = verify.bam(MyBAM(64))
    report.passed, report.variant, report.structure, report.deviations, report.first_divergence

What is BAM-specific is here: reading the structure from the user's layers (`KIND.read`),
the choices to try on it (combination, residual, pooling) and the named variants
(`minibam.verify.bam_variants`), and the paper's and the released code's structure for
the deviations. minibam's module is ``nn.BAM`` built with the options read; the check
itself is `minibam.verify.check`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from minibam.nn import BAM
from minibam.verify import harness
from minibam.verify.bam_variants import SPECS, VARIANTS, name_of
from minibam.verify.check import Kind, Reading, Spec, check
from minibam.verify.reading import (
    Call,
    check_batch_norm,
    describe_layer,
    first_calls,
    is_conv,
    is_mlp_layer,
    is_relu,
    momenta,
    other_activations,
    uniform,
    widths,
)
from minibam.verify.report import Report

CH, SP = "channel_att.gate_c.", "spatial_att.gate_s."


def default_shapes(channels: int) -> list[tuple[int, int, int, int]]:
    """A square map and a non-square one with H < W < 2H (where the released code runs
    but pools only an H x H window)."""
    return [(4, channels, 8, 8), (3, channels, 6, 10)]


LABELS = {
    "mlp_depth": "hidden layers in the channel MLP",
    "mlp_layers": "channel MLP layers",
    "mlp_bias": "biases in the channel MLP",
    "mlp_hidden_bn": "BatchNorm after each hidden layer of the channel MLP",
    "closing_bn_channel": "BatchNorm closing the channel branch",
    "channel_pool": "channel branch pooling",
    "reduce_bn": "BatchNorm after the spatial branch's 1x1 reduction",
    "reduce_relu": "ReLU after the spatial branch's 1x1 reduction",
    "dilated_convs": "dilated convs in the spatial branch",
    "kernel": "dilated conv kernel",
    "dilation": "dilation",
    "padding": "dilated conv padding",
    "dilated_bn": "BatchNorm after each dilated conv",
    "conv_bias": "biases in the spatial branch's convs",
    "closing_bn_spatial": "BatchNorm closing the spatial branch",
    "bn_momentum": "BatchNorm momentum",
    "combine": "branches combined by",
    "residual": "residual",
}
POOLING_TEXT = {"global": "global average", "window": "H x H window (avg_pool2d, kernel H)"}
RESIDUAL_TEXT = {True: "inside: x * (1 + attention)", False: "outside: the module returns x * attention"}


class _BamKind(Kind):
    name, who, variants, combine_step = "BAM", "verify.bam", VARIANTS, "combine"
    paper_variant, released_variant = 'paper', 'official'

    def read(self, twin: Any, calls: list[Call], channels: int, options: dict[str, Any]) -> Reading:
        problems: list[str] = []
        mlp: list[Call] = []
        convs: list[Call] = []
        bn_of: dict[str, str] = {}
        relu_after: set[str] = set()
        last: str | None = None
        for c in first_calls(calls):
            if is_relu(c.module):
                if last is not None:
                    relu_after.add(last)
            elif is_mlp_layer(c):
                mlp.append(c)
                last = c.name
            elif is_conv(c.module):
                convs.append(c)
                last = c.name
            elif harness.is_batch_norm(c.module) and last is not None and last not in bn_of:
                check_batch_norm(c, problems)
                bn_of[last] = c.name
            else:
                problems.append(describe_layer(c) + ("" if last is None or not harness.is_batch_norm(c.module)
                                                     else f": a second BatchNorm after {last}"))
        # nn.ReLU layers after the spatial branch's convs: without any, its ReLUs are
        # functional (F.relu), invisible to hooks, and assumed where BAM has them
        relus_seen = any(c.name in relu_after for c in convs)
        layers: dict[str, str] = {}
        opts = self._read_mlp(mlp, bn_of, channels, layers, problems)
        opts.update(self._read_spatial(convs, bn_of, relu_after, relus_seen, channels, layers, problems))
        if opts.get("closing_channel") is not None and opts.get("closing_spatial") is not None \
                and opts["closing_channel"] != opts["closing_spatial"]:
            problems.append("a BatchNorm closes one branch but not the other (minibam's BAM closes both "
                            "or neither)")
        if problems:
            raise ValueError("verify.bam: cannot read the module as a BAM: " + "; ".join(dict.fromkeys(problems)))
        notes = other_activations(calls)
        if not relus_seen:
            notes.append("the module's spatial branch has no nn.ReLU layers (functional activations "
                         "cannot be seen); checked with a ReLU wherever BAM has one")
        dilation_val = options.get("dilation_val", 4)
        if opts["dilation_val"] is None:
            opts["dilation_val"] = dilation_val
        elif opts["dilation_val"] != dilation_val:
            notes.append(f"the module's dilated convs use dilation {opts['dilation_val']}; "
                         f"checked with it, not dilation_val={dilation_val}")
        closing = opts.pop("closing_channel")
        opts.pop("closing_spatial")
        opts["closing_bn"] = closing
        modules = dict(twin.named_modules())
        structure = {
            "C": channels, "mlp_hidden": list(opts["hidden"]), "mlp_depth": len(opts["hidden"]),
            "mlp_layers": opts.pop("mlp_layers"), "mlp_bias": opts["mlp_bias"], "mlp_hidden_bn": opts["mlp_bn"],
            "closing_bn_channel": closing, "spatial_width": opts["spatial_width"],
            "reduce_bn": opts["reduce_bn"], "reduce_relu": opts["reduce_relu"],
            "dilated_convs": opts["dilation_conv_num"], "kernel": opts["kernel_size"],
            "dilation": opts["dilation_val"], "padding": opts["padding"], "dilated_bn": opts["dilated_bn"],
            "conv_bias": opts["conv_bias"], "closing_bn_spatial": closing,
            "bn_momentum": momenta(layers, modules),
        }
        hidden = opts["hidden"]
        fingerprint = {"C": channels, "r": channels // hidden[0] if hidden else None,
                       "dilated_convs": opts["dilation_conv_num"],
                       "dilation": opts["dilation_val"] if opts["dilation_conv_num"] else None,
                       "closing_bn": closing}
        return Reading(channels, opts, layers, structure, fingerprint, notes)

    @staticmethod
    def _read_mlp(mlp: list[Call], bn_of: dict[str, str], channels: int, layers: dict[str, str],
                  problems: list[str]) -> dict[str, Any]:
        if not mlp:
            problems.append("no channel MLP (a Linear, or a 1x1 conv on the pooled map, reading "
                            f"{channels} channels)")
            return {"hidden": (), "mlp_bias": True, "mlp_bn": True, "mlp_layers": None, "closing_channel": None}
        sizes = [widths(c.module) for c in mlp]
        chain = all(a[1] == b[0] for a, b in zip(sizes, sizes[1:]))
        if not chain or sizes[0][0] != channels or sizes[-1][1] != channels:
            problems.append("the channel MLP's layers do not chain from C back to C: "
                            + ", ".join(describe_layer(c) for c in mlp))
        names = [c.name for c in mlp]
        bias = uniform([c.module.bias is not None for c in mlp], "biases", names, problems)
        hidden_bn = uniform([c.name in bn_of for c in mlp[:-1]], "hidden BatchNorms", names[:-1], problems)
        kinds = sorted({"Linear" if hasattr(c.module, "in_features") else "1x1 conv" for c in mlp})
        for i, c in enumerate(mlp):
            ours = CH + (f"gate_c_fc_{i}" if i < len(mlp) - 1 else "gate_c_fc_final")
            layers[c.name] = ours
            if c.name in bn_of:
                layers[bn_of[c.name]] = CH + (f"gate_c_bn_{i + 1}" if i < len(mlp) - 1 else "gate_c_bn_final")
        return {"hidden": tuple(s[1] for s in sizes[:-1]), "mlp_bias": bias,
                "mlp_bn": bool(hidden_bn) if hidden_bn is not None else True,
                "mlp_layers": " and ".join(kinds), "closing_channel": mlp[-1].name in bn_of}

    @staticmethod
    def _read_spatial(convs: list[Call], bn_of: dict[str, str], relu_after: set[str], relus_seen: bool,
                      channels: int, layers: dict[str, str], problems: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"spatial_width": None, "reduce_bn": True, "reduce_relu": True,
                               "dilation_conv_num": 0, "dilation_val": None, "kernel_size": 3, "padding": None,
                               "dilated_bn": True, "conv_bias": True, "closing_spatial": None}
        if not convs or convs[0].module.in_channels != channels or tuple(convs[0].module.kernel_size) != (1, 1):
            problems.append(f"no spatial branch starting with a 1x1 conv reading {channels} channels"
                            + (f" (found {describe_layer(convs[0])})" if convs else ""))
            return out
        reduce, final, dilated = convs[0], convs[-1], convs[1:-1]
        width = reduce.module.out_channels
        if len(convs) < 2 or final.module.out_channels != 1 or tuple(final.module.kernel_size) != (1, 1):
            problems.append("the spatial branch does not end in a 1x1 conv to one map"
                            + (f" (found {describe_layer(final)})" if len(convs) > 1 else ""))
        for c in dilated:
            m = c.module
            if (m.in_channels, m.out_channels) != (width, width) or tuple(m.stride) != (1, 1):
                problems.append(describe_layer(c) + f": not a dilated conv {width}->{width} of stride 1")
        for c in convs:
            if tuple(c.module.stride) != (1, 1) or c.module.groups != 1:
                problems.append(describe_layer(c) + ": strided or grouped")
        names = [c.name for c in dilated]
        kernel = uniform([int(c.module.kernel_size[0]) for c in dilated], "kernel sizes", names, problems) or 3
        dilation = uniform([int(c.module.dilation[0]) for c in dilated], "dilations", names, problems)
        pads = [c.module.padding for c in dilated]
        pads = [dilation * (kernel - 1) // 2 if p == "same" else int(p[0]) for p in pads] if dilation else []
        padding = uniform(pads, "paddings", names, problems)
        if any(c.module.kernel_size[0] != c.module.kernel_size[1] for c in dilated):
            problems.append("a dilated conv with a non-square kernel")
        out.update(
            spatial_width=int(width), reduce_bn=reduce.name in bn_of,
            reduce_relu=reduce.name in relu_after if relus_seen else True,
            dilation_conv_num=len(dilated), dilation_val=dilation, kernel_size=kernel, padding=padding,
            dilated_bn=bool(uniform([c.name in bn_of for c in dilated], "dilated BatchNorms", names, problems)
                            if dilated else True),
            conv_bias=uniform([c.module.bias is not None for c in convs], "conv biases",
                              [c.name for c in convs], problems),
            closing_spatial=final.name in bn_of)
        layers[reduce.name] = SP + "gate_s_conv_reduce0"
        if reduce.name in bn_of:
            layers[bn_of[reduce.name]] = SP + "gate_s_bn_reduce0"
        for i, c in enumerate(dilated):
            layers[c.name] = SP + f"gate_s_conv_di_{i}"
            if c.name in bn_of:
                layers[bn_of[c.name]] = SP + f"gate_s_bn_di_{i}"
        layers[final.name] = SP + "gate_s_conv_final"
        if final.name in bn_of:
            layers[bn_of[final.name]] = SP + "gate_s_bn_final"
        return out

    def specs(self, reading: Reading) -> list[Spec]:
        o = reading.options
        closing = o["closing_bn"]
        combines = ("sum", "product") if closing else ("product", "sum")
        specs = []
        for pooling in ("global", "window"):
            for residual in (True, False):
                for combine in combines:
                    named = name_of(closing, combine, pooling, _inner_bn(o))
                    label = (named or f"{combine}{' with' if closing else ' without'} closing BNs") \
                        + ("" if residual else ", residual outside") \
                        + ("" if pooling == "global" or named else ", H x H window")
                    specs.append(Spec(label, {"combine": combine, "pooling": pooling, "residual": residual}, named))
        return specs

    def refuse(self, reading: Reading, variant: str) -> str:
        has, closing = SPECS[variant].closing_bn, reading.options["closing_bn"]
        if has != closing:
            return (f"verify.bam: variant {variant!r} {'has' if has else 'has no'} closing BatchNorms, "
                    f"the module {'has' if closing else 'has none'}")
        return (f"verify.bam: variant {variant!r} does not fit the module's structure (BatchNorms inside "
                f"the branches: {'yes' if _inner_bn(reading.options) else 'no'})")

    def indistinct(self, a: Spec, b: Spec) -> bool:
        """The H x H window and the global average agree on square maps."""
        keep = ("combine", "residual")
        return all(a.options[k] == b.options[k] for k in keep)

    def build(self, reading: Reading, spec: Spec) -> BAM:
        o = {**reading.options, **spec.options}
        return BAM(reading.channels, 1, o.pop("dilation_conv_num"), o.pop("dilation_val"), "paper", **o)

    def describe(self, reading: Reading, spec: Spec) -> dict[str, Any]:
        return {**reading.structure, "channel_pool": POOLING_TEXT[spec.options["pooling"]],
                "combine": spec.options["combine"], "residual": RESIDUAL_TEXT[spec.options["residual"]]}

    def references(self, reading: Reading) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        paper = {"mlp_depth": 1, "mlp_layers": "Linear", "mlp_bias": True, "mlp_hidden_bn": True,
                 "closing_bn_channel": True, "channel_pool": POOLING_TEXT["global"], "reduce_bn": True,
                 "reduce_relu": True, "dilated_convs": 2, "kernel": 3, "dilation": 4, "padding": 4,
                 "dilated_bn": True, "conv_bias": True, "closing_bn_spatial": True, "bn_momentum": 0.1,
                 "combine": "sum", "residual": RESIDUAL_TEXT[True]}
        released = {**paper, "closing_bn_channel": False, "closing_bn_spatial": False,
                    "channel_pool": POOLING_TEXT["window"], "combine": "product"}
        structure = reading.structure
        labels = dict(LABELS)
        if structure["dilated_convs"] == 0:  # no dilated conv: its kernel, dilation, padding are moot
            for key in ("kernel", "dilation", "padding", "dilated_bn"):
                labels.pop(key)
        return paper, released, labels


def _inner_bn(options: dict[str, Any]) -> bool:
    return bool(options["mlp_bn"] or options["reduce_bn"]
                or (options["dilated_bn"] and options["dilation_conv_num"] > 0))


KIND = _BamKind()


def bam(module: Any, variant: str = "auto", shapes: Sequence[Sequence[int]] | None = None,
        training: Sequence[bool] = (True, False), dtype: str = "float64", dilation_val: int = 4,
        key_map: Mapping[str, str] | None = None, seed: int = 0) -> Report:
    """Check a PyTorch BAM (see ``docs/verify.md``): read its structure from its layers,
    build minibam's ``nn.BAM`` of that structure with its weights (on a copy, with random
    parameters and batch-norm buffers), and compare the output, the input gradient under a
    random upstream gradient, every parameter gradient and the buffers after the pass, for
    each shape and mode. ``report.passed``: the module computes what its structure says;
    ``report.deviations``: how that structure differs from the paper and the released
    code. ``ValueError`` for a module whose structure cannot be read (naming its layers)
    or bad arguments. A module that raises on a legal input fails, ``raised`` naming the
    case and the exception.
    """
    return check(KIND, module, variant, shapes, training, dtype, key_map, seed, default_shapes,
                 {"dilation_val": dilation_val})
