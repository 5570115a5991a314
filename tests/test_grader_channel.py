"""The grader's channel: what crosses it is plain values and arrays; anything else is a
ProtocolError, never code run, never an allocation larger than the bytes received."""

from __future__ import annotations

import io
import os
import struct
import time

import numpy as np
import pytest

from minibam.exercises import channel
from minibam.exercises.channel import ProtocolError


def roundtrip(value):
    arrays: list[bytes] = []
    tree = channel.encode(value, arrays)
    return channel.decode(tree, [channel.load_array(a) for a in arrays])


def test_plain_values_and_arrays_cross():
    x = np.arange(6.0).reshape(2, 3)
    out = roundtrip({"a": (x, [1, "s", None, 2.5]), "f": np.asfortranarray(x), "s": np.float64(3.0)})
    assert np.array_equal(out["a"][0], x) and out["a"][1] == [1, "s", None, 2.5]
    assert isinstance(out["a"], tuple) and np.array_equal(out["f"], x)
    assert isinstance(out["s"], np.float64)
    assert isinstance(roundtrip(object()), channel.Foreign)
    assert isinstance(roundtrip(np.array([object()])), channel.Foreign)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_arrays_are_rebuilt_from_checked_headers_only():
    with pytest.raises(ProtocolError, match="not plain numbers"):
        channel.load_array(npy(np.array([{"a": 1}], dtype=object)))
    lying = npy(np.zeros(2)).replace(b"(2,)", b"(9,)")  # a header that claims more than it holds
    with pytest.raises(ProtocolError):
        channel.load_array(lying)
    with pytest.raises(ProtocolError):
        channel.load_array(b"garbage")


def frames(data: bytes, budget: int = 2**30):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        return channel.Reader(r, budget).frame(time.monotonic() + 5)
    finally:
        os.close(r)


def test_frames_are_bounded_and_checked():
    message, arrays = frames(channel.pack({"op": "x"}, [npy(np.ones(3))]))
    assert message == {"op": "x"} and np.array_equal(arrays[0], np.ones(3))
    with pytest.raises(ProtocolError, match="frame marker"):
        frames(b'{"passed": true}\n')
    with pytest.raises(ProtocolError, match="a message of"):
        frames(b"MBG1" + struct.pack(">Q", 10**12))
    with pytest.raises(ProtocolError, match="more data"):
        frames(channel.pack({"op": "x"}, [npy(np.ones(1000))]), budget=100)
    with pytest.raises(EOFError):
        frames(b"MBG1" + struct.pack(">Q", 50) + b"short")
    with pytest.raises(ProtocolError):
        frames(b"MBG1" + struct.pack(">Q", 8) + struct.pack(">I", 4) + b"[[[[")
    deep = b"[" * 50000  # json.loads would recurse past its limit
    body = struct.pack(">I", len(deep)) + deep + struct.pack(">I", 0)
    with pytest.raises(ProtocolError):
        frames(b"MBG1" + struct.pack(">Q", len(body)) + body)


def test_silence_is_a_timeout():
    r, w = os.pipe()
    try:
        with pytest.raises(TimeoutError):
            channel.Reader(r, 100).frame(time.monotonic() + 0.2)
    finally:
        os.close(r)
        os.close(w)
