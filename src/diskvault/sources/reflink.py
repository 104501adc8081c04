"""A reflink clone of an image file, taken at one instant and read instead of the file.

The clone is made with O_TMPFILE in the file's own folder (so on its filesystem, which a
clone needs): it never has a name, only other root processes could open it, and the kernel
frees it when its descriptor closes, on a SIGKILL too. So there is no leftover for a later
run to find, and no name another process could race for or plant a symlink at."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..store.restore.file_clone import reflink

# Why a folder cannot hold an unnamed file: the filesystem lacks O_TMPFILE, is read-only,
# or the user may not write there.
_NO_TEMPORARY_FILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EROFS, errno.EACCES, errno.EPERM}


class ReflinkUnavailable(Exception):
    """The file cannot be cloned where it is; ``reason`` says why, in words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def reflink_clone(path: Path) -> int:
    """An open descriptor of an unnamed clone of the regular file at ``path``, made now.
    Raises ReflinkUnavailable where its filesystem cannot share extents."""
    real = Path(os.path.realpath(path))
    try:
        source_fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:  # a read in place says it in the user's terms
        raise ReflinkUnavailable(f"it cannot be opened ({error.strerror})") from None
    try:
        try:
            clone_fd = os.open(real.parent, os.O_TMPFILE | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            if error.errno not in _NO_TEMPORARY_FILE:
                raise
            raise ReflinkUnavailable(f"no private file can be made in {real.parent} "
                                     f"({error.strerror})") from None
        if not reflink(source_fd, clone_fd):
            os.close(clone_fd)
            raise ReflinkUnavailable(f"the filesystem of {real.parent} cannot make a reflink "
                                     f"clone (XFS with reflink=1 and btrfs can)")
        return clone_fd
    finally:
        os.close(source_fd)
