"""PyTorch as the oracle: run the same computation in minibam and in torch (float64)
with the same random upstream gradient, and compare the output and every input
gradient.

    from torch_ref import assert_matches_torch

    assert_matches_torch(
        lambda x, w: F.linear(x, w),                     # minibam Tensors in
        lambda x, w: torch.nn.functional.linear(x, w),   # torch tensors in
        [x_array, w_array],                              # NumPy arrays (+ None / constants)
        seed=3,
    )

Entries of ``inputs`` that are ``np.ndarray`` become differentiable tensors on both
sides; anything else (``None`` for a missing bias, ints) is passed through unchanged.
torch is imported lazily, so a test module that imports this file still runs its
other tests when torch is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from strategies import random_upstream

import minibam as mb

RTOL = 1e-10
ATOL = 1e-12


def _torch() -> Any:
    return pytest.importorskip("torch")


def torch_forward_backward(
    fn: Callable[..., Any], inputs: Sequence[Any], upstream: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """``fn`` on float64 torch tensors, then backward with ``upstream``.

    Returns the output and, for each ndarray input, its gradient (zeros when the
    output does not depend on it); ``None`` for pass-through inputs.
    """
    torch = _torch()
    args = [
        torch.tensor(v, dtype=torch.float64, requires_grad=True) if isinstance(v, np.ndarray) else v
        for v in inputs
    ]
    out = fn(*args)
    out.backward(torch.as_tensor(np.asarray(upstream), dtype=out.dtype))
    grads = [
        None
        if not isinstance(v, np.ndarray)
        else (np.zeros(v.shape) if t.grad is None else t.grad.numpy())
        for v, t in zip(inputs, args, strict=True)
    ]
    return out.detach().numpy(), grads


def minibam_forward_backward(
    fn: Callable[..., mb.Tensor], inputs: Sequence[Any], upstream: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Like :func:`torch_forward_backward` for minibam; ndarray inputs keep their dtype.

    Also asserts that the op and its backward left the input tensors' data unchanged.
    """
    args = [mb.Tensor(v, requires_grad=True) if isinstance(v, np.ndarray) else v for v in inputs]
    data_before = [t.data.copy() if isinstance(t, mb.Tensor) else None for t in args]
    out = fn(*args)
    out.backward(upstream)
    for i, (t, d) in enumerate(zip(args, data_before, strict=True)):
        if d is not None:
            np.testing.assert_array_equal(t.data, d, err_msg=f"op changed input {i}'s data")
    grads = [
        None
        if not isinstance(v, np.ndarray)
        else (np.zeros(v.shape, dtype=t.dtype) if t.grad is None else t.grad)
        for v, t in zip(inputs, args, strict=True)
    ]
    return out.data, grads


def assert_matches_torch(
    mb_fn: Callable[..., mb.Tensor],
    torch_fn: Callable[..., Any],
    inputs: Sequence[Any],
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Forward and every input gradient of ``mb_fn`` equal ``torch_fn``'s in float64.

    The upstream gradient is random (``seed``). Also asserts that neither the caller's
    arrays nor the upstream gradient were changed, and that each gradient has its
    input's shape and dtype.
    """
    inputs = list(inputs)
    with mb.no_grad():
        probe = mb_fn(*[mb.Tensor(v) if isinstance(v, np.ndarray) else v for v in inputs])
    upstream = random_upstream(probe.shape, seed)
    before = [v.copy() if isinstance(v, np.ndarray) else None for v in inputs]
    upstream_before = upstream.copy()

    out, grads = minibam_forward_backward(mb_fn, inputs, upstream)
    ref_out, ref_grads = torch_forward_backward(torch_fn, inputs, upstream)

    for i, (v, b) in enumerate(zip(inputs, before, strict=True)):
        if b is not None:
            np.testing.assert_array_equal(v, b, err_msg=f"input {i} was mutated")
    np.testing.assert_array_equal(upstream, upstream_before, err_msg="upstream was mutated")

    assert out.shape == ref_out.shape, (out.shape, ref_out.shape)
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=atol, err_msg="forward")
    for i, (v, g, ref) in enumerate(zip(inputs, grads, ref_grads, strict=True)):
        if g is None:
            continue
        assert g.shape == v.shape, f"grad {i}: shape {g.shape} != input shape {v.shape}"
        assert g.dtype == v.dtype, f"grad {i}: dtype {g.dtype} != input dtype {v.dtype}"
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=atol, err_msg=f"grad of input {i}")
