"""Image readers: a regular file (holes skipped with SEEK_DATA/SEEK_HOLE) or a block device.

A source yields its content as a sequence of extents: data to read, or holes that are
known to be zeros without reading. Memory stays bounded: data comes in buffers.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import SourceChanged, SourceError

READ_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Extent:
    offset: int
    size: int
    is_hole: bool


class ImageSource:
    """An open image: its size, kind, and a reader of its extents."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise SourceError(f"source {self.path} does not exist") from None
        except IsADirectoryError:
            raise SourceError(f"source {self.path} is a directory; give an image file or a "
                              f"block device") from None
        except PermissionError:
            raise SourceError(f"source {self.path} is not readable (permission denied)") from None
        mode = os.fstat(self._fd).st_mode
        if stat.S_ISDIR(mode):
            os.close(self._fd)
            raise SourceError(f"source {self.path} is a directory; give an image file or a "
                              f"block device")
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(self._fd)
            raise SourceError(f"source {self.path} is neither a regular file nor a block device")
        os.set_blocking(self._fd, True)
        self.is_block_device = stat.S_ISBLK(mode)
        self.size = self._current_size()
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def _current_size(self) -> int:
        if self.is_block_device:
            return os.lseek(self._fd, 0, os.SEEK_END)
        return os.fstat(self._fd).st_size

    @property
    def label(self) -> str:
        """How the snapshot record names the source: its absolute path."""
        return str(self.path.absolute())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extents(self) -> Iterator[Extent]:
        """Data and hole extents covering [0, size) in order."""
        if self.is_block_device:
            if self.size:
                yield Extent(0, self.size, False)
            return
        offset = 0
        while offset < self.size:
            try:
                data = os.lseek(self._fd, offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # only a hole remains
                    data = self.size
                elif error.errno == errno.EINVAL:  # filesystem without SEEK_DATA
                    yield Extent(offset, self.size - offset, False)
                    return
                else:
                    raise
            data = min(data, self.size)
            if data > offset:
                yield Extent(offset, data - offset, True)
            if data >= self.size:
                return
            hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), self.size)
            yield Extent(data, hole - data, False)
            offset = hole

    def read_buffers(self, extent: Extent) -> Iterator[bytes]:
        """The bytes of a data extent, in buffers of at most READ_BUFFER_BYTES."""
        offset, end = extent.offset, extent.offset + extent.size
        while offset < end:
            want = min(READ_BUFFER_BYTES, end - offset)
            data = os.pread(self._fd, want, offset)
            if len(data) < want:
                raise SourceChanged(f"source {self.path} shrank while it was read (short read "
                                    f"at byte {offset + len(data)}); nothing was recorded")
            offset += want
            yield data

    def pieces(self) -> Iterator[tuple[Extent, bytes | None]]:
        """The whole image in order: (hole extent, None) or (data extent, its bytes)."""
        for extent in self.extents():
            if extent.is_hole:
                yield extent, None
                continue
            offset = extent.offset
            for buffer in self.read_buffers(extent):
                yield Extent(offset, len(buffer), False), buffer
                offset += len(buffer)

    def check_unchanged(self) -> None:
        """Fail if the size differs from the size seen at open."""
        now = self._current_size()
        if now != self.size:
            raise SourceChanged(f"source {self.path} changed size while it was read "
                                f"({self.size} -> {now} bytes); nothing was recorded: rerun the "
                                f"backup when it is quiet, or back up a snapshot of it")
