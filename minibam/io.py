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

import os
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from minibam.tensor import Tensor

__all__ = ["FORMAT_VERSION", "MARKER", "load", "save"]

MARKER = "__minibam__"
FORMAT_VERSION = 1

PathLike = str | os.PathLike | IO[bytes]


def _as_array(key: str, value: Any) -> np.ndarray:
    array = value.data if isinstance(value, Tensor) else np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(
            f"save: state_dict[{key!r}] has dtype {array.dtype}; only numeric arrays can "
            f"be saved (a checkpoint never contains pickled objects)"
        )
    return array


def save(state_dict: Mapping[str, Any], path: PathLike) -> None:
    """Write ``state_dict`` (name -> np.ndarray or Tensor) to ``path`` as a ``.npz`` file.

    The file is written to exactly ``path`` (no ``.npz`` is appended, unlike
    ``np.savez``); dtypes, shapes and the order of the keys are kept.
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
        arrays[key] = _as_array(key, value)
    # zipfile directly rather than np.savez(path, **arrays): a key named "file" or
    # "allow_pickle" would collide with np.savez's own arguments.
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in [(MARKER, np.array(FORMAT_VERSION)), *arrays.items()]:
            with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load(path: PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint written by [`save`][minibam.io.save]: a dict of arrays in the saved order.

    Raises ``ValueError`` for a file that is not a minibam checkpoint (not an ``.npz``,
    corrupt, or without the marker) and for one that would need unpickling.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # np.load raises many types for a file it cannot parse
        # For bytes it does not recognise, np.load guesses "a pickle" and suggests
        # allow_pickle=True; that advice is not repeated here.
        reason = "not an .npz archive" if "pickle" in str(error) else str(error)
        raise ValueError(
            f"load: {path!r} is not a minibam checkpoint ({reason}; minibam reads only "
            f".npz files written by mb.save and never unpickles)"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"load: {path!r} is not a minibam checkpoint (a single .npy array, not an .npz "
            f"archive)"
        )
    with archive:
        if MARKER not in archive.files:
            raise ValueError(
                f"load: {path!r} is not a minibam checkpoint (an .npz file without the "
                f"{MARKER!r} entry that mb.save writes)"
            )
        try:
            version = int(archive[MARKER])
            state = {key: archive[key] for key in archive.files if key != MARKER}
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise ValueError(f"load: {path!r} is a corrupt checkpoint: {error}") from error
            raise ValueError(
                f"load: {path!r} contains pickled Python objects; minibam never unpickles "
                f"(allow_pickle=False), so it cannot be loaded"
            ) from error
        except (zipfile.BadZipFile, OSError, EOFError, TypeError) as error:
            raise ValueError(f"load: {path!r} is a corrupt checkpoint: {error}") from error
    if version > FORMAT_VERSION:
        raise ValueError(
            f"load: {path!r} has checkpoint format {version}; this minibam reads format "
            f"{FORMAT_VERSION} or older, so upgrade minibam"
        )
    return state
