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

What is already at the target is treated as ``open(path, "wb")`` would treat it, as far
as a rename allows (docs/guarantees.md, "Writes are atomic"):

- a file ``open`` may not write (read-only, 0444, for a user other than root) is refused
  with ``PermissionError`` before anything is written;
- a symbolic link is followed: its target is replaced (the temporary file goes beside
  the target) and the link stays a link;
- a replaced file keeps its permission bits; it keeps its owner and group where the
  writer may set them (root may; another user keeps the group if a member of it, and
  the file becomes theirs otherwise, as with any tool that saves by renaming);
- anything but a regular file (a FIFO, a device, a socket, a directory) is refused;
  renaming over it would destroy it, which ``open`` would not do;
- the temporary name is short and fixed in length, so any valid target name works.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def current_umask() -> int:
    """The process's umask now, read each time a file is made (a notebook may change it).

    Linux shows it in /proc/self/status, read without changing it. Elsewhere the only way
    is ``os.umask``, which sets it while reading it: it is set to the most private value
    for that instant, so a file another thread creates meanwhile is never too open."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, who: str = "write") -> Iterator[IO[bytes]]:
    """A binary handle whose contents replace ``path`` only if the block completes.

    ``who`` names the caller in the error messages (``"save"``)."""
    name = os.fsdecode(path)
    if name.endswith((os.sep, os.altsep or os.sep)):  # realpath would drop the separator
        raise IsADirectoryError(f"{who}: {name!r} ends with a path separator, so it names a "
                                f"directory, not a file")
    # A symlink is followed: its target is what gets replaced, and the link survives.
    target = os.path.realpath(name)
    existing = _existing(target, path, who)
    fd, temporary = tempfile.mkstemp(prefix=".mb", suffix=".partial", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it the target
        _take_over(temporary, existing)
        os.replace(temporary, target)
    except BaseException:  # KeyboardInterrupt and SystemExit too: never leave a partial file
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _existing(target: str, path: str | os.PathLike, who: str) -> os.stat_result | None:
    """What is at ``target`` now (None if nothing), after refusing what a rename may not
    replace: anything but a regular file, and a file the caller could not open to write."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{who}: {os.fsdecode(path)!r} is a directory, not a file")
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise ValueError(
                f"{who}: {os.fsdecode(path)!r} is not a regular file ({kind}); minibam writes "
                f"regular files only, replacing them whole (pass an open binary file instead)"
            )
    # The question open(path, "wb") asks: may this process write this file? (root may.)
    effective = os.access in os.supports_effective_ids
    if not os.access(target, os.W_OK, effective_ids=effective):
        raise PermissionError(
            13, f"{who}: permission denied (the file is read-only for you; open(path, 'wb') "
            f"would be refused too)", os.fsdecode(path)
        )
    return info


def _take_over(temporary: str, existing: os.stat_result | None) -> None:
    """Give the new file the old one's owner, group and mode (or a new file's mode)."""
    if existing is None:
        # mkstemp made it private (0600); a new file gets what open() would give it.
        os.chmod(temporary, 0o666 & ~current_umask())
        return
    mine = os.stat(temporary)
    if hasattr(os, "chown") and (mine.st_uid, mine.st_gid) != (existing.st_uid, existing.st_gid):
        # Only root may give a file away; anyone may keep a group they belong to.
        for uid, gid in ((existing.st_uid, existing.st_gid), (-1, existing.st_gid)):
            try:
                os.chown(temporary, uid, gid)
                break
            except OSError:  # not permitted (or not supported by this file system)
                continue
    os.chmod(temporary, stat.S_IMODE(existing.st_mode))  # after chown, which clears setuid
