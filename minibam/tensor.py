"""``Tensor``: a NumPy array that remembers how it was made, and the backward walk.

A tensor made by an op holds a [`Node`][minibam.function.Node] (the op, what the op
saved, and the op's input tensors). Those nodes form a directed acyclic graph ending in
the leaves the user created. [`Tensor.backward`][minibam.tensor.Tensor.backward] orders that graph topologically,
without recursion, and walks it from the output back to the leaves, calling each op's
``backward`` once with the sum of every gradient that reached it.
See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.backends import fast
from minibam.function import Node

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(data: Any, copy: bool = True) -> np.ndarray:
    """``data`` as a float32 or float64 array; other real dtypes become float64."""
    if isinstance(data, Tensor):
        data = data.data
    try:
        array = np.array(data, copy=copy) if copy else np.asarray(data)
    except ValueError as error:  # NumPy's "setting an array element with a sequence"
        ragged = "inhomogeneous" in str(error)
        what = "a ragged nested list (rows of different lengths)" if ragged else "not array-like"
        raise ValueError(f"Tensor: data is {what}: {error}") from None
    if array.dtype in _FLOAT_DTYPES:
        return array
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    raise TypeError(
        f"Tensor: data must be real numbers (a Tensor holds float32 or float64); cannot "
        f"make one from {type(data).__name__} of dtype {array.dtype}"
    )


class Tensor:
    """An ``np.ndarray`` (``.data``) plus what autograd needs.

    ``Tensor(data)`` copies ``data``, so nothing minibam does later (an optimizer step,
    say) can change an array the caller still holds. float32 and float64 keep their
    dtype; Python numbers, lists, booleans and integer arrays become float64.
    """

    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if not isinstance(requires_grad, (bool, np.bool_)) and not (
            isinstance(requires_grad, (int, np.integer)) and requires_grad in (0, 1)
        ):
            raise TypeError(f"Tensor: requires_grad must be a bool, got {type(requires_grad).__name__}")
        self.data: np.ndarray = as_float_array(data, copy=True)
        self.requires_grad: bool = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self._node: Node | None = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, array: Any, requires_grad: bool = False) -> Tensor:
        """Wrap an op's own result without copying it (internal)."""
        t = cls.__new__(cls)
        t.data = np.asarray(array)
        t.requires_grad = requires_grad
        t.grad = None
        t._node = None
        t._retains_grad = False
        return t

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the op that made this tensor, or ``None`` for a leaf."""
        return None if self._node is None else self._node.name

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def numel(self) -> int:
        return int(self.data.size)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise RuntimeError(
                f"item() needs a tensor with one element, got shape {self.shape}"
            )
        return self.data.item()

    def detach(self) -> Tensor:
        """The same values (shared memory), cut off from the graph."""
        return Tensor._wrap(self.data, requires_grad=False)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward, as PyTorch does."""
        self._retains_grad = True

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="Tensor(")
        extra = f", dtype={self.dtype}"
        if self._node is not None:
            extra += f", grad_fn=<{self._node.name}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    # ---------------------------------------------------------------- backward
    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) · ``grad`` into every leaf's ``.grad``.

        ``grad`` is dL/d(self), of ``self``'s shape; it may be left out only when
        ``self`` has a single element (then it is 1).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require grad "
                "(no input of the ops that made it had requires_grad=True)"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient works only for a tensor with one "
                    f"element; this one has shape {self.shape}, so pass "
                    f"grad= an array of that shape"
                )
            grad = np.ones_like(self.data)
        else:
            try:
                grad = as_float_array(grad, copy=False).astype(self.dtype, copy=False)
            except (TypeError, ValueError):
                raise TypeError(
                    f"backward(): grad must be an array of real numbers of shape {self.shape}, "
                    f"got {type(grad).__name__}"
                ) from None
            if grad.shape != self.shape:
                raise RuntimeError(
                    f"backward(): grad has shape {grad.shape} but the tensor has shape "
                    f"{self.shape}"
                )
        with np.errstate(all="ignore"):  # inf/nan silently, as forward (docs/guarantees.md)
            _run_backward(self, grad)

    # -------------------------------------------------------------- operators
    def _operand(self, other: Any) -> Tensor:
        """Turn the other side of a binary operator into a Tensor.

        A Python number takes this tensor's dtype, so ``t32 * 2.0`` stays float32
        (NumPy's rule for Python scalars); arrays promote as NumPy does.
        """
        if isinstance(other, Tensor):
            return other
        if type(other) in (bool, int, float):  # np.float64 is a float subclass that promotes
            return Tensor._wrap(np.asarray(other, dtype=self.dtype))
        return Tensor(other)

    def __add__(self, other: Any) -> Tensor:
        return _ew.add(self, self._operand(other))

    def __radd__(self, other: Any) -> Tensor:
        return _ew.add(self._operand(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return _ew.sub(self, self._operand(other))

    def __rsub__(self, other: Any) -> Tensor:
        return _ew.sub(self._operand(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return _ew.mul(self, self._operand(other))

    def __rmul__(self, other: Any) -> Tensor:
        return _ew.mul(self._operand(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ew.div(self, self._operand(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ew.div(self._operand(other), self)

    def __neg__(self) -> Tensor:
        return _ew.neg(self)

    def __pow__(self, exponent: Any) -> Tensor:
        return _ew.pow(self, exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return _linalg.matmul(self, self._operand(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return _linalg.matmul(self._operand(other), self)

    def __getitem__(self, index: Any) -> Tensor:
        return _shape.getitem(self, index)

    # ----------------------------------------------------------------- methods
    def exp(self) -> Tensor:
        return _ew.exp(self)

    def log(self) -> Tensor:
        return _ew.log(self)

    def sigmoid(self) -> Tensor:
        return _act.sigmoid(self)

    def relu(self) -> Tensor:
        return _act.relu(self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _reduce.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _reduce.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        return _shape.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        return _shape.reshape(self, *shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _shape.flatten(self, start_dim, end_dim)

    def transpose(self, *axes: Any) -> Tensor:
        return _shape.transpose(self, *axes)

    def permute(self, *axes: Any) -> Tensor:
        return _shape.permute(self, *axes)

    def expand(self, *shape: Any) -> Tensor:
        return _shape.expand(self, *shape)

    def broadcast_to(self, *shape: Any) -> Tensor:
        return _shape.expand(self, *shape)

    def to(self, dtype: Any) -> Tensor:
        return _ew.cast(self, dtype)

    def float(self) -> Tensor:
        return _ew.cast(self, np.float32)

    def double(self) -> Tensor:
        return _ew.cast(self, np.float64)


def topological_order(root: Tensor, needing_grad_only: bool = True) -> list[Tensor]:
    """Tensors that ``root`` depends on, each after all of its inputs, ``root`` last.

    Depth-first search with an explicit stack, so a chain of 10,000 ops does not touch
    Python's recursion limit. The backward walk needs only the inputs that require a
    gradient; a drawing (``minibam.viz``) wants every input, in argument order.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in reversed(tensor._node.inputs):  # first input first
                if parent is None or id(parent) in seen:
                    continue
                if parent.requires_grad or not needing_grad_only:
                    stack.append((parent, False))
    return order


class GradientSums:
    """dL/dt for each tensor t the walk has reached so far: one addition per gradient.

    (``minibam.backends.accumulate.DeferredSums`` does the same sums in fewer passes
    over memory; ``backends.fast.gradient_sums`` picks one.)
    """

    def __init__(self) -> None:
        self.sums: dict[int, np.ndarray] = {}

    def add(self, tensor: Tensor, grad: np.ndarray) -> None:
        key = id(tensor)
        self.sums[key] = grad if key not in self.sums else self.sums[key] + grad

    def pop(self, tensor: Tensor) -> np.ndarray | None:
        return self.sums.pop(id(tensor), None)

    def keep(self, tensor: Tensor, grad: np.ndarray) -> None:
        """``tensor.grad += grad``, or a copy of ``grad`` as the first ``.grad``."""
        if tensor.grad is None:
            tensor.grad = np.array(grad, dtype=tensor.dtype, copy=True)
        else:
            tensor.grad += grad


def _run_backward(root: Tensor, grad: np.ndarray) -> None:
    """Walk the graph from ``root`` back to the leaves, as micrograd does: a topological
    order, then one loop that calls each op's backward with the sum of its gradients."""
    sums = fast.gradient_sums()
    sums.add(root, grad)
    for tensor in reversed(topological_order(root)):
        g = sums.pop(tensor)
        if g is None:
            continue
        node = tensor._node
        if node is None or tensor._retains_grad:
            sums.keep(tensor, g)
        if node is None:
            continue
        input_grads = _checked(node, node.function.backward(node.ctx, g))
        for parent, parent_grad in zip(node.inputs, input_grads, strict=True):
            if parent is not None and parent_grad is not None and parent.requires_grad:
                sums.add(parent, np.asarray(parent_grad, dtype=parent.dtype))


def _checked(node: Node, input_grads: Any) -> tuple:
    """A backward's result, refused unless it is one gradient (or None) per input, each
    of its input's shape: ``zip`` would silently drop missing ones."""
    count = len(input_grads) if isinstance(input_grads, (tuple, list)) else None
    if count != len(node.inputs):
        raise RuntimeError(
            f"{node.name}.backward returned {type(input_grads).__name__}"
            f"{'' if count is None else f' of length {count}'}; it must return a tuple "
            f"with one gradient (or None) per input, {len(node.inputs)} in all"
        )
    for parent, parent_grad in zip(node.inputs, input_grads, strict=True):
        needed = parent is not None and parent_grad is not None and parent.requires_grad
        if needed and np.shape(parent_grad) != parent.shape:
            raise RuntimeError(
                f"{node.name}.backward returned a gradient of shape "
                f"{np.shape(parent_grad)} for an input of shape {parent.shape}"
            )
    return tuple(input_grads)


from minibam.ops import activation as _act  # noqa: E402
from minibam.ops import elementwise as _ew  # noqa: E402
from minibam.ops import linalg as _linalg  # noqa: E402
from minibam.ops import reduce as _reduce  # noqa: E402
from minibam.ops import shape as _shape  # noqa: E402
