"""Checkpoints: ``save(state_dict, path)`` and ``load(path)`` as ``.npz`` files.

A checkpoint is an ordinary NumPy ``.npz`` archive (a zip of ``.npy`` files, readable
with ``np.load``) holding one array per state-dict entry, in the state dict's order,
after a marker entry ``__minibam__`` that holds the format version. ``load`` refuses
any file without the marker, and never unpickles: arrays of Python objects cannot be
written, and reading one fails instead of running code (``allow_pickle=False``).

    mb.save(model.state_dict(), "bam.npz")
    model.load_state_dict(mb.load("bam.npz"))
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Mapping
from typing import IO, Any
from zlib import error as zlib_error

import numpy as np

from minibam._atomic import atomic_write
from minibam.tensor import Tensor

__all__ = ["FORMAT_VERSION", "MARKER", "load", "read_arrays", "save"]

MARKER = "__minibam__"
FORMAT_VERSION = 1
_MAX_NAME_BYTES = 0xFFFF  # a zip stores a member's name length in 16 bits

PathLike = str | os.PathLike | IO[bytes]


def _as_array(key: str, value: Any) -> np.ndarray:
    array = value.data if isinstance(value, Tensor) else np.asarray(value)
    # What load reads, and nothing else: a string, date or structured array would make
    # a file that load refuses, and it would replace a good checkpoint.
    if array.dtype.kind not in _NUMERIC_KINDS or array.dtype.fields is not None:
        raise TypeError(
            f"save: state_dict[{key!r}] has dtype {array.dtype}; only numeric arrays (bool, "
            f"integer, float, complex) can be saved (a checkpoint never contains pickled objects)"
        )
    return array


def save(state_dict: Mapping[str, Any], path: PathLike) -> None:
    """Write ``state_dict`` (name -> np.ndarray or Tensor) to ``path`` as a ``.npz`` file.

    The file is written to exactly ``path`` (no ``.npz`` is appended, unlike
    ``np.savez``); dtypes, shapes and the order of the keys are kept. The write is
    atomic: a temporary file beside ``path`` is renamed over it only when complete, so
    a failure or Ctrl-C midway leaves any earlier file untouched and no partial file.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"save: state_dict must be a dict of name -> array (for example "
            f"model.state_dict()), got {type(state_dict).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save: state_dict keys must be str, got {key!r}")
        if key == MARKER:
            raise ValueError(f"save: the key {MARKER!r} is reserved for the file format")
        _check_key(key)
        arrays[key] = _as_array(key, value)
    # zipfile directly rather than np.savez(path, **arrays): a key named "file" or
    # "allow_pickle" would collide with np.savez's own arguments.
    _check_path(path, "save", "write")
    if hasattr(path, "write"):  # an open binary file: the caller owns its fate
        _write_npz(path, arrays)
        return
    with atomic_write(os.fsdecode(path), who="save") as handle:
        _write_npz(handle, arrays)


def _check_key(key: str) -> None:
    """Refuse, before anything is written, a key that no zip member name can hold: the
    zip would cut the name at a NUL, and cannot encode a lone surrogate at all."""
    if "\0" in key:
        raise ValueError(
            f"save: state_dict key {key!r} contains a NUL character, which a file name "
            f"inside the .npz cannot hold"
        )
    try:
        size = len(key.encode("utf-8")) + len(".npy")
    except UnicodeEncodeError:
        raise ValueError(
            f"save: state_dict key {key!r} is not valid Unicode text (it holds a lone "
            f"surrogate), so it cannot name a member of the .npz"
        ) from None
    if size > _MAX_NAME_BYTES:
        raise ValueError(
            f"save: state_dict key {key[:40]!r}... is {size - 4} bytes long in UTF-8; a name "
            f"inside the .npz holds at most {_MAX_NAME_BYTES - 4} (plus '.npy')"
        )


def _write_npz(handle: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in [(MARKER, np.array(FORMAT_VERSION)), *arrays.items()]:
            with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load(path: PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint written by [`save`][minibam.io.save]: a dict of arrays in the saved order.

    Raises ``ValueError`` for a file that is not a minibam checkpoint (not an ``.npz``,
    corrupt, or without a valid marker), and for anything [`read_arrays`][minibam.io.read_arrays] refuses.
    """
    arrays = read_arrays(path)
    if MARKER not in arrays:
        raise ValueError(
            f"load: {path!r} is not a minibam checkpoint (an .npz file without the "
            f"{MARKER!r} entry that mb.save writes)"
        )
    marker = arrays.pop(MARKER)
    if marker.shape != () or marker.dtype.kind not in "iu" or int(marker) < 1:
        raise ValueError(
            f"load: {path!r}: member {MARKER + '.npy'!r} must hold the format version, a "
            f"positive integer, got {marker!r}; this is not a checkpoint written by mb.save"
        )
    if int(marker) > FORMAT_VERSION:
        raise ValueError(
            f"load: {path!r} has checkpoint format {int(marker)}; this minibam reads format "
            f"{FORMAT_VERSION} or older, so upgrade minibam"
        )
    return arrays


# Memory a load may use, as a multiple of the file's size (plus a little for tiny files):
# an uncompressed member needs exactly its own size, while a deflated one may expand,
# but never to gigabytes from a few megabytes (an "archive bomb").
MAX_EXPANSION = 16
SLACK_BYTES = 1 << 20
_NUMERIC_KINDS = "biufc"


def read_arrays(path: PathLike, what: str = "checkpoint", who: str = "load",
                text: bool = False) -> dict[str, np.ndarray]:
    """The one checked reader of ``.npz`` files: every member as an array, in order.

    Reads only ``.npy`` members of numeric dtypes with a valid header, and refuses with
    a ``ValueError`` naming the member: any other member, a duplicate name, object
    (pickled) or structured dtypes, and a header whose declared size disagrees with the
    archive or would need more than ``MAX_EXPANSION`` times the file's size (plus
    ``SLACK_BYTES``) in all. Each declared size is checked before anything is allocated,
    so memory stays within that bound whatever the file claims. Never unpickles.
    Anything but a regular file (a device, a FIFO, a socket) is refused from its type,
    before a byte is read. ``what`` names the kind of file and ``who`` the caller in
    the messages ("compare: 'case.npz' is not a minibam reference case ...").
    ``text=True`` also accepts text members (NumPy's ``U`` and ``S`` dtypes), under the
    same size bound: a reference case's ``meta.*`` entries.
    """
    kinds = _NUMERIC_KINDS + ("US" if text else "")
    _check_path(path, who, "read")
    if hasattr(path, "read"):  # an open file: the caller owns it and closes it
        mode = _mode_of(path)
        if mode is not None:
            _require_regular(mode, path, what, who)
        return _read_npz(path, path, what, who, kinds)
    path = os.fsdecode(path)
    with _open_regular(path, what, who) as handle:
        return _read_npz(handle, path, what, who, kinds)


def _read_npz(handle: IO[bytes], path: PathLike, what: str, who: str, kinds: str) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValueError(f"{who}: {path!r} is not a minibam {what} ({_kind_of(handle)})") from error
    with zf:
        fp = zf.fp
        size = fp.seek(0, os.SEEK_END) if fp is not None else 0
        budget = MAX_EXPANSION * size + SLACK_BYTES
        arrays: dict[str, np.ndarray] = {}
        for info in zf.infolist():
            member = info.filename
            if not member.endswith(".npy") or info.is_dir():
                raise ValueError(
                    f"{who}: {path!r}: member {member!r} is not an .npy array; a {what} holds "
                    f".npy members only"
                )
            key = member[: -len(".npy")]
            if key in arrays:
                raise ValueError(f"{who}: {path!r}: member {member!r} appears twice")
            try:
                arrays[key] = _read_member(zf, info, budget, kinds)
            except _Refused as refusal:
                raise ValueError(f"{who}: {path!r}: member {member!r} {refusal}") from None
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
                    ValueError, zlib_error) as error:
                raise ValueError(
                    f"{who}: {path!r} is a corrupt {what}: member {member!r}: {error}"
                ) from None
            budget -= arrays[key].nbytes
    return arrays


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _require_regular(mode: int, path: PathLike, what: str, who: str) -> None:
    """Refuse anything but a regular file from its type (``st_mode``) alone, before a
    byte is read: a device such as /dev/zero never ends, and a FIFO waits for a writer."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{who}: {path!r} is a directory, not a file")
    for test, kind in _KINDS:
        if test(mode):
            raise ValueError(
                f"{who}: {path!r} is not a regular file ({kind}); a {what} is a regular file"
            )


def _mode_of(handle: IO[bytes]) -> int | None:
    """The type and mode of an open file, or None for one in memory (``io.BytesIO``)."""
    try:
        return os.fstat(handle.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return None


def _open_regular(path: str, what: str, who: str) -> IO[bytes]:
    """``path`` opened for reading, refused unless it is a regular file (or a directory:
    ``IsADirectoryError``). ``os.stat`` first, which never blocks; then the open itself
    is non-blocking, so a FIFO put in the file's place meanwhile cannot hang it, and
    the type is checked again on what was opened."""
    _require_regular(os.stat(path).st_mode, path, what, who)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(os.fstat(fd).st_mode, path, what, who)
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_path(path: Any, fn: str, method: str) -> None:
    if not (isinstance(path, (str, bytes, os.PathLike)) or hasattr(path, method)):
        raise TypeError(
            f"{fn}: path must be a file name (str or os.PathLike) or an open binary file, "
            f"got {type(path).__name__}"
        )
    if isinstance(path, io.TextIOBase):
        raise TypeError(f"{fn}: {path!r} is open in text mode; a checkpoint is binary (open "
                        f"it with {'wb' if method == 'write' else 'rb'!r})")
    able = getattr(path, {"read": "readable", "write": "writable"}[method], None)
    if callable(able) and not able():  # an open file, in the wrong mode
        raise ValueError(f"{fn}: {path!r} is not open for {'reading' if method == 'read' else 'writing'}")
    if isinstance(path, (str, bytes)) and not path:
        raise ValueError(f"{fn}: path is empty")
    if isinstance(path, (str, bytes)) and ("\0" in path if isinstance(path, str) else b"\0" in path):
        raise ValueError(f"{fn}: path {path!r} contains a NUL character")


class _Refused(Exception):
    """A member that is well formed but not allowed; the message completes "member 'x' ..."."""


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, kinds: str) -> np.ndarray:
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise _Refused(f"has an unknown .npy format version {version}")
        if dtype.hasobject:
            raise _Refused(
                "contains pickled Python objects; minibam never unpickles "
                "(allow_pickle=False), so it cannot be loaded"
            )
        if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            raise _Refused(f"has dtype {dtype}; only {'numeric or text' if 'U' in kinds else 'numeric'} "
                           f"arrays can be loaded")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
            raise _Refused(f"declares shape {shape}, which is not a list of sizes (integers >= 0)")
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize  # Python ints: no overflow for absurd shapes
        header = member.tell()
        if header + nbytes != info.file_size:
            raise _Refused(
                f"declares shape {shape} of {dtype} ({nbytes} bytes) but the archive "
                f"holds {info.file_size - header} bytes for it"
            )
        if nbytes > budget:
            raise _Refused(
                f"declares shape {shape} of {dtype} ({nbytes} bytes), far more than the "
                f"file's size allows ({MAX_EXPANSION}x the file plus {SLACK_BYTES} bytes in all)"
            )
        array = np.empty(count, dtype=dtype)
        view = memoryview(array.view(np.uint8).reshape(-1))
        done = 0
        while done < nbytes:
            got = member.readinto(view[done : done + (1 << 20)])
            if not got:
                raise _Refused(f"ends after {done} of its {nbytes} bytes")
            done += got
        if member.read(1):
            raise _Refused(f"holds more data than its header declares ({nbytes} bytes)")
    return array.reshape(shape, order="F" if fortran else "C")


def _kind_of(handle: IO[bytes]) -> str:
    """A short reason why a file is not a zip, for the error message."""
    try:
        handle.seek(0)
        magic = handle.read(6)
    except (OSError, ValueError):
        return "unreadable"
    if magic == b"\x93NUMPY":
        return "a single .npy array, not an .npz archive"
    if not magic:
        return "an empty file"
    return "not an .npz archive; minibam reads only .npz files written by mb.save and never unpickles"
