"""The backward walk's gradient sums, in one pass over memory per tensor.

The plain walk (``minibam.tensor.GradientSums``) adds each gradient that reaches a tensor
as it arrives: ``total = total + g``, a new full-size array and a pass over memory per
term. `DeferredSums` computes the same sums with two savings (docs/performance.md, "No
needless copies in the engine"). They are:

- the terms wait until the tensor's turn in the walk and are then added into one array
  block by block (`add_into`): the total goes through memory once however many terms;
- a gradient that an op's backward returned freshly (a new array nobody else holds) is
  *owned*: the sum is formed in it instead of a new array, and a leaf keeps it as its
  ``.grad`` without the copy the plain walk makes.

Each element receives the same terms in the same order as in the plain walk, so the
sums are equal to the bit (tests/test_backends.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minibam.backends.threads import blocks, map_chunks

# Below this many values a split costs more than it saves.
SPLIT_MIN_ELEMENTS = 1 << 18
# Values per block: a block of the total stays in the CPU cache while each term is added.
BLOCK_ELEMENTS = 1 << 16


class DeferredSums:
    """Drop-in for ``minibam.tensor.GradientSums`` (same ``add``/``pop``/``keep``)."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[np.ndarray, bool]] = {}  # id -> (gradient, owned)
        self.later: dict[int, list[np.ndarray]] = {}  # id -> the terms that came after
        self.upstream: Any = None  # the gradient last popped: an op may pass it through
        self.owned_total = False
        self.since_pop: dict[int, int] = {}  # id of array -> times added since the last pop

    def add(self, tensor: Any, grad: np.ndarray) -> None:
        key = id(tensor)
        seen = self.since_pop.get(id(grad), 0)
        self.since_pop[id(grad)] = seen + 1
        # Owned: a fresh array of its own (not a view, not the gradient passed in, not
        # the root's caller-given array, not returned twice by one backward).
        owned = (self.upstream is not None and grad is not self.upstream
                 and grad.base is None and seen == 0)
        if seen:  # the same array reached two inputs: neither may add into it
            self.first = {k: (g, o and g is not grad) for k, (g, o) in self.first.items()}
        if key in self.first:
            self.later.setdefault(key, []).append(grad)
        else:
            self.first[key] = (grad, owned)

    def pop(self, tensor: Any) -> np.ndarray | None:
        key = id(tensor)
        if key not in self.first:
            return None
        total, owned = self.first.pop(key)
        terms = self.later.pop(key, [])
        if terms and not owned:  # not ours to add into: the sum becomes a fresh array
            total, terms, owned = total + terms[0], terms[1:], True
        add_into(total, *terms)
        self.upstream, self.owned_total, self.since_pop = total, owned, {}
        return total

    def keep(self, tensor: Any, grad: np.ndarray) -> None:
        """As the plain ``keep``, but a leaf takes an owned sum as its ``.grad`` uncopied."""
        if tensor.grad is None and tensor._node is None and self.owned_total and grad is self.upstream \
                and grad.dtype == tensor.dtype:
            tensor.grad = grad
        elif tensor.grad is None:
            tensor.grad = np.array(grad, dtype=tensor.dtype, copy=True)
        else:
            tensor.grad += grad


def add_into(total: np.ndarray, *terms: np.ndarray) -> None:
    """``total += term`` for each of ``terms`` in order (each broadcastable to ``total``).

    When ``total`` is large, it is cut into cache-sized `blocks` shared out between the
    threads, and every term is added to a block before the next block: ``total`` then
    goes through memory once however many terms there are, instead of once per term
    (each element still gets the terms in the same order, so the result is that of the
    plain loop, to the bit).
    """
    if total.size < SPLIT_MIN_ELEMENTS or total.ndim == 0 or any(t.shape != total.shape for t in terms):
        for term in terms:
            total += term
        return
    if total.ndim == 1:  # a leading axis of 1, so that every block is (row, slice)
        total, terms = total[None], tuple(t[None] for t in terms)
    plane = total.size // (total.shape[0] * total.shape[1])

    def add(parts: Sequence[tuple[int, slice]]) -> None:
        for part in parts:
            for term in terms:
                total[part] += term[part]

    map_chunks(add, blocks(total.shape[0], total.shape[1], plane, BLOCK_ELEMENTS))
