"""``verify.cbam``: does a user's PyTorch CBAM compute what its structure says, how does
that structure differ from the paper and the released code, and which known port bug
does it make, if one?

    report = verify.cbam(MyCBAM(64))
    report.passed, report.variant, report.structure, report.deviations, report.first_divergence

What is CBAM-specific is here: reading the structure from the user's layers (the MLP's
layers in call order, how many times the shared MLP runs, a 2-to-1 convolution on the
map, a one-channel batch norm), the choices to try on it (the order of the two pooled
maps, what the spatial gate reads, where the residual is added), the known port bugs,
and the paper's and released code's structure. minibam's module is ``nn.CBAM`` built
with the options read; the check itself is `minibam.verify.check`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minibam.nn import CBAM
from minibam.nn.cbam import POOLS
from minibam.verify import harness
from minibam.verify.bam import default_shapes
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


@dataclass(frozen=True)
class Variant:
    name: str
    description: str  # one line
    correct: bool  # a module that matches it passes


KNOWN = (
    Variant("released", "the authors' released CBAM (Jongchan/attention-module, MODELS/cbam.py): "
            "sigmoid(MLP(avg) + MLP(max)) with one shared MLP, then sigmoid(BN(conv7x7([max; mean]))), "
            "pools over the whole map", True),
    Variant("paper", "the paper's equations (Woo et al., ECCV 2018, eqs. 2-3): the shared MLP, then "
            "sigmoid(conv7x7([avg; max])), no BatchNorm in the spatial gate", True),
    Variant("missing-sigmoid", "port bug: the channel gate scales by the MLP sum itself, without "
            "the sigmoid", False),
    Variant("missing-spatial-sigmoid", "port bug: the spatial gate scales by BN(conv(...)) without "
            "the sigmoid", False),
    Variant("avg-twice", "port bug: x1 + x1 instead of avg + max (the first pool's MLP output "
            "counted twice, the other pools' dropped)", False),
    Variant("unshared-mlp", "port bug: a separate MLP for each pool instead of one shared MLP "
            "(its checkpoint does not load into the released layout)", False),
    Variant("non-adaptive-pool", "port bug: pooling with a window fixed at construction: right "
            "on one map size, raises on others", False),
)
SPECS = {v.name: v for v in KNOWN}
VARIANTS: dict[str, str] = {v.name: v.description for v in KNOWN}

LABELS = {
    "mlp_depth": "hidden layers in the channel MLP",
    "mlp_layers": "channel MLP layers",
    "mlp_bias": "biases in the channel MLP",
    "mlp_hidden_bn": "BatchNorm after the MLP's hidden layer",
    "shared_mlp": "one MLP shared by the pools",
    "channel_pools": "channel gate pools",
    "spatial_gate": "spatial gate",
    "spatial_pools": "maps stacked for the spatial conv",
    "kernel": "spatial conv kernel",
    "spatial_bias": "spatial conv bias",
    "spatial_bn": "BatchNorm in the spatial gate",
    "bn_momentum": "BatchNorm momentum",
    "spatial_input": "the spatial gate reads",
    "residual": "residual",
}
INPUT_TEXT = {"refined": "the channel-refined features F'", "input": "the module's input F"}
RESIDUAL_TEXT = {False: "none: the module returns F''", True: "inside: the module returns F + F''"}
_POOL_LAYERS = {"AdaptiveAvgPool2d": "avg", "AdaptiveMaxPool2d": "max", "AvgPool2d": "avg",
                "MaxPool2d": "max", "LPPool2d": "lp"}


class _CbamKind(Kind):
    name, who, variants, combine_step = "CBAM", "verify.cbam", VARIANTS, "combine"
    paper_variant, released_variant = 'paper', 'released'

    def read(self, twin: Any, calls: list[Call], channels: int, options: dict[str, Any]) -> Reading:
        problems: list[str] = []
        mlp: list[Call] = []
        convs: list[Call] = []
        bn_of: dict[str, str] = {}
        last = None
        for c in first_calls(calls):
            if is_relu(c.module):
                continue
            if is_mlp_layer(c):
                mlp.append(c)
                last = c.name
            elif is_conv(c.module) and c.module.out_channels == 1:
                convs.append(c)
                last = c.name
            elif harness.is_batch_norm(c.module) and last is not None and last not in bn_of:
                check_batch_norm(c, problems)
                bn_of[last] = c.name
            else:
                problems.append(describe_layer(c))
        layers: dict[str, str] = {}
        opts, structure, chains = self._read_mlp(mlp, calls, bn_of, channels, layers, problems)
        pools, pools_how = self._pools(twin, calls, structure.pop("pool_count"))
        opts["pool_types"] = pools
        opts.update(self._read_spatial(convs, bn_of, layers, problems))
        if problems:
            raise ValueError("verify.cbam: cannot read the module as a CBAM: " + "; ".join(dict.fromkeys(problems)))
        notes = other_activations(calls) + ([] if pools_how == "read from the module" else [
            f"the module's pools cannot be seen (no pool_types attribute, no pooling layers); "
            f"checked with pool_types={pools}"])
        modules = dict(twin.named_modules())
        structure.update({"channel_pools": list(pools), "spatial_gate": not opts["no_spatial"],
                          "kernel": None if opts["no_spatial"] else opts["kernel_size"],
                          "spatial_bias": opts["spatial_bias"], "spatial_bn": opts["spatial_bn"],
                          "bn_momentum": momenta(layers, modules)})
        hidden = opts["hidden"]
        fingerprint = {"C": channels, "r": channels // hidden[0] if hidden else None,
                       "pool_types": ",".join(pools), "pools": pools_how, "mlps": chains,
                       "no_spatial": opts["no_spatial"], "kernel": structure["kernel"],
                       "bn_momentum": structure["bn_momentum"]}
        return Reading(channels, opts, layers, structure, fingerprint, notes)

    @staticmethod
    def _read_mlp(mlp: list[Call], calls: list[Call], bn_of: dict[str, str], channels: int,
                  layers: dict[str, str], problems: list[str]) -> tuple[dict[str, Any], dict[str, Any], int]:
        chains: list[list[Call]] = []
        for c in mlp:  # a chain starts where a layer reads all C channels
            if widths(c.module)[0] == channels or not chains:
                chains.append([])
            chains[-1].append(c)
        if not chains:
            problems.append(f"no channel MLP (a Linear, or a 1x1 conv on the pooled map, reading {channels} channels)")
            return ({"hidden": (), "mlp_bias": True, "mlp_bn": False, "shared_mlp": True},
                    {"pool_count": 2}, 0)
        shapes = [[widths(c.module) for c in chain] for chain in chains]
        for chain, sizes in zip(chains, shapes):
            if sizes[0][0] != channels or sizes[-1][1] != channels or any(
                    a[1] != b[0] for a, b in zip(sizes, sizes[1:])):
                problems.append("the channel MLP's layers do not chain from C back to C: "
                                + ", ".join(describe_layer(c) for c in chain))
        if any(s != shapes[0] for s in shapes):
            problems.append("the pools' MLPs differ in their widths")
        flat = [c for chain in chains for c in chain]
        names = [c.name for c in flat]
        bias = uniform([c.module.bias is not None for c in flat], "biases", names, problems)
        hidden_layers = [c for chain in chains for c in chain[:-1]]
        hidden_bn = uniform([c.name in bn_of for c in hidden_layers], "hidden BatchNorms",
                            [c.name for c in hidden_layers], problems) or False
        for c in flat:
            if c.name in bn_of and c not in hidden_layers:
                problems.append(f"{bn_of[c.name]} (a BatchNorm after the MLP's last layer)")
        for j, chain in enumerate(chains):
            prefix = "ChannelGate.mlp" + (str(j) if j else "")
            index = 1  # after the Flatten
            for c in chain[:-1]:
                layers[c.name] = f"{prefix}.{index}"
                if c.name in bn_of:
                    layers[bn_of[c.name]] = f"{prefix}.{index + 1}"
                index += 3 if hidden_bn else 2
            layers[chain[-1].name] = f"{prefix}.{index}"
        runs = sum(c.name == chains[0][0].name for c in calls)  # the shared MLP runs once per pool
        hidden = tuple(s[1] for s in shapes[0][:-1])
        kinds = sorted({"Linear" if hasattr(c.module, "in_features") else "1x1 conv" for c in flat})
        structure = {"C": channels, "mlp_hidden": list(hidden), "mlp_depth": len(hidden),
                     "mlp_layers": " and ".join(kinds), "mlp_bias": bias, "mlp_hidden_bn": hidden_bn,
                     "shared_mlp": len(chains) == 1, "pool_count": runs if len(chains) == 1 else len(chains)}
        return ({"hidden": hidden, "mlp_bias": bias, "mlp_bn": hidden_bn, "shared_mlp": len(chains) == 1},
                structure, len(chains))

    @staticmethod
    def _pools(twin: Any, calls: list[Call], count: int) -> tuple[tuple[str, ...], str]:
        """The pools, in order: a ``pool_types`` attribute (the released code's), else the
        pooling layers called, else assumed."""
        for m in twin.modules():
            found = getattr(m, "pool_types", None)
            if isinstance(found, (list, tuple)) and len(found) == count and all(p in POOLS for p in found):
                return tuple(found), "read from the module"
        seen = [_POOL_LAYERS[type(c.module).__name__] for c in calls if type(c.module).__name__ in _POOL_LAYERS]
        if len(seen) == count:
            return tuple(seen), "read from the module"
        return ("avg", "max", "lp", "lse")[:max(count, 1)], "assumed"

    @staticmethod
    def _read_spatial(convs: list[Call], bn_of: dict[str, str], layers: dict[str, str],
                      problems: list[str]) -> dict[str, Any]:
        if not convs:
            return {"no_spatial": True, "kernel_size": 7, "spatial_bias": False, "spatial_bn": False}
        if len(convs) > 1:
            problems.append("more than one conv to a single map: " + ", ".join(describe_layer(c) for c in convs))
        conv = convs[0]
        m = conv.module
        k = tuple(m.kernel_size)
        same = m.padding == "same" or tuple(m.padding) == (k[0] // 2, k[1] // 2)
        if m.in_channels != 2:
            problems.append(describe_layer(conv) + ": a spatial conv over one pooled map (minibam's CBAM "
                            "stacks two: max and mean)")
        if k[0] != k[1] or k[0] % 2 == 0 or not same or tuple(m.stride) != (1, 1) or tuple(m.dilation) != (1, 1):
            problems.append(describe_layer(conv) + ": not an odd square kernel keeping the map's size")
        layers[conv.name] = "SpatialGate.spatial.conv"
        if conv.name in bn_of:
            layers[bn_of[conv.name]] = "SpatialGate.spatial.bn"
        return {"no_spatial": False, "kernel_size": int(k[0]), "spatial_bias": m.bias is not None,
                "spatial_bn": conv.name in bn_of}

    def specs(self, reading: Reading) -> list[Spec]:
        o = reading.options
        orders = [("max", "avg"), ("avg", "max")] if o["spatial_bn"] else [("avg", "max"), ("max", "avg")]
        specs = []
        for residual in (False, True):
            for order in ([None] if o["no_spatial"] else orders):
                for read in (["refined"] if o["no_spatial"] else ["refined", "input"]):
                    options = {"residual": residual, "spatial_input": read}
                    if order:
                        options["spatial_pools"] = order
                    named = _name_of(o, options)
                    base = named or ("spatial BN" if o["spatial_bn"] else "no spatial BN")
                    label = (base if o["shared_mlp"] else "unshared-mlp") + (
                        "" if order is None or named in ("paper", "released") and order == _ORDER[named]
                        else f", [{'; '.join(order)}]") \
                        + ("" if read == "refined" else ", spatial gate reads F") \
                        + (", residual inside" if residual else "")
                    specs.append(Spec(label, options, named if o["shared_mlp"] else "unshared-mlp",
                                      correct=o["shared_mlp"]))
        return specs

    def bugs(self, reading: Reading, base: Spec) -> list[Spec]:
        if not reading.options["shared_mlp"]:
            return []
        found = [("missing-sigmoid", {"channel_gate": "identity"}), ("avg-twice", {"pool_terms": "first-twice"}),
                 ("non-adaptive-pool", {})]
        if not reading.options["no_spatial"]:
            found.insert(1, ("missing-spatial-sigmoid", {"spatial_gate": "identity"}))
        return [Spec(name, {**base.options, **extra}, name, correct=False, may_raise=name == "non-adaptive-pool")
                for name, extra in found]

    def refuse(self, reading: Reading, variant: str) -> str:
        return (f"verify.cbam: variant {variant!r} does not fit the module's structure (spatial BatchNorm: "
                f"{'yes' if reading.options['spatial_bn'] else 'no'}; "
                f"{'one shared MLP' if reading.options['shared_mlp'] else 'one MLP per pool'})")

    def build(self, reading: Reading, spec: Spec) -> CBAM:
        o = {**reading.options, **spec.options}
        return CBAM(reading.channels, 1, o.pop("pool_types"), o.pop("no_spatial"),
                    hidden=o.pop("hidden"), mlp_bias=o.pop("mlp_bias"), mlp_bn=o.pop("mlp_bn"),
                    shared_mlp=o.pop("shared_mlp"), spatial_bias=o.pop("spatial_bias"), **o)

    def describe(self, reading: Reading, spec: Spec) -> dict[str, Any]:
        o = spec.options
        return {**reading.structure,
                "spatial_pools": None if reading.options["no_spatial"] else list(o["spatial_pools"]),
                "spatial_input": None if reading.options["no_spatial"] else INPUT_TEXT[o["spatial_input"]],
                "residual": RESIDUAL_TEXT[o["residual"]]}

    def references(self, reading: Reading) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        paper = {"mlp_depth": 1, "mlp_layers": "Linear", "mlp_bias": False, "mlp_hidden_bn": False,
                 "shared_mlp": True, "channel_pools": ["avg", "max"], "spatial_gate": True,
                 "spatial_pools": ["avg", "max"], "kernel": 7, "spatial_bias": False, "spatial_bn": False,
                 "bn_momentum": None, "spatial_input": INPUT_TEXT["refined"], "residual": RESIDUAL_TEXT[False]}
        released = {**paper, "mlp_bias": True, "spatial_pools": ["max", "avg"], "spatial_bn": True,
                    "bn_momentum": 0.01}
        labels = dict(LABELS)
        if reading.options["no_spatial"]:
            for key in ("spatial_pools", "kernel", "spatial_bias", "spatial_bn", "spatial_input"):
                labels.pop(key)
        return paper, released, labels


_ORDER = {"paper": ("avg", "max"), "released": ("max", "avg")}


def _name_of(reading_options: dict[str, Any], options: dict[str, Any]) -> str | None:
    """"paper" or "released" when the spatial gate is one of theirs (its BatchNorm and the
    order of its pooled maps); other differences are deviations, not another variant."""
    if reading_options["no_spatial"]:
        return "released"
    order = options["spatial_pools"]
    if reading_options["spatial_bn"] and order == _ORDER["released"]:
        return "released"
    if not reading_options["spatial_bn"] and order == _ORDER["paper"]:
        return "paper"
    return None


KIND = _CbamKind()


def cbam(module: Any, variant: str = "auto", shapes: Sequence[Sequence[int]] | None = None,
         training: Sequence[bool] = (True, False), dtype: str = "float64",
         key_map: Mapping[str, str] | None = None, seed: int = 0) -> Report:
    """Check a PyTorch CBAM (see ``docs/verify.md``); the same check and report as
    `minibam.verify.bam`. ``passed`` when the module computes what its structure says;
    a module that makes a known port mistake fails with ``variant`` naming it. A module
    that raises on a legal input fails, with ``raised`` naming the case and the exception."""
    return check(KIND, module, variant, shapes, training, dtype, key_map, seed, default_shapes)
