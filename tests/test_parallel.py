"""backends/threads.py and backends/accumulate.py: blocks of NumPy work shared out between threads give what one thread gives."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from minibam.backends import accumulate
from minibam.backends import threads as _parallel


@pytest.fixture
def three_threads(monkeypatch):
    monkeypatch.setattr(_parallel, "THREADS", 3)


def test_map_chunks_covers_every_item_once_in_order(three_threads):
    seen: list[tuple[str, list[int]]] = []

    def work(chunk):
        seen.append((threading.current_thread().name, list(chunk)))
        return list(chunk)

    results = _parallel.map_chunks(work, list(range(10)))
    assert [i for part in results for i in part] == list(range(10))
    assert len(results) == 3 and all(results)
    assert any(name.startswith("minibam") for name, _ in seen)  # really on the pool


def test_map_chunks_with_one_thread_runs_in_the_caller(monkeypatch):
    monkeypatch.setattr(_parallel, "THREADS", 1)
    names = _parallel.map_chunks(lambda chunk: threading.current_thread().name, [1, 2, 3])
    assert names == [threading.current_thread().name]


def test_the_callers_error_settings_hold_in_every_thread(three_threads):
    def work(chunk):
        return np.geterr()["over"]

    with np.errstate(over="raise"):
        assert _parallel.map_chunks(work, [1, 2, 3]) == ["raise"] * 3


@pytest.mark.parametrize("broadcast", [False, True])
def test_add_into_equals_plain_addition(monkeypatch, three_threads, broadcast):
    monkeypatch.setattr(accumulate, "SPLIT_MIN_ELEMENTS", 8)
    rng = np.random.default_rng(0)
    total = rng.standard_normal((5, 3, 4))
    term = rng.standard_normal((5, 3, 1)) if broadcast else rng.standard_normal((5, 3, 4))
    term = np.broadcast_to(term, total.shape)  # as global average pooling's backward returns it
    expected = total + term
    accumulate.add_into(total, term)
    np.testing.assert_array_equal(total, expected)


@pytest.mark.parametrize("shape", [(5, 7, 4), (6, 9), (40,), (3, 1, 2, 5)])
@pytest.mark.parametrize("block", [1, 3, 10, 1 << 16])
def test_add_into_several_terms_block_by_block(monkeypatch, three_threads, shape, block):
    """Several terms added block by block (blocks smaller than a row, several rows, one
    value) give the plain loop's result to the bit, terms in order, a broadcast view among
    them; the terms are not modified."""
    monkeypatch.setattr(accumulate, "SPLIT_MIN_ELEMENTS", 8)
    monkeypatch.setattr(accumulate, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(block)
    total = rng.standard_normal(shape)
    column = rng.standard_normal(shape[:1] + (1,) * (len(shape) - 1))
    terms = [rng.standard_normal(shape) * 1e8, np.broadcast_to(column, shape),
             rng.standard_normal(shape) * 1e-8]
    copies = [t.copy() for t in terms]
    expected = total.copy()
    for term in terms:
        expected += term
    accumulate.add_into(total, *terms)
    np.testing.assert_array_equal(total, expected)
    for term, copy in zip(terms, copies):
        np.testing.assert_array_equal(term, copy)


def test_a_tensor_used_three_times_gets_the_sum_of_its_three_gradients():
    """The engine keeps the later gradients of a tensor until its turn, then adds them in
    one pass: x * 2 + x * 3 + x.sum() has gradient 2 + 3 + 1 at every element, and a
    caller's upstream gradient passed through unchanged is never written into."""
    import minibam as mb

    x = mb.Tensor(np.arange(600.0).reshape(3, 200), requires_grad=True)
    ((x * 2 + x * 3) + x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((3, 200), 6.0))
    y = mb.Tensor(np.ones((3, 200)), requires_grad=True)
    dy = np.full((3, 200), 0.5)
    (y + y + y).backward(dy)
    np.testing.assert_array_equal(y.grad, np.full((3, 200), 1.5))
    np.testing.assert_array_equal(dy, 0.5)


def test_map_chunks_inside_map_chunks_does_not_wait_for_itself(three_threads):
    """A run on a pool thread that itself calls map_chunks runs its work in place (the
    pool's threads may all be busy with the outer runs: waiting would never end)."""
    def inner(chunk):
        return sum(chunk)

    def outer(chunk):
        return _parallel.map_chunks(inner, list(chunk))

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", _parallel.map_chunks(outer, list(range(9)))))
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "map_chunks inside map_chunks waited for itself"
    assert sum(sum(part) for part in result["r"]) == sum(range(9))
