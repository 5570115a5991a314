"""The one way minibam writes a file: all of it, or nothing.

    with atomic_write("bam.npz") as handle:
        handle.write(...)

The bytes go to a temporary file in the target's own folder (so the final rename never
crosses file systems); only when the block finishes without an error is that file
flushed to disk and renamed over the target with ``os.replace``, which POSIX and Windows
perform atomically. A full disk, a file-size limit, Ctrl-C or any exception inside the
block removes the temporary file and leaves an earlier file at the target exactly as it
was. Every writer uses this helper: ``mb.save``, ``minibam reference`` and
``minibam exercises start``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


def _default_mode() -> int:
    # mkstemp creates files readable by their owner only; a new checkpoint should get
    # the permissions open() would give it (0o666 minus the umask). Reading the umask
    # means setting it, so it is read once, at import, before any thread runs.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary handle whose contents replace ``path`` only if the block completes."""
    target = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    try:
        mode = os.stat(target).st_mode & 0o7777  # keep an existing file's permissions
    except OSError:
        mode = _NEW_FILE_MODE
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it the target
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:  # KeyboardInterrupt and SystemExit too: never leave a partial file
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
