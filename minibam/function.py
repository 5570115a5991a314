"""The one pattern every differentiable op follows.

An op is a subclass of [`Function`][minibam.function.Function] with two static methods side by side:

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):            # plain np.ndarray in ...
            y = np.exp(x)
            ctx.save_for_backward(y)
            return y                    # ... plain np.ndarray out

        @staticmethod
        def backward(ctx, grad):        # dL/dy in
            (y,) = ctx.saved
            return (grad * y,)          # one dL/d(input) per tensor input

``Exp.apply(t)`` unwraps the tensors, runs ``forward`` on their arrays, wraps the
result and, when gradients are being recorded, remembers ``(Exp, ctx, inputs)`` on
the output so that [`Tensor.backward`][minibam.tensor.Tensor.backward] can call ``backward`` later.

Keyword arguments of ``apply`` are hyper-parameters (stride, axis, ...): they go to
``forward`` unchanged and are never differentiated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from minibam import _config
from minibam.backends import fast

if TYPE_CHECKING:
    from minibam.tensor import Tensor


class Context:
    """What ``forward`` leaves for ``backward``.

    ``needs_input_grad[i]`` says whether input ``i`` needs a gradient, so that a
    backward can skip work nobody will use (for example dL/dx of a first layer).
    Any other attribute (``ctx.stride = 2``) may be set freely.
    """

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self.saved: tuple[Any, ...] = ()

    def save_for_backward(self, *values: Any) -> None:
        self.saved = values


class Node:
    """One recorded application of a Function: the edge list of the graph.

    ``op`` is the op as ``minibam/ops/`` defines it (its name is the node's name);
    ``function`` is the implementation that ran, whose ``backward`` the walk calls:
    ``op`` itself, or its fast twin from ``minibam.backends``.
    """

    __slots__ = ("op", "function", "ctx", "inputs")

    def __init__(self, op: type[Function], ctx: Context, inputs: tuple,
                 function: type[Function] | None = None) -> None:
        self.op = op
        self.function = op if function is None else function
        self.ctx = ctx
        self.inputs = inputs

    @property
    def name(self) -> str:
        return self.op.__name__


class Function:
    """Base class of every op; see the module docstring."""

    @staticmethod
    def forward(ctx: Context, *args: Any, **params: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Tensor | None, **params: Any) -> Tensor:
        from minibam.tensor import Tensor

        needs = tuple(t is not None and t.requires_grad for t in inputs)
        ctx = Context(needs)
        arrays = [None if t is None else t.data for t in inputs]
        implementation = fast.implementation(cls)  # cls, or its fast twin (minibam.backends)
        # The warning policy (docs/guarantees.md): inf and nan are results, as in
        # PyTorch, never warnings; the backward walk does the same.
        with np.errstate(all="ignore"):
            out = implementation.forward(ctx, *arrays, **params)
        record = _config.is_grad_enabled() and any(needs)
        result = Tensor._wrap(out, requires_grad=record)
        if record:
            ctx.params = params
            result._node = Node(cls, ctx, inputs, implementation)
        return result


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo NumPy broadcasting: sum ``grad`` back down to ``shape``.

    If ``y = f(broadcast_to(x, grad.shape))`` then dL/dx is dL/dy summed over every
    axis that broadcasting added (leading axes) or stretched (axes where x has 1).
    This is the only place in minibam that does it; see docs/derivations/elementwise.md,
    "Broadcasting".
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad
