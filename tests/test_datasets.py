"""minibam.datasets.cluttered: the object is where the box says, clutter comes only from
the pool, alignment and determinism hold, inputs are untouched, bad input is named."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minibam.datasets import cluttered


def _pool(k=5, h=6, w=4, seed=0):
    rng = np.random.default_rng(seed)
    # Strictly positive objects, so "the object is drawn" is visible everywhere in its box.
    return rng.uniform(0.1, 1.0, size=(k, h, w)), np.arange(k) * 10


@given(n=st.integers(0, 6), canvas=st.integers(6, 20), fragments=st.integers(0, 5),
       fragment_size=st.integers(1, 4), align=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_object_in_its_box_and_clutter_only_from_the_pool(n, canvas, fragments, fragment_size, align, seed):
    images, labels = _pool()
    before = images.copy(), labels.copy()
    x, y, boxes = cluttered(images, labels, n, canvas=canvas, fragments=fragments,
                            fragment_size=fragment_size, align=align, rng=np.random.default_rng(seed))
    assert x.shape == (n, 1, canvas, canvas) and y.shape == (n,) and boxes.shape == (n, 4)
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(labels, before[1])
    for i in range(n):
        top, left, h, w = boxes[i]
        assert (h, w) == (6, 4) and top % align == 0 and left % align == 0
        assert 0 <= top <= canvas - h and 0 <= left <= canvas - w
        inside = x[i, 0, top:top + h, left:left + w]
        k = labels.tolist().index(y[i])
        # the object is drawn in full; a fragment on top can only be brighter
        assert (inside >= images[k]).all()
        outside = x[i, 0].copy()
        outside[top:top + h, left:left + w] = 0
        assert ((outside == 0) | np.isin(outside, images)).all()
        if fragments == 0:
            np.testing.assert_array_equal(inside, images[k])
            assert not outside.any()


def test_same_generator_state_same_data_and_labels_follow_the_object():
    images, labels = _pool(k=3, h=8, w=8)
    a = cluttered(images, labels, 20, rng=np.random.default_rng(3))
    b = cluttered(images, labels, 20, rng=np.random.default_rng(3))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    x, y, boxes = a
    for i in range(len(x)):
        top, left, h, w = boxes[i]
        k = y[i] // 10
        assert (x[i, 0, top:top + h, left:left + w] >= images[k]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"images": np.zeros((3, 8))}, "images must be a non-empty (K, h, w)"),
    ({"labels": np.arange(4)}, "labels must have shape (3,)"),
    ({"n": -1}, "n must be a non-negative int"),
    ({"n": 2.0}, "n must be a non-negative int"),
    ({"canvas": 7}, "canvas=7 is smaller than the images"),
    ({"fragment_size": 9}, "fragment_size must be in 1..8"),
    ({"fragment_size": 0}, "fragment_size must be in 1..8"),
    ({"align": 0}, "align must be at least 1"),
    ({"fragments": True}, "fragments must be a non-negative int"),
])
def test_bad_input_is_named(kwargs, message):
    args = {"images": np.ones((3, 8, 8)), "labels": np.arange(3), "n": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(f"cluttered: {message}")):
        cluttered(**args)
