"""Reference cases: one BAM forward + backward, frozen in a self-contained ``.npz``.

Format (version 1), every entry a plain array (no pickles):

=========================  =====================================================
``x``, ``dy``              input (N, C, H, W) and upstream gradient, same shape
``y``, ``dx``              output and dL/dx for L = <dy, y>
``param.<name>``           every parameter **and buffer** of ``state_dict()``,
                           as they were *before* the forward pass
``grad.<name>``            dL/d(parameter) for every parameter
``after.<name>``           optional: each buffer after the forward pass
                           (training mode updates the running statistics)
``meta.<field>``           optional: ``format``, ``format_version``, ``variant``,
                           ``training``, ``reduction_ratio``, ``dilation_conv_num``,
                           ``dilation_val``, ``eps``, ``momentum``, ``seed``
=========================  =====================================================

Names are ``BAM.state_dict()``'s, which are those of the authors' PyTorch code, so a
file written from a PyTorch BAM needs no renaming. Without ``meta``, the configuration
is read off the parameter shapes (C, C/r, the number of dilated convs, and the variant
from whether the closing BatchNorms exist), and the mode from whether ``after.*``
moved the running means; the dilation cannot be, and defaults to 4 unless given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from minibam import functional as F
from minibam.checks.bam import buffer_arrays, random_bam
from minibam.checks.compare import Row, compare, default_tolerance, largest
from minibam.nn import BAM, BatchNorm1d, BatchNorm2d, Module, StateDictError
from minibam.ops.attention import bam_combine
from minibam.tensor import Tensor

FORMAT = "minibam-bam-reference"
FORMAT_VERSION = 1
REQUIRED = ("x", "dy", "y", "dx")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

_FC0 = "channel_att.gate_c.gate_c_fc_0.weight"
_CLOSING_BN = ("channel_att.gate_c.gate_c_bn_final.weight", "spatial_att.gate_s.gate_s_bn_final.weight")


class ReferenceFileError(ValueError):
    """The file cannot be read, or is not a BAM reference case."""


@dataclass
class BamConfig:
    gate_channel: int
    reduction_ratio: int = 16
    dilation_conv_num: int = 2
    dilation_val: int = 4
    variant: str = "paper"
    training: bool = True
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    eps: float = 1e-5
    momentum: float = 0.1

    def build(self) -> BAM:
        bam = BAM(self.gate_channel, self.reduction_ratio, self.dilation_conv_num,
                  self.dilation_val, self.variant)
        for module in bam.modules():
            if isinstance(module, (BatchNorm1d, BatchNorm2d)):
                module.eps, module.momentum = self.eps, self.momentum
        return bam.to(self.dtype).train(self.training)

    def describe(self) -> str:
        return (f"BAM variant={self.variant}, C={self.gate_channel}, r={self.reduction_ratio}, "
                f"dilated convs={self.dilation_conv_num}, dilation={self.dilation_val}, "
                f"{'training' if self.training else 'eval'}, {self.dtype}")


def _forward_backward(bam: BAM, x: np.ndarray, dy: np.ndarray,
                      pooling: str = "global") -> tuple[Tensor, Tensor]:
    """``pooling="window"``: the channel branch pools only the top-left H x H window, as
    the authors' released code does on a non-square map (used to test that hint)."""
    xt = Tensor(x, requires_grad=True)
    if pooling == "window":
        n, c, h, _ = x.shape
        mc = bam.channel_att.gate_c(F.global_avg_pool2d(xt[:, :, :h, :h])).reshape(n, c, 1, 1)
        ms = bam.spatial_att.spatial_map(xt)
        y = bam_combine(xt, mc, ms, "sum" if bam.variant == "paper" else "product")
    else:
        y = bam(xt)
    y.backward(dy)
    return y, xt


def case_arrays(module: Module, shape: tuple[int, ...], dtype: np.dtype, seed: int,
                meta: dict[str, object]) -> dict[str, np.ndarray]:
    """One forward and backward of ``module`` on ``x`` and ``dy`` drawn from ``seed``, as the
    arrays of a reference case: x, dy, y, dx, param.* (before the pass), grad.*, after.*
    (the buffers after it) and meta.*. Shared by BAM's and CBAM's cases."""
    rng = np.random.default_rng([seed, 2])
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    before = module.state_dict()
    xt = Tensor(x, requires_grad=True)
    y = module(xt)
    y.backward(dy)
    arrays = {"x": x, "dy": dy, "y": y.data, "dx": xt.grad}
    arrays.update({f"param.{k}": v for k, v in before.items()})
    arrays.update({f"grad.{k}": p.grad for k, p in module.named_parameters()})
    arrays.update({f"after.{k}": v for k, v in buffer_arrays(module).items()})
    arrays.update({f"meta.{k}": np.array(v) for k, v in meta.items()})
    return arrays


def make_reference(config: BamConfig, batch: int, height: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays of a reference case: random weights and BatchNorm state from ``seed``."""
    bam = random_bam(config.gate_channel, config.reduction_ratio, config.dilation_conv_num,
                     config.dilation_val, config.variant, seed=seed, dtype=config.dtype)
    bam.train(config.training)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "variant": config.variant,
        "training": config.training, "reduction_ratio": config.reduction_ratio,
        "dilation_conv_num": config.dilation_conv_num, "dilation_val": config.dilation_val,
        "eps": config.eps, "momentum": config.momentum, "seed": seed,
    }
    return case_arrays(bam, (batch, config.gate_channel, height, width), config.dtype, seed, meta)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write exactly ``path`` (``np.savez`` alone would append ``.npz`` to other names),
    atomically: an interrupted write leaves any earlier file as it was."""
    from minibam._atomic import atomic_write

    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, read eagerly and never unpickled; errors do not
    repeat the path (the caller names the file)."""
    path = Path(path)
    if not path.exists():
        raise ReferenceFileError("no such file")
    if not path.is_file():
        raise ReferenceFileError("not a file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as error:
        raise ReferenceFileError(f"cannot read it ({error.strerror or error})") from None
    if magic == b"\x93NUMPY":
        raise ReferenceFileError("a single .npy array, not an .npz reference case")
    if not magic.startswith(b"PK"):
        raise ReferenceFileError("not an .npz archive (an .npz is a zip file; this one is not)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as error:  # BadZipFile, zlib.error, a pickled member (ValueError), ...
        detail = (str(error).splitlines() or [""])[0]
        raise ReferenceFileError(f"not a readable .npz archive ({type(error).__name__}: {detail})") from None


def _meta(arrays: dict[str, np.ndarray], name: str, kind: type) -> Any:
    value = arrays.get(f"meta.{name}")
    if value is None:
        return None
    try:
        return kind(value.item() if kind is not str else str(value))
    except (TypeError, ValueError):
        raise ReferenceFileError(f"meta.{name} = {value!r} is not a valid {kind.__name__}") from None


def check_case(arrays: dict[str, np.ndarray], newest: int) -> np.ndarray:
    """What every reference case (BAM's and CBAM's) must satisfy once its keys are there:
    a format version this minibam reads (at most ``newest``), and x a float (N, C, H, W)
    array with dy, y and dx of its shape. Returns x."""
    version = _meta(arrays, "format_version", int)
    if version is not None and version > newest:
        raise ReferenceFileError(f"format version {version} is newer than this minibam reads ({newest})")
    x = arrays["x"]
    if x.ndim != 4 or x.dtype not in DTYPES:
        raise ReferenceFileError(f"x must be a float32 or float64 (N, C, H, W) array, got {x.dtype} {x.shape}")
    for name in ("dy", "y", "dx"):
        if arrays[name].shape != x.shape:
            raise ReferenceFileError(f"{name} has shape {arrays[name].shape}, x has {x.shape}")
    return x


def check_numbers(arrays: dict[str, np.ndarray]) -> None:
    """``ReferenceFileError`` unless every array holds real numbers and what minibam runs
    on (``x``, ``dy``, ``param.*``) is finite: a NaN there makes every result NaN, and the
    comparison would blame minibam's side for the file's."""
    not_numbers = [k for k, v in arrays.items() if not k.startswith("meta.") and v.dtype.kind not in "biuf"]
    if not_numbers:
        raise ReferenceFileError(
            f"{not_numbers[0]} holds {arrays[not_numbers[0]].dtype}, not numbers"
            + (f" (and {len(not_numbers) - 1} more)" if len(not_numbers) > 1 else "")
        )
    inputs = [k for k in arrays if k in ("x", "dy") or k.startswith("param.")]
    not_finite = [k for k in inputs if not np.all(np.isfinite(arrays[k]))]
    if not_finite:
        raise ReferenceFileError(
            f"{not_finite[0]} holds NaN or inf, and minibam runs on it: nothing could be compared"
            + (f" (and {len(not_finite) - 1} more)" if len(not_finite) > 1 else "")
        )


def infer_config(arrays: dict[str, np.ndarray], dilation_val: int | None = None,
                 training: bool | None = None) -> tuple[BamConfig, list[str]]:
    """The BAM that produced ``arrays``, and notes on what had to be assumed."""
    missing = [k for k in REQUIRED if k not in arrays]
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    if missing or _FC0 not in params:
        found = ", ".join(sorted(arrays)[:8]) + (", ..." if len(arrays) > 8 else "")
        lacking = ", ".join(missing + ([] if _FC0 in params else [f"param.{_FC0}"]))
        raise ReferenceFileError(f"not a BAM reference case: no {lacking} (found: {found or 'nothing'})")
    check_numbers(arrays)
    fmt = _meta(arrays, "format", str)
    if fmt is not None and fmt != FORMAT:
        raise ReferenceFileError(f"meta.format is {fmt!r}, not {FORMAT!r}")
    x = check_case(arrays, FORMAT_VERSION)
    fc0 = params[_FC0]
    channels = x.shape[1]
    if fc0.ndim != 2 or fc0.shape[1] != channels or fc0.shape[0] < 1 or channels % fc0.shape[0]:
        raise ReferenceFileError(
            f"param.{_FC0} has shape {fc0.shape}, which does not fit C={channels} channels of x"
        )
    notes: list[str] = []
    dilated = 0
    while f"spatial_att.gate_s.gate_s_conv_di_{dilated}.weight" in params:
        dilated += 1
    variant = "paper" if any(k in params for k in _CLOSING_BN) else "official"
    meta_variant = _meta(arrays, "variant", str)
    if meta_variant is not None and meta_variant != variant:
        raise ReferenceFileError(f"meta.variant is {meta_variant!r} but the parameters are those of {variant!r}")

    def pick(name: str, given: Any, kind: type, default: Any) -> Any:
        if given is not None:
            return given
        stored = _meta(arrays, name, kind)
        if stored is not None:
            return stored
        notes.append(f"{name} not stored in the file, assumed {default}")
        return default

    if training is None and _meta(arrays, "training", bool) is None:
        # Training moves the running means; evaluation leaves them as they were.
        # Compared in float32: a float32 file may hold float64 parameters, rounded in after.*.
        moved = [not np.array_equal(arrays[k].astype(np.float32), params[k[len("after."):]].astype(np.float32))
                 for k in arrays
                 if k.startswith("after.") and k.endswith(".running_mean") and k[len("after."):] in params]
        if moved:
            training = any(moved)
            notes.append(f"mode not stored in the file; the running means after the pass say "
                         f"{'training' if training else 'eval'}")

    config = BamConfig(
        gate_channel=channels,
        reduction_ratio=channels // fc0.shape[0],
        dilation_conv_num=dilated,
        dilation_val=pick("dilation_val", dilation_val, int, 4),
        variant=variant,
        training=pick("training", training, bool, True),
        dtype=x.dtype,
        eps=_meta(arrays, "eps", float) or 1e-5,
        momentum=_meta(arrays, "momentum", float) or 0.1,
    )
    if config.dilation_val < 1:
        raise ReferenceFileError(f"dilation must be >= 1, got {config.dilation_val}")
    return config, notes


def _run(arrays: dict[str, np.ndarray], config: BamConfig, dtype: Any,
         pooling: str = "global") -> dict[str, np.ndarray]:
    """minibam's y, dx, grad.<name> and after.<buffer> for the file's case, in ``dtype``."""
    bam = replace(config, dtype=np.dtype(dtype)).build()
    state = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    try:
        bam.load_state_dict(state, strict=True)
    except StateDictError as error:
        raise ReferenceFileError(str(error)) from None
    try:
        y, xt = _forward_backward(bam, arrays["x"].astype(dtype), arrays["dy"].astype(dtype), pooling)
    except ValueError as error:
        raise ReferenceFileError(f"minibam cannot run this case: {error}") from None
    out = {"y": y.data, "dx": xt.grad}
    out.update({f"grad.{k}": p.grad for k, p in bam.named_parameters()})
    out.update({f"after.{k}": v for k, v in buffer_arrays(bam).items()})
    return out


def compare_reference(arrays: dict[str, np.ndarray], config: BamConfig, rtol: float | None = None,
                      atol: float | None = None, pooling: str = "global") -> list[Row]:
    """Rebuild minibam's BAM from the file, run it on x and dy, compare every array.

    minibam computes in float64 whatever the file's dtype (float32 inputs are exact in
    float64), so it is the reference and a difference is the file's error. The test is
    `minibam.checks.compare.compare`: ``torch.testing.assert_close``'s tolerances for
    the file's dtype unless ``rtol``/``atol`` are given, and a gradient that is zero by
    construction (a bias right before a training-mode BatchNorm) judged on the scale of
    the largest gradient. For a float32 file minibam also runs in float32, and
    ``NOISE_FACTOR`` times its own float32 error is allowed on top.
    """
    default_rtol, default_atol = default_tolerance(config.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    grads = {k for k in arrays if k.startswith("grad.")}
    ours = _run(arrays, config, np.float64, pooling)
    unknown = sorted(k[len("grad."):] for k in grads - set(ours))
    if unknown:
        raise ReferenceFileError(f"gradients for parameters this BAM does not have: {', '.join(unknown)}")
    # a float32 file: minibam's own float32 round-off is allowed (``compare``'s ``noise``)
    low = _run(arrays, config, config.dtype, pooling) if config.dtype != np.float64 else None
    gradient_names = ["dx"] + [k for k in ours if k in grads]
    scale = largest(ours[k] for k in gradient_names)
    names = ["y"] + gradient_names + [k for k in ours if k.startswith("after.") and k in arrays]
    rows = []
    for k in names:
        if arrays[k].shape != ours[k].shape:
            raise ReferenceFileError(f"{k} has shape {arrays[k].shape} in the file, minibam computes {ours[k].shape}")
        noise = 0.0 if low is None or not ours[k].size else float(
            np.max(np.abs(low[k].astype(np.float64) - ours[k].astype(np.float64))))
        rows.append(compare(k, arrays[k], ours[k], rtol, atol,
                            case_scale=scale if k in gradient_names else None, noise=noise))
    return rows


def overrides(arrays: dict[str, np.ndarray], dilation_val: int | None, training: bool | None) -> list[str]:
    """What the caller's flags change against the file's own ``meta.*``."""
    out = []
    stored_dilation = _meta(arrays, "dilation_val", int)
    if dilation_val is not None and stored_dilation is not None and dilation_val != stored_dilation:
        out.append(f"--dilation {dilation_val} overrides the file's meta.dilation_val = {stored_dilation}")
    stored_training = _meta(arrays, "training", bool)
    if training is not None and stored_training is not None and training != stored_training:
        out.append(f"--{'train' if training else 'eval'} overrides the file's meta.training = {stored_training} "
                   f"(it was made in {'training' if stored_training else 'eval'} mode)")
    return out

