"""Reference cases: one forward + backward of an attention module (BAM, CBAM, ...), frozen
in a self-contained ``.npz``.

Format (version 1), every entry a plain array (no pickles):

=========================  =====================================================
``x``, ``dy``              input (N, C, H, W) and upstream gradient, same shape
``y``, ``dx``              output and dL/dx for L = <dy, y>
``param.<name>``           every parameter **and buffer** of ``state_dict()``,
                           as they were *before* the forward pass
``grad.<name>``            dL/d(parameter) for every parameter
``after.<name>``           optional: each buffer after the forward pass
                           (training mode updates the running statistics)
``meta.<field>``           optional: ``format`` (which module), ``format_version``,
                           ``training``, ``seed``, ``eps`` and ``momentum`` (modules
                           with batch norms), and the module's options (BAM:
                           ``variant``, ``reduction_ratio``, ``dilation_conv_num``,
                           ``dilation_val``; CBAM: ``reduction_ratio``,
                           ``pool_types`` as "avg,max", ``no_spatial``; ...)
=========================  =====================================================

Names are the module's ``state_dict()``'s, which are those of the authors' PyTorch code,
so a file written from a PyTorch module needs no renaming. The module is the one whose
``meta.format`` the file stores, else the one whose signature parameter it holds (see
`minibam.modules`). Without ``meta``, the configuration is read off the parameter shapes
(``Description.infer``), and the mode from whether ``after.*`` moved the running means;
an option no shape shows (BAM's dilation, CBAM's pools) takes its default, unless given.
Replaying a case and comparing every array is `minibam.checks.replay`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from minibam import modules
from minibam.modules import Config, Description, batch_norms, buffer_arrays
from minibam.nn import Module
from minibam.tensor import Tensor

FORMAT_VERSION = 1
REQUIRED = ("x", "dy", "y", "dx")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class ReferenceFileError(ValueError):
    """The file cannot be read, or is not a reference case minibam can replay."""


# ------------------------------------------------------------------- writing
def check_fits(config: Config, shape: tuple[int, int, int, int]) -> None:
    """``ValueError`` when one pass of ``config`` on ``shape`` could not fit in this
    machine's memory; nothing is built or allocated to find out."""
    from minibam.ops._checks import describe_limit, memory_limit

    needed = config.description.memory_elements(config, shape) * config.dtype.itemsize
    limit = memory_limit()
    if needed > limit:
        raise ValueError(f"{config.description.title} on ({','.join(map(str, shape))}) would need about "
                         f"{needed / 2**30:.3g} GiB, more than {describe_limit(limit)}")


def case_arrays(module: Module, shape: tuple[int, ...], dtype: np.dtype, seed: int,
                meta: Mapping[str, object]) -> dict[str, np.ndarray]:
    """One forward and backward of ``module`` on ``x`` and ``dy`` drawn from ``seed``, as the
    arrays of a reference case: x, dy, y, dx, param.* (before the pass), grad.*, after.*
    (the buffers after it) and meta.*."""
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


def make_reference(config: Config, batch: int, height: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays of a reference case of ``config``: random weights and batch-norm state from
    ``seed``. ``ValueError`` when the module refuses the configuration or the input."""
    description = config.description
    module = description.random(config, seed).train(config.training)
    meta = {"format_version": FORMAT_VERSION, **description.meta(config, bool(batch_norms(module))),
            "seed": seed}
    return case_arrays(module, (batch, config.channels, height, width), config.dtype, seed, meta)


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write exactly ``path`` (``np.savez`` alone would append ``.npz`` to other names),
    atomically: an interrupted write leaves any earlier file as it was."""
    from minibam._atomic import atomic_write

    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


# ------------------------------------------------------------------- reading
def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, through minibam's one checked reader (`minibam.io.read_arrays`:
    declared sizes checked before anything is allocated, never unpickled), in native byte
    order (a big-endian ``>f8`` case is converted, not refused). Errors do not repeat the
    path (the caller names the file)."""
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
        arrays = _read_checked(path)
    except (ValueError, OSError) as error:
        detail = (str(error).splitlines() or [""])[0]
        for who in ("load", "compare"):  # the reader names the file; the caller does too
            for prefix in (f"{who}: {str(path)!r}: ", f"{who}: {str(path)!r} is ", f"{who}: {str(path)!r} "):
                detail = detail.replace(prefix, "")
        raise ReferenceFileError(f"not a readable .npz archive ({detail or type(error).__name__})") from None
    return {k: v if v.dtype.isnative else v.astype(v.dtype.newbyteorder("=")) for k, v in arrays.items()}


def _read_checked(path: Path) -> dict[str, np.ndarray]:
    """`minibam.io.read_arrays`, the one checked reader, with the text members a case holds
    (``meta.format``, ``meta.variant``, ...)."""
    from minibam import io

    return io.read_arrays(path, "reference case", "compare", text=True)


def _text(value: np.ndarray) -> str:
    item = value.item()
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _bool(name: str, value: np.ndarray) -> bool:
    """A stored flag: a bool, 0 or 1, or the text True/False (any case) or 1/0; else refused,
    never read as Python's ``bool("False") == True``."""
    if value.dtype.kind in "biuf" and value.item() in (0, 1):
        return bool(value.item())
    if value.dtype.kind in "US":
        text = _text(value).strip().lower()
        if text in ("true", "1", "false", "0"):
            return text in ("true", "1")
    raise ReferenceFileError(f"meta.{name} = {value!r} is not a valid bool (True, False, 1 or 0)")


def meta_value(arrays: Mapping[str, np.ndarray], name: str, kind: type) -> Any:
    value = arrays.get(f"meta.{name}")
    if value is None:
        return None
    if value.size != 1:
        raise ReferenceFileError(f"meta.{name} has shape {value.shape}; a meta entry holds one value")
    if kind is bool:
        return _bool(name, value)
    try:
        return _text(value) if kind is str else kind(value.item())
    except (TypeError, ValueError):
        raise ReferenceFileError(f"meta.{name} = {value!r} is not a valid {kind.__name__}") from None


def check_case(arrays: Mapping[str, np.ndarray], newest: int) -> np.ndarray:
    """What every reference case must satisfy once its keys are there: a format version
    this minibam reads (at most ``newest``), and x a float (N, C, H, W) array with dy, y
    and dx of its shape. Returns x."""
    version = meta_value(arrays, "format_version", int)
    if version is not None and version > newest:
        raise ReferenceFileError(f"format version {version} is newer than this minibam reads ({newest})")
    x = arrays["x"]
    if x.ndim != 4 or x.dtype not in DTYPES:
        raise ReferenceFileError(f"x must be a float32 or float64 (N, C, H, W) array, got {x.dtype} {x.shape}")
    for name in ("dy", "y", "dx"):
        if arrays[name].shape != x.shape:
            raise ReferenceFileError(f"{name} has shape {arrays[name].shape}, x has {x.shape}")
    return x


def check_numbers(arrays: Mapping[str, np.ndarray]) -> None:
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


def identify(arrays: Mapping[str, np.ndarray]) -> Description:
    """The module a case is of: the one its ``meta.format`` names, else the one whose
    signature parameter it holds, else the default (BAM), whose errors then say what is missing."""
    described = modules.all_descriptions()
    fmt = meta_value(arrays, "format", str)
    if fmt is not None:
        for description in described:
            if description.format == fmt:
                return description
        raise ReferenceFileError(f"meta.format is {fmt!r}, not one of {', '.join(d.format for d in described)}")
    return next((d for d in described if f"param.{d.signature}" in arrays), described[0])


def stored_option(arrays: Mapping[str, np.ndarray], option: modules.Option) -> Any:
    value = arrays.get(f"meta.{option.key}")
    if value is None:
        return None
    try:
        return option.parse(_text(value))
    except ValueError as error:
        raise ReferenceFileError(f"meta.{option.key} = {value!r} is not valid: {error}") from None


def _mode_from_buffers(arrays: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> bool | None:
    """Training moves the running means; evaluation leaves them as they were (None: no
    ``after.*`` to tell). Compared in float32: a float32 file may hold float64 parameters,
    rounded in after.*."""
    moved = [not np.array_equal(arrays[k].astype(np.float32), params[k[len("after."):]].astype(np.float32))
             for k in arrays
             if k.startswith("after.") and k.endswith(".running_mean") and k[len("after."):] in params]
    return any(moved) if moved else None


def infer_config(arrays: Mapping[str, np.ndarray], given: Mapping[str, Any] | None = None,
                 training: bool | None = None) -> tuple[Config, list[str]]:
    """The module configuration that produced ``arrays``, and notes on what had to be
    assumed. ``given``: option values by key (None: not given) that override the file."""
    given = given or {}
    description = identify(arrays)
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    missing = [k for k in REQUIRED if k not in arrays]
    if missing or description.signature not in params:
        found = ", ".join(sorted(arrays)[:8]) + (", ..." if len(arrays) > 8 else "")
        lacking = ", ".join(missing + ([] if description.signature in params else [f"param.{description.signature}"]))
        raise ReferenceFileError(f"not a {description.title} reference case: no {lacking} "
                                 f"(found: {found or 'nothing'})")
    check_numbers(arrays)
    x = check_case(arrays, FORMAT_VERSION)
    try:
        options = description.infer(x.shape[1], params, lambda name, kind: meta_value(arrays, name, kind))
    except ValueError as error:
        raise ReferenceFileError(str(error)) from None
    notes: list[str] = []
    for option in description.options:
        if not option.compare:
            continue
        value = given.get(option.key)
        if value is None:
            value = stored_option(arrays, option)
        if value is None:
            value = option.default_for(x.shape[1])
            notes.append(f"{option.key} not stored in the file, assumed {option.text(value)}")
        options[option.key] = value
    config = Config(description.name, x.shape[1], options, True, x.dtype,
                    meta_value(arrays, "eps", float) or 1e-5, meta_value(arrays, "momentum", float))
    try:
        module = config.build()
    except (ValueError, TypeError) as error:
        raise ReferenceFileError(str(error)) from None
    if training is None:
        training = meta_value(arrays, "training", bool)
    if training is None and batch_norms(module):
        training = _mode_from_buffers(arrays, params)
        if training is not None:
            notes.append(f"mode not stored in the file; the running means after the pass say "
                         f"{'training' if training else 'eval'}")
        else:
            training = True
            notes.append("training not stored in the file, assumed True")
    return replace(config, training=True if training is None else training), notes
