"""One read-only, seekable file object over positioned reads, and positioned reads of any
file object (shared by several views, so seek+read is made atomic).

The image, a partition window, the guarded volume the filesystem parsers see, and a file
inside a filesystem all need the same position/seek/read/readinto logic; subclasses only
say how to read ``length`` bytes at ``offset``.
"""

from __future__ import annotations

import io
import threading
import weakref
from typing import BinaryIO


class PositionedFile(io.RawIOBase):
    """A file of known ``size``; subclasses implement ``pread(offset, length)``, which must
    not move the position (so several views over one source need no lock)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, n: int | None = -1) -> bytes:
        n = max(0, self.size - self._position) if n is None or n < 0 else n
        data = self.pread(self._position, n) if n else b""
        self._position += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def pread(self, offset: int, length: int) -> bytes:
        raise NotImplementedError


def size_of(fileobj: BinaryIO) -> int:
    """Size in bytes of a readable file-like object (its `.size`, else by seeking to the end)."""
    size = getattr(fileobj, "size", None)
    if isinstance(size, int):
        return size
    with _lock_for(fileobj):  # the position is shared with other threads' read_at
        position = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(position)
    return end


_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
_fallback_lock = threading.Lock()


def _lock_for(fileobj: BinaryIO) -> threading.Lock:
    with _locks_guard:
        try:
            lock = _locks.get(fileobj)
            if lock is None:
                lock = _locks[fileobj] = threading.Lock()
            return lock
        except TypeError:  # not weak-referenceable: share one lock
            return _fallback_lock


def read_at(fileobj: BinaryIO, offset: int, length: int) -> bytes:
    """Read `length` bytes at `offset`, safe against other threads using the same object.

    Several views (p1, p2, the filesystems on them) share one image reader whose position is a
    single shared value, so seek+read must be atomic; a reader offering `pread` avoids the lock.
    """
    pread = getattr(fileobj, "pread", None)
    if pread is not None:
        return pread(offset, length)
    with _lock_for(fileobj):
        fileobj.seek(offset)
        return fileobj.read(length)
