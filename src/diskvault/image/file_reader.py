"""A regular file's content inside an image's filesystem, as a positioned read-only file:
read in bounded pieces (memory stays bounded whatever the file's size), its holes told by
seek_data/seek_hole, and a read short of the claimed size reported as damage."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import BinaryIO

from .drivers.base import Damaged, Entry, GuardedVolume
from .fileview import PositionedFile

_READ_PIECE = 8 * 1024 * 1024  # FileReader asks the parsers for at most this much at once


class FileReader(PositionedFile):
    """A file's content as a read-only stream; memory stays bounded whatever the file's size.

    A read that comes back short of the size the filesystem claims is an error (damaged block
    map), never silently shorter data.
    """

    def __init__(self, stream: BinaryIO, entry: Entry, ranges: list[tuple[int, int]] | None,
                 operation: Callable[[str], AbstractContextManager], volume: GuardedVolume):
        """``ranges``: where the file's data lies (the driver's data_ranges; None if it does
        not say); ``operation(path)``: the filesystem's guard of each read (its lock, parser
        failures as errors naming the path); ``volume``: whose read budget each piece arms."""
        super().__init__(entry.size)
        self._stream, self.entry, self._ranges = stream, entry, ranges
        self._operation, self._volume = operation, volume

    def seek_data(self, offset: int) -> int:
        """Like SEEK_DATA: the first offset >= `offset` that may hold data; `size` if only a
        hole follows. Lets a copy skip holes without reading them (a hostile image can claim
        terabyte-sized sparse files)."""
        if self._ranges is None:
            return min(offset, self.size)
        index = bisect.bisect_right(self._ranges, (offset, float("inf")))
        if index and self._ranges[index - 1][1] > offset:
            return min(offset, self.size)
        if index < len(self._ranges):
            return min(self._ranges[index][0], self.size)
        return self.size

    def seek_hole(self, offset: int) -> int:
        """Like SEEK_HOLE: the first offset >= `offset` in a hole, or `size` (where the file
        ends, or when the filesystem does not say where its holes are)."""
        if self._ranges is None:
            return self.size
        index = bisect.bisect_right(self._ranges, (offset, float("inf")))
        if index and self._ranges[index - 1][1] > offset:
            return min(self._ranges[index - 1][1], self.size)
        return min(offset, self.size)

    def data_bytes(self) -> int:
        """How many of the file's bytes may hold data (holes left out; all of them when the
        filesystem does not say): what the mount reports as st_blocks."""
        if self._ranges is None:
            return self.size
        return sum(min(end, self.size) - start for start, end in self._ranges
                   if start < self.size)

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length), cut at the file's size; a short read from the
        filesystem is damage, never silently shorter data."""
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        pieces = []
        with self._operation(self.entry.path):
            for start in range(offset, end, _READ_PIECE):
                size = min(_READ_PIECE, end - start)
                self._volume.arm(reads=64 + size // 512)
                self._stream.seek(start)
                piece = self._stream.read(size)
                if len(piece) != size:
                    raise Damaged(f"the file's data ends at byte {start + len(piece)} "
                                  f"although its size is {self.size}")
                pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
