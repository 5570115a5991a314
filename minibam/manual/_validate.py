"""The argument checks of ``manual.bam_forward`` and ``manual.cbam_forward``, kept out of
the mathematics: everything is validated up front, as ``F.batch_norm``, ``nn.BAM`` and
``nn.CBAM`` do, so that a bad call fails with a message naming the function and the
offending value, before NumPy sees it. Standard library and NumPy only."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from minibam.manual import layout


def real_array(value: object, name: str, fn: str) -> np.ndarray:
    """``value`` as an array of real numbers (float kept, bool and int to float64).

    Complex input would lose its imaginary part without a word, and object or string
    arrays would fail deep inside NumPy: both are refused here, as ``mb.Tensor`` does."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold real numbers, got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def check_bam_inputs(x: object, params: object, variant: object, training: object,
                     dilation_val: object, eps: object) -> tuple[np.ndarray, int]:
    """x as a float array and n, the number of dilated convolutions read from ``params``."""
    fn = "bam_forward"
    if not isinstance(variant, str) or variant not in ("paper", "official"):
        raise ValueError(f"{fn}: variant must be 'paper' or 'official', got {variant!r}")
    if isinstance(dilation_val, (bool, np.bool_)) or not isinstance(dilation_val, (int, np.integer)):
        raise TypeError(f"{fn}: dilation_val must be an int, got {dilation_val!r}")
    if dilation_val < 1:
        raise ValueError(f"{fn}: dilation_val must be >= 1, got {dilation_val!r}")
    _check_flags_and_eps(fn, training, eps)
    F = _check_x(fn, x, params, "BAM")
    N, C, H, W = F.shape
    # The dilated convolutions' columns: 9 copies of the padded reduced map.
    cols = 9 * N * C * (H + 2 * dilation_val) * (W + 2 * dilation_val) * F.dtype.itemsize
    if cols > memory_limit():
        raise ValueError(
            f"{fn}: dilation_val={dilation_val} on x of shape {F.shape} would need "
            f"{cols / 2**30:.3g} GiB for the dilated convolutions, more than the memory available"
        )
    if training and N < 2:
        raise ValueError(f"{fn}: training needs a batch of at least 2 (batch statistics of the "
                         f"channel branch are undefined for N = 1), got x of shape {F.shape}")
    n = 0
    while f"{layout.conv_di(n)}.weight" in params:
        n += 1
    w0 = f"{layout.FC_0}.weight"
    if w0 not in params or np.ndim(params[w0]) != 2:
        shape = np.shape(params[w0]) if w0 in params else "missing"
        raise ValueError(f"{fn}: params[{w0!r}] must be a (C/r, C) array, got {shape}")
    Cr, C_params = np.shape(params[w0])
    if C_params != C:
        raise ValueError(f"{fn}: x has {C} channels but params are for gate_channel = "
                         f"{C_params} ({w0} has shape {(Cr, C_params)})")
    expected = _flatten(layout.bam_layers(C, Cr, n, variant))
    missing, unexpected = _keys(params, expected)
    if missing or unexpected:
        raise ValueError(f"{fn}: params do not match BAM(variant={variant!r}, dilation_conv_num="
                         f"{n}): missing keys {missing}, unexpected keys {unexpected}")
    for name in expected:
        real_array(params[name], f"params[{name!r}]", fn)
    wrong = _wrong_shapes(params, expected)
    if wrong:
        raise ValueError(f"{fn}: parameter shapes do not fit gate_channel = {C}, C/r = {Cr}: "
                         + "; ".join(wrong))
    return F, n


def check_cbam_inputs(x: object, params: object, pool_types: object, no_spatial: object,
                      training: object, eps: object) -> np.ndarray:
    """x as a float array."""
    fn = "cbam_forward"
    if isinstance(pool_types, str) or not isinstance(pool_types, Sequence):
        raise TypeError(f"{fn}: pool_types must be a sequence of names such as ('avg', 'max'), "
                        f"got {pool_types!r}")
    # isinstance first: a list among the names is unhashable, and cannot be looked up.
    if not pool_types or any(not isinstance(k, str) or k not in layout.CBAM_POOLS
                             for k in pool_types):
        raise ValueError(f"{fn}: pool_types must be a non-empty sequence drawn from "
                         f"{layout.CBAM_POOLS}, got {pool_types!r}")
    _check_flags_and_eps(fn, training, eps)
    F = _check_x(fn, x, params, "CBAM")
    N, C, H, W = F.shape
    if training and not no_spatial and N * H * W < 2:
        raise ValueError(f"{fn}: training needs more than one value per channel for the "
                         f"spatial batch norm, got x of shape {F.shape}")
    w0 = np.shape(params.get(f"{layout.CBAM_FC_0}.weight", ()))
    Cr = w0[0] if len(w0) == 2 else 0  # the hidden width, read from the first layer
    expected = _flatten(layout.cbam_layers(C, Cr, no_spatial))
    for name in params:
        real_array(params[name], f"params[{name!r}]", fn)
    missing, unexpected = _keys(params, expected)
    wrong = _wrong_shapes(params, expected)
    if missing or unexpected or wrong or Cr == 0:
        raise ValueError(f"{fn}: params do not match CBAM({C}, no_spatial={no_spatial}) for x "
                         f"of shape {F.shape}: missing keys {missing}, unexpected keys "
                         f"{unexpected}, wrong shapes {wrong}")
    return F


def _check_flags_and_eps(fn: str, training: object, eps: object) -> None:
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {training!r}")
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: eps must be a real number, got {eps!r}")
    if not (eps > 0 if training else eps >= 0) or eps == np.inf:
        kind = "positive during training" if training else "non-negative"
        raise ValueError(f"{fn}: eps must be {kind} and finite, got {eps!r}")


def _check_x(fn: str, x: object, params: object, module: str) -> np.ndarray:
    if not isinstance(params, dict):
        raise TypeError(f"{fn}: params must be a dict of {module}.state_dict() names to arrays, "
                        f"got {type(params).__name__}")
    F = real_array(x, "x", fn)
    if F.ndim != 4:
        raise ValueError(f"{fn}: x must be 4-D (N, C, H, W), got shape {F.shape}")
    if F.shape[2] == 0 or F.shape[3] == 0:
        raise ValueError(f"{fn}: x has an empty H x W plane (shape {F.shape}); the channel "
                         f"branch pools over it")
    return F


def _flatten(layers: dict[str, dict[str, tuple]]) -> dict[str, tuple]:
    return {f"{layer}.{p}": shape for layer, ps in layers.items() for p, shape in ps.items()}


def _keys(params: dict, expected: dict[str, tuple]) -> tuple[list[str], list[str]]:
    """Missing and unexpected keys; a batch norm's ``num_batches_tracked`` is optional."""
    optional = {name.replace(".running_var", ".num_batches_tracked")
                for name in expected if name.endswith(".running_var")}
    return sorted(set(expected) - set(params)), sorted(set(params) - set(expected) - optional)


def _wrong_shapes(params: dict, expected: dict[str, tuple]) -> list[str]:
    return [f"{name}: got {np.shape(params[name])}, expected {shape}"
            for name, shape in expected.items() if name in params and np.shape(params[name]) != shape]


def memory_limit() -> int:
    """Bytes an array may take: physical memory, or less where an address-space or data
    limit (``ulimit -v``, ``ulimit -d``) leaves the process less room (2**62 where the OS
    does not say). ``minibam.ops`` reads the memory available now; this module, which
    imports nothing of minibam, keeps to the simpler bound."""
    try:
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        limit = 1 << 62
    try:
        import resource
    except ImportError:  # Windows: no such limits
        return limit
    for kind in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(kind)[0]
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
    return limit
