"""Starting the disk write of what a restore just wrote (Linux ``sync_file_range``), so the
disk writes while the next pieces are decompressed and the final fsync finds little left:
without it the kernel holds gigabytes dirty until that fsync, which then writes them all
while nothing else runs. It only starts writes; durability still comes from the fsync."""

from __future__ import annotations

import functools

_SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages of the range, do not wait


@functools.cache
def _sync_file_range():
    """libc's sync_file_range, or None where there is none (loaded on first use: ctypes
    costs start-up time that commands which never restore should not pay)."""
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing [offset, offset + length) of ``fd`` to disk. A
    target that does not support it (a pipe, some filesystems) is simply not asked."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
