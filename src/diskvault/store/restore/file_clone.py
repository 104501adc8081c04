"""A copy of a file that costs as little as the filesystem allows: a reflink (FICLONE: btrfs,
XFS; shares the extents, writes nothing), else an in-kernel copy of the data extents only
(copy_file_range over SEEK_DATA/SEEK_HOLE: holes stay holes; on ext4 the data is copied)."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
COPY_STEP_BYTES = 64 * 1024 * 1024
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def clone_file(source_fd: int, target_fd: int) -> tuple[str, int]:
    """Make the empty file ``target_fd`` a copy of ``source_fd``: ("reflink", 0), or
    ("copy", bytes copied) where the filesystem cannot share extents."""
    if reflink(source_fd, target_fd):
        return "reflink", 0
    size = os.fstat(source_fd).st_size
    os.ftruncate(target_fd, size)
    return "copy", sum(_copy_range(source_fd, target_fd, start, end)
                       for start, end in data_extents(source_fd, size))


def reflink(source_fd: int, target_fd: int) -> bool:
    """Make ``target_fd`` share all of ``source_fd``'s extents, at one instant (the kernel
    holds both files' locks); False where the filesystem (or the pair) cannot."""
    try:
        fcntl.ioctl(target_fd, FICLONE, source_fd)
        return True
    except OSError as error:
        if error.errno not in _NO_REFLINK:
            raise
    return False


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every stretch of data in the file, holes left out."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        position = end


def _copy_range(source_fd: int, target_fd: int, start: int, end: int) -> int:
    position = start
    while position < end:
        copied = os.copy_file_range(source_fd, target_fd, min(COPY_STEP_BYTES, end - position),
                                    position, position)
        if copied == 0:  # the source shrank under us
            break
        position += copied
    return position - start
