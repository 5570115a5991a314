"""CBAM reference cases: the ``.npz`` format of `minibam.checks.reference`, for CBAM.

The same arrays as a BAM case (``x``, ``dy``, ``y``, ``dx``, ``param.<name>`` before the
pass, ``grad.<name>``, ``after.<buffer>``, ``meta.<field>``), under ``CBAM.state_dict()``
names, which are those of the authors' released code, so a file written from their
PyTorch CBAM needs no renaming. ``meta.format`` is ``"minibam-cbam-reference"``;
``meta.pool_types`` (e.g. ``"avg,max"``) and ``meta.training`` say what the parameters
cannot: without them "avg,max" is assumed and the mode is read off the running mean.
Comparing reuses `minibam.checks.reference.compare_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minibam.checks.cbam import random_cbam
from minibam.checks.reference import (
    REQUIRED,
    ReferenceFileError,
    _meta,
    case_arrays,
    check_case,
    check_numbers,
)
from minibam.nn import CBAM, BatchNorm2d
from minibam.nn.cbam import POOLS

FORMAT = "minibam-cbam-reference"
FORMAT_VERSION = 1
_W0 = "ChannelGate.mlp.1.weight"
_CONV = "SpatialGate.spatial.conv.weight"


@dataclass
class CbamConfig:
    gate_channels: int
    reduction_ratio: int = 16
    pool_types: tuple[str, ...] = ("avg", "max")
    no_spatial: bool = False
    training: bool = True
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    eps: float = 1e-5
    momentum: float = 0.01

    def build(self) -> CBAM:
        cbam = CBAM(self.gate_channels, self.reduction_ratio, self.pool_types, self.no_spatial)
        for module in cbam.modules():
            if isinstance(module, BatchNorm2d):
                module.eps, module.momentum = self.eps, self.momentum
        return cbam.to(self.dtype).train(self.training)

    def describe(self) -> str:
        return (f"CBAM C={self.gate_channels}, r={self.reduction_ratio}, pool_types="
                f"{','.join(self.pool_types)}{', no spatial gate' if self.no_spatial else ''}, "
                f"{'training' if self.training else 'eval'}, {self.dtype}")


def is_cbam_case(arrays: dict[str, np.ndarray]) -> bool:
    fmt = arrays.get("meta.format")
    return (fmt is not None and str(fmt) == FORMAT) or f"param.{_W0}" in arrays


def make_cbam_reference(config: CbamConfig, batch: int, height: int, width: int,
                        seed: int) -> dict[str, np.ndarray]:
    """The arrays of a CBAM reference case: random weights and BatchNorm state from ``seed``."""
    cbam = random_cbam(config.gate_channels, config.reduction_ratio, config.pool_types,
                       config.no_spatial, seed=seed, dtype=config.dtype).train(config.training)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "pool_types": ",".join(config.pool_types),
            "training": config.training, "reduction_ratio": config.reduction_ratio,
            "eps": config.eps, "momentum": config.momentum, "seed": seed}
    return case_arrays(cbam, (batch, config.gate_channels, height, width), config.dtype, seed, meta)


def infer_cbam_config(arrays: dict[str, np.ndarray], training: bool | None = None,
                      pool_types: tuple[str, ...] | None = None) -> tuple[CbamConfig, list[str]]:
    """The CBAM that produced ``arrays``, and notes on what had to be assumed."""
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    missing = [k for k in REQUIRED if k not in arrays] + ([] if _W0 in params else [f"param.{_W0}"])
    if missing:
        raise ReferenceFileError(f"not a CBAM reference case: no {', '.join(missing)}")
    check_numbers(arrays)
    x = check_case(arrays, FORMAT_VERSION)
    w0, channels = params[_W0], x.shape[1]
    if w0.ndim != 2 or w0.shape[1] != channels or not 1 <= w0.shape[0] <= channels:
        raise ReferenceFileError(f"param.{_W0} has shape {w0.shape}, which does not fit C={channels} channels of x")
    notes: list[str] = []
    if pool_types is None:
        stored = _meta(arrays, "pool_types", str)
        if stored is None:
            notes.append("pool_types not stored in the file, assumed avg,max")
        pool_types = tuple(stored.split(",")) if stored else ("avg", "max")
    unknown = [p for p in pool_types if p not in POOLS]
    if unknown or not pool_types:
        raise ReferenceFileError(f"pool types {pool_types} are not drawn from {tuple(POOLS)}")
    if training is None:
        training = _meta(arrays, "training", bool)
    if training is None:
        key = "SpatialGate.spatial.bn.running_mean"
        if f"after.{key}" in arrays and key in params:
            training = not np.array_equal(arrays[f"after.{key}"].astype(np.float32), params[key].astype(np.float32))
            notes.append(f"mode not stored in the file; the running mean after the pass says "
                         f"{'training' if training else 'eval'}")
        else:
            training = True
            notes.append("mode not stored in the file, assumed training")
    hidden = w0.shape[0]
    config = CbamConfig(channels, channels // hidden, tuple(pool_types), _CONV not in params, training, x.dtype,
                        _meta(arrays, "eps", float) or 1e-5, _meta(arrays, "momentum", float) or 0.01)
    if channels // config.reduction_ratio != hidden:
        raise ReferenceFileError(f"param.{_W0} has {hidden} rows: no reduction ratio gives C // r = {hidden} "
                                 f"for C={channels}")
    return config, notes


def cbam_hints(config: CbamConfig, notes: list[str], rows: list, given_pools: bool) -> list[str]:
    """Likely causes of a failed comparison (none when every row passed)."""
    failed = [r.name for r in rows if not r.passed]
    out = []
    if failed and not given_pools and any(n.startswith("pool_types not stored") for n in notes):
        out.append("the pool types were assumed (avg,max): if the file used others, say --pool-types")
    if failed and all(n.startswith("after.") for n in failed):
        out.append("only the running statistics differ? the released CBAM's batch norm has momentum "
                   "0.01, PyTorch's default is 0.1")
    return out
