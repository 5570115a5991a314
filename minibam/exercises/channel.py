"""The narrow channel between the grader and a worker: plain values and arrays, nothing
that runs code when it is read.

A frame is ``MBG1``, its length (8 bytes, big-endian), a JSON header (4-byte length,
then UTF-8) and the arrays it refers to, each an 8-byte length and ``.npy`` bytes. The
header holds the message; values in it are JSON scalars and strings, and containers
and arrays are tagged: ``{"l": [...]}`` a list, ``{"t": [...]}`` a tuple,
``{"d": [[key, value], ...]}`` a dict with str keys, ``{"a": i}`` the i-th array,
``{"s": i}`` a NumPy scalar (the i-th array, 0-D), ``{"o": "type name"}`` anything
else (only its type's name crosses).

The reader trusts nothing: the frame's length is bounded before a byte of it is kept,
reads have a deadline, the header's size and depth are bounded, and an array is
rebuilt from its header (a plain numeric dtype, shape and order checked against the
bytes present) with ``np.frombuffer``: never ``pickle``, never an allocation larger
than the bytes received. Anything else is a `ProtocolError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import struct
import time
from typing import Any

import numpy as np

MAGIC = b"MBG1"
MAX_FRAME = 16 * 2**20  # one message; the largest real answer is a few hundred kB
MAX_HEADER = 2**20
MAX_DEPTH = 24
MAX_ARRAYS = 4096
DTYPE_KINDS = "biufc"  # bool, integers, floats, complex: nothing with Python objects


class ProtocolError(Exception):
    """What the other side sent is not a well-formed message (or came too late)."""


# ----------------------------------------------------------------------------------------
# Values <-> a JSON tree plus arrays
# ----------------------------------------------------------------------------------------


def encode(value: Any, arrays: list[bytes], depth: int = 0) -> Any:
    """``value`` as a JSON-able tree; arrays are appended to ``arrays`` as ``.npy`` bytes."""
    if depth > MAX_DEPTH:
        return {"o": "value nested too deeply"}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in DTYPE_KINDS:
            return {"o": f"array of dtype {array.dtype}"}
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        arrays.append(buffer.getvalue())
        return {"s" if isinstance(value, np.generic) else "a": len(arrays) - 1}
    if type(value) in (list, tuple):
        return {"l" if type(value) is list else "t": [encode(v, arrays, depth + 1) for v in value]}
    if type(value) is dict and all(type(k) is str for k in value):
        return {"d": [[k, encode(v, arrays, depth + 1)] for k, v in value.items()]}
    return {"o": type(value).__name__}


class Foreign:
    """Something that is not a plain value: only its type's name crossed the channel."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


def decode(tree: Any, arrays: list[np.ndarray], depth: int = 0) -> Any:
    """The inverse of ``encode``; ``ProtocolError`` for anything else."""
    if depth > MAX_DEPTH + 1:
        raise ProtocolError("value nested too deeply")
    if tree is None or isinstance(tree, (bool, str, int)):
        return tree
    if isinstance(tree, float):
        return tree
    if not (isinstance(tree, dict) and len(tree) == 1):
        raise ProtocolError(f"not a tagged value: {type(tree).__name__}")
    (tag, body), = tree.items()
    if tag in ("a", "s"):
        if not (type(body) is int and 0 <= body < len(arrays)):
            raise ProtocolError("array reference out of range")
        array = arrays[body]
        if tag == "s":
            if array.ndim != 0:
                raise ProtocolError("a scalar that is not 0-D")
            return array[()]
        return array
    if tag in ("l", "t") and isinstance(body, list):
        items = [decode(v, arrays, depth + 1) for v in body]
        return items if tag == "l" else tuple(items)
    if tag == "d" and isinstance(body, list):
        out = {}
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ProtocolError("malformed dict entry")
            out[pair[0]] = decode(pair[1], arrays, depth + 1)
        return out
    if tag == "o" and isinstance(body, str):
        return Foreign(body[:100])
    raise ProtocolError(f"unknown tag {tag!r}")


def load_array(data: bytes) -> np.ndarray:
    """A ``.npy`` blob as an array, without pickle and without trusting its header."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=4096)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=4096)
        else:
            raise ProtocolError(f"unknown .npy version {version}")
    except (ValueError, SyntaxError, TypeError, EOFError) as error:
        raise ProtocolError(f"bad .npy header: {error}") from None
    if dtype.kind not in DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(f"array dtype {dtype} is not plain numbers")
    if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
        raise ProtocolError("bad array shape")
    body = data[stream.tell():]
    count = math.prod(shape)
    if count * dtype.itemsize != len(body):
        raise ProtocolError(f"array of shape {shape} and dtype {dtype} does not match its {len(body)} bytes")
    array = np.frombuffer(body, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return array.copy()  # writeable, and no longer tied to the frame's bytes


# ----------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------


def pack(message: dict[str, Any], arrays: list[bytes]) -> bytes:
    header = json.dumps(message).encode("utf-8")
    parts = [struct.pack(">I", len(header)), header, struct.pack(">I", len(arrays))]
    for blob in arrays:
        parts += [struct.pack(">Q", len(blob)), blob]
    body = b"".join(parts)
    return MAGIC + struct.pack(">Q", len(body)) + body


def send(fd: int, message: dict[str, Any], values: dict[str, Any] | None = None,
         deadline: float | None = None) -> None:
    """Write one frame: ``message`` (plain JSON) with ``values`` encoded into it. With a
    ``deadline`` (for a non-blocking ``fd``), ``TimeoutError`` when the reader stops
    reading; ``EOFError`` when it is gone."""
    arrays: list[bytes] = []
    message = {**message, **{k: encode(v, arrays) for k, v in (values or {}).items()}}
    write_all(fd, pack(message, arrays), deadline)


def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    view = memoryview(data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except BrokenPipeError:
            raise EOFError from None


class Reader:
    """Reads frames from ``fd`` with deadlines and a budget of bytes."""

    def __init__(self, fd: int, budget: int) -> None:
        self.fd, self.budget = fd, budget

    def _exactly(self, n: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, min(n - got, 2**20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def frame(self, deadline: float) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The next message and its arrays. ``TimeoutError`` after the deadline, ``EOFError``
        when the other side closed, ``ProtocolError`` for anything malformed or too big."""
        head = self._exactly(12, deadline)
        if head[:4] != MAGIC:
            raise ProtocolError("a message does not start with the frame marker")
        (length,) = struct.unpack(">Q", head[4:])
        if length > MAX_FRAME:
            raise ProtocolError(f"a message of {length} bytes (the limit is {MAX_FRAME})")
        if length > self.budget:
            raise ProtocolError("more data than an exercise's answers can take")
        self.budget -= length
        body = self._exactly(length, deadline)
        return parse(body)


def parse(body: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    try:
        (size,) = struct.unpack_from(">I", body, 0)
        if size > MAX_HEADER:
            raise ProtocolError(f"a header of {size} bytes")
        header = json.loads(body[4:4 + size].decode("utf-8"))
        offset = 4 + size
        (count,) = struct.unpack_from(">I", body, offset)
        offset += 4
        if count > MAX_ARRAYS:
            raise ProtocolError(f"{count} arrays in one message")
        arrays = []
        for _ in range(count):
            (n,) = struct.unpack_from(">Q", body, offset)
            offset += 8
            if offset + n > len(body):
                raise ProtocolError("an array runs past the end of its message")
            arrays.append(load_array(body[offset:offset + n]))
            offset += n
    except ProtocolError:
        raise
    except (struct.error, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"malformed message ({type(error).__name__})") from None
    if offset != len(body):
        raise ProtocolError("bytes after the last array of a message")
    if not isinstance(header, dict):
        raise ProtocolError("a message that is not a JSON object")
    return header, arrays
