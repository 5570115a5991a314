"""Hypothesis strategies and random data shared by the whole test suite.

Import them by module name; pytest puts ``tests/`` on ``sys.path`` because the folder
has no ``__init__.py``::

    from strategies import arrays, axes, broadcastable_shapes, random_upstream, shapes

Everything here is small on purpose: finite differences cost one forward pass per
element, and the whole suite must stay within a few minutes on two cores. The values
are "well conditioned": bounded, and kept at least ``margin`` away from 0, so that a
finite difference never straddles ReLU's kink, ``log`` only sees positive numbers and
a divisor is never tiny.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_DIMS = 4
MAX_SIDE = 4

Shape = tuple[int, ...]


def shapes(
    min_dims: int = 0, max_dims: int = MAX_DIMS, min_side: int = 1, max_side: int = MAX_SIDE
) -> st.SearchStrategy[Shape]:
    """Array shapes with ``min_dims..max_dims`` axes of ``min_side..max_side`` each.

    The default includes 0-D shapes ``()``; pass ``min_side=0`` to allow empty axes.
    """
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def broadcastable_shapes(
    num_shapes: int = 2,
    min_dims: int = 0,
    max_dims: int = MAX_DIMS,
    min_side: int = 1,
    max_side: int = MAX_SIDE,
) -> st.SearchStrategy[tuple[Shape, ...]]:
    """``num_shapes`` shapes that NumPy can broadcast together (sizes 1 and missing
    leading axes included), e.g. ``((3, 1), (2, 1, 4))``."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes,
        min_dims=min_dims,
        max_dims=max_dims,
        min_side=min_side,
        max_side=max_side,
    ).map(lambda drawn: drawn.input_shapes)


def matmul_shapes(
    max_batch_dims: int = 2, max_side: int = MAX_SIDE
) -> st.SearchStrategy[tuple[Shape, Shape]]:
    """Operand shapes for ``a @ b``: 1-D operands, matrices, and batches that broadcast
    (e.g. ``((2, 1, 3, 4), (5, 4, 2))``), drawn from matmul's gufunc signature."""
    return hnp.mutually_broadcastable_shapes(
        signature=np.matmul.signature, max_dims=max_batch_dims, max_side=max_side
    ).map(lambda drawn: drawn.input_shapes)


def axes(shape: Shape, allow_none: bool = True) -> st.SearchStrategy[Any]:
    """An ``axis`` argument valid for ``shape``: ``None`` (all axes), one int, or a
    tuple of distinct axes (possibly empty); negative axes included."""
    ndim = len(shape)
    options: list[st.SearchStrategy[Any]] = [hnp.valid_tuple_axes(ndim)]
    if ndim:
        options.append(st.integers(-ndim, ndim - 1))
    if allow_none:
        options.append(st.none())
    return st.one_of(*options)


def basic_indices(shape: Shape) -> st.SearchStrategy[Any]:
    """Basic NumPy indices for ``shape``: ints, slices (negative steps too), ``None``
    and ``...``, alone or in a tuple. Never advanced (array or boolean) indexing."""
    return hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True)


def arrays(
    shape: Shape,
    bound: float = 2.0,
    margin: float = 0.1,
    positive: bool = False,
    dtype: Any = np.float64,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` (a tuple, or a strategy of tuples such as :func:`shapes`)
    with ``margin <= |value| <= margin + bound``.

    ``positive=True`` keeps every value in ``[margin, margin + bound]`` (for ``log``,
    non-integer powers); otherwise both signs occur. The values are drawn in float64
    and then cast to ``dtype``.
    """
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    def shift(a: np.ndarray) -> np.ndarray:
        if positive:
            a = np.abs(a) + margin
        else:
            # 0.0 and -0.0 alike go to +margin: nothing lands on a kink.
            a = a + np.where(np.signbit(a), -margin, margin)
        return np.asarray(a, dtype=dtype)  # 0-D arithmetic gives a scalar: back to an array

    return hnp.arrays(np.float64, shape, elements=elements).map(shift)


def random_upstream(shape: Shape, seed: int, dtype: Any = np.float64) -> np.ndarray:
    """A standard-normal dL/dy of ``shape``. Never test a backward with ``.sum()``
    alone: a loss of all ones hides every error orthogonal to it (batch norm!)."""
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(shape)).astype(dtype)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for :func:`random_upstream` and other NumPy generators."""
    return st.integers(0, 2**32 - 1)


def upstreams(shape: Shape, dtype: Any = np.float64) -> st.SearchStrategy[np.ndarray]:
    """Random upstream gradients of ``shape`` (see :func:`random_upstream`)."""
    return seeds().map(lambda seed: random_upstream(shape, seed, dtype))
