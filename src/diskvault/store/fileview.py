"""One read-only, seekable file object over positioned reads.

The image, a partition window, the guarded volume the filesystem parsers see, and a file
inside a filesystem all need the same position/seek/read/readinto logic; subclasses only
say how to read ``length`` bytes at ``offset``.
"""

from __future__ import annotations

import io


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
