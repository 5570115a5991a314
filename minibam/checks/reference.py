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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from minibam import modules
from minibam.checks.compare import Row, compare, default_tolerance, largest
from minibam.modules import Config, Description, batch_norms, buffer_arrays
from minibam.nn import Module, StateDictError
from minibam.tensor import Tensor

FORMAT_VERSION = 1
REQUIRED = ("x", "dy", "y", "dx")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
# Notes worth printing only when a comparison fails (they could explain it); --json keeps all.
QUIET_NOTES = ("not stored in the file, assumed", "mode not stored in the file")


class ReferenceFileError(ValueError):
    """The file cannot be read, or is not a reference case minibam can replay."""


# ------------------------------------------------------------------- writing
def check_fits(config: Config, shape: tuple[int, int, int, int]) -> None:
    """``ValueError`` when one pass of ``config`` on ``shape`` could not fit in this
    machine's memory; nothing is built or allocated to find out."""
    from minibam.ops._checks import memory_limit

    needed = config.description.memory_elements(config, shape) * config.dtype.itemsize
    limit = memory_limit()
    if needed > limit:
        raise ValueError(f"{config.description.title} on ({','.join(map(str, shape))}) would need about "
                         f"{needed / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB of memory available")


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
    """`minibam.io.read_arrays`, which reads numeric members only. A reference case also
    holds text (``meta.format``, ``meta.variant``, ...): until that reader takes small text
    members, such a file is read here under the same bound: each member's size as the
    archive declares it, checked against ``MAX_EXPANSION`` x the file (plus ``SLACK_BYTES``)
    before it is read, and never unpickled."""
    import zipfile
    import zlib

    from minibam import io

    try:
        return io.read_arrays(path, "reference case")
    except ValueError as error:
        if "has dtype <U" not in str(error) and "has dtype |S" not in str(error):
            raise
    try:
        return _read_with_text(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
        raise ValueError(f"a corrupt archive ({type(error).__name__}: {error})") from None


def _read_with_text(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    from minibam import io

    budget = io.MAX_EXPANSION * path.stat().st_size + io.SLACK_BYTES
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename[: -len(".npy")]
            if not info.filename.endswith(".npy") or key in arrays:
                raise ValueError(f"member {info.filename!r} is not an .npy array, or appears twice")
            if info.file_size > budget:
                raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes, far more than "
                                 f"the file's size allows")
            with zf.open(info) as member:  # reads at most the declared size
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(member)
                if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
                    raise ValueError(f"member {info.filename!r} declares shape {shape}, not a list of sizes")
                if dtype.kind not in "biufUS" or dtype.fields is not None or dtype.subdtype is not None:
                    raise ValueError(f"member {info.filename!r} has dtype {dtype}; not numbers or text")
                count = int(np.prod(shape, dtype=object))
                if count * dtype.itemsize != info.file_size - member.tell():
                    raise ValueError(f"member {info.filename!r} declares shape {shape} of {dtype}, which "
                                     f"the archive does not hold")
                data = member.read()
            array = np.frombuffer(data, dtype, count).reshape(shape, order="F" if fortran else "C")
            budget -= info.file_size
            arrays[key] = array.copy()
    return arrays


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


def _meta(arrays: Mapping[str, np.ndarray], name: str, kind: type) -> Any:
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
    fmt = _meta(arrays, "format", str)
    if fmt is not None:
        for description in described:
            if description.format == fmt:
                return description
        raise ReferenceFileError(f"meta.format is {fmt!r}, not one of {', '.join(d.format for d in described)}")
    return next((d for d in described if f"param.{d.signature}" in arrays), described[0])


def _stored_option(arrays: Mapping[str, np.ndarray], option: modules.Option) -> Any:
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
        options = description.infer(x.shape[1], params, lambda name, kind: _meta(arrays, name, kind))
    except ValueError as error:
        raise ReferenceFileError(str(error)) from None
    notes: list[str] = []
    for option in description.options:
        if not option.compare:
            continue
        value = given.get(option.key)
        if value is None:
            value = _stored_option(arrays, option)
        if value is None:
            value = option.default_for(x.shape[1])
            notes.append(f"{option.key} not stored in the file, assumed {option.text(value)}")
        options[option.key] = value
    config = Config(description.name, x.shape[1], options, True, x.dtype,
                    _meta(arrays, "eps", float) or 1e-5, _meta(arrays, "momentum", float))
    try:
        module = config.build()
    except (ValueError, TypeError) as error:
        raise ReferenceFileError(str(error)) from None
    if training is None:
        training = _meta(arrays, "training", bool)
    if training is None and batch_norms(module):
        training = _mode_from_buffers(arrays, params)
        if training is not None:
            notes.append(f"mode not stored in the file; the running means after the pass say "
                         f"{'training' if training else 'eval'}")
        else:
            training = True
            notes.append("training not stored in the file, assumed True")
    return replace(config, training=True if training is None else training), notes


# ----------------------------------------------------------------- comparing
def _run(arrays: Mapping[str, np.ndarray], config: Config, dtype: Any) -> dict[str, np.ndarray]:
    """minibam's y, dx, grad.<name> and after.<buffer> for the file's case, in ``dtype``."""
    module = replace(config, dtype=np.dtype(dtype)).build()
    state = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    try:
        module.load_state_dict(state, strict=True)
    except StateDictError as error:
        raise ReferenceFileError(str(error)) from None
    xt = Tensor(arrays["x"].astype(dtype), requires_grad=True)
    try:
        y = module(xt)
        y.backward(arrays["dy"].astype(dtype))
    except ValueError as error:
        raise ReferenceFileError(f"minibam cannot run this case: {error}") from None
    out = {"y": y.data, "dx": xt.grad}
    out.update({f"grad.{k}": p.grad for k, p in module.named_parameters()})
    out.update({f"after.{k}": v for k, v in buffer_arrays(module).items()})
    return out


def tolerances(config: Config, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """``rtol``/``atol``, or ``torch.testing.assert_close``'s for the case's dtype."""
    default_rtol, default_atol = default_tolerance(config.dtype)
    return (default_rtol if rtol is None else rtol), (default_atol if atol is None else atol)


def compare_reference(arrays: Mapping[str, np.ndarray], config: Config, rtol: float | None = None,
                      atol: float | None = None) -> list[Row]:
    """Rebuild minibam's module from the file, run it on x and dy, compare every array.

    minibam computes in float64 whatever the file's dtype (float32 inputs are exact in
    float64), so it is the reference and a difference is the file's error. The test is
    `minibam.checks.compare.compare`: ``torch.testing.assert_close``'s tolerances for
    the file's dtype unless ``rtol``/``atol`` are given, and a gradient that is zero by
    construction (a bias right before a training-mode BatchNorm) judged on the scale of
    the largest gradient. For a float32 file minibam also runs in float32, and
    ``NOISE_FACTOR`` times its own float32 error is allowed on top.
    """
    rtol, atol = tolerances(config, rtol, atol)
    grads = {k for k in arrays if k.startswith("grad.")}
    ours = _run(arrays, config, np.float64)
    unknown = sorted(k[len("grad."):] for k in grads - set(ours))
    if unknown:
        raise ReferenceFileError(f"gradients for parameters this {config.description.title} does not have: "
                                 f"{', '.join(unknown)}")
    # a float32 file: minibam's own float32 round-off is allowed (``compare``'s ``noise``)
    low = _run(arrays, config, config.dtype) if config.dtype != np.float64 else None
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


def overrides(arrays: Mapping[str, np.ndarray], config: Config, given: Mapping[str, Any],
              training: bool | None) -> list[str]:
    """What the caller's flags change against the file's own ``meta.*``."""
    out = []
    own = {o.key for o in config.description.options}
    for option, owners in modules.every_option():
        if given.get(option.key) is not None and option.key not in own:
            out.append(f"{option.flag} is {owners[0].title}'s option; this is a {config.description.title} "
                       f"case, so it was not used")
    for option in config.description.options:
        value, stored = given.get(option.key), _stored_option(arrays, option) if option.compare else None
        if value is not None and stored is not None and value != stored:
            out.append(f"{option.flag} {option.text(value)} overrides the file's meta.{option.key} = "
                       f"{option.text(stored)}")
    stored_training = _meta(arrays, "training", bool)
    if training is not None and stored_training is not None and training != stored_training:
        out.append(f"--{'train' if training else 'eval'} overrides the file's meta.training = {stored_training} "
                   f"(it was made in {'training' if stored_training else 'eval'} mode)")
    return out


@dataclass
class Comparison:
    """Everything ``minibam compare`` reports on one file (`compare_file`)."""

    file: str
    config: Config
    x_shape: tuple[int, ...]
    rows: list[Row]
    rtol: float
    atol: float
    notes: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failed(self) -> list[Row]:
        """The failed rows, worst first."""
        return sorted((r for r in self.rows if not r.passed), key=lambda r: -r.max_rel)

    def shown_notes(self) -> list[str]:
        """The notes worth printing: an assumption only when it could explain a failure."""
        return [n for n in self.notes if not self.passed or not any(q in n for q in QUIET_NOTES)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "file": self.file, "module": self.config.module,
            "config": self.config.describe(), "x_shape": list(self.x_shape), "rtol": self.rtol,
            "atol": self.atol, "notes": self.notes, "overrides": self.overrides, "hints": self.hints,
            "not_compared": self.not_compared, "rows": [r.to_dict() for r in self.rows],
        }


def compare_file(path: str | Path, given: Mapping[str, Any] | None = None, training: bool | None = None,
                 rtol: float | None = None, atol: float | None = None) -> Comparison:
    """Read a reference case, replay it with minibam, compare every array and look for the
    likely cause of any failure. ``ReferenceFileError`` for a file that cannot be replayed."""
    from minibam.checks.hints import hints

    given = given or {}
    arrays = load_arrays(path)
    config, notes = infer_config(arrays, given, training)
    rows = compare_reference(arrays, config, rtol, atol)
    rtol_used, atol_used = tolerances(config, rtol, atol)
    missing = [f"grad.{k}" for k, _ in config.build().named_parameters() if f"grad.{k}" not in arrays]
    return Comparison(str(path), config, tuple(arrays["x"].shape), rows, rtol_used, atol_used, notes,
                      overrides(arrays, config, given, training), hints(arrays, config, notes, rows, rtol, atol),
                      missing)
