"""ops/_parallel.py: blocks of NumPy work shared out between threads give what one thread gives."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from minibam.ops import _parallel


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
    monkeypatch.setattr(_parallel, "SPLIT_MIN_ELEMENTS", 8)
    rng = np.random.default_rng(0)
    total = rng.standard_normal((5, 3, 4))
    term = rng.standard_normal((5, 3, 1)) if broadcast else rng.standard_normal((5, 3, 4))
    term = np.broadcast_to(term, total.shape)  # as global average pooling's backward returns it
    expected = total + term
    _parallel.add_into(total, term)
    np.testing.assert_array_equal(total, expected)
