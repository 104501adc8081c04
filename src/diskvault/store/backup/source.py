"""Image readers: a regular file (holes skipped with SEEK_DATA/SEEK_HOLE) or a block device.

A source yields its content as a sequence of extents: data to read, or holes that are
known to be zeros without reading. Memory stays bounded: data comes in buffers. A file
read in place is checked after the read: a write during it changes its size, mtime or
ctime, and a snapshot of a moving target is never recorded (docs/point-in-time.md).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ...errors import SourceChanged, SourceError

READ_BUFFER_BYTES = 4 * 1024 * 1024

# How the image was held still while it was read; the snapshot record keeps it.
CHECKED = "checked"        # a file read in place, the same after the read as before
UNCHECKED = "unchecked"    # a block device read in place: a write to it leaves no trace


@dataclass(frozen=True)
class Extent:
    offset: int
    size: int
    is_hole: bool


@dataclass(frozen=True)
class FileState:
    """What an inode tells of its content: every write moves mtime and ctime."""
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, status: os.stat_result) -> "FileState":
        return cls(status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino,
                   status.st_dev)


def change_seen(before: FileState, after: FileState) -> str | None:
    """What differs between two states of a file, in words; None if nothing does."""
    if (after.inode, after.device) != (before.inode, before.device):
        return "its path names another file now, or none"
    if after.size != before.size:
        return f"size {before.size} -> {after.size} bytes"
    if after.mtime_ns != before.mtime_ns:
        return f"mtime {_clock(before.mtime_ns)} -> {_clock(after.mtime_ns)}"
    if after.ctime_ns != before.ctime_ns:
        return f"ctime {_clock(before.ctime_ns)} -> {_clock(after.ctime_ns)}"
    return None


def _clock(time_ns: int) -> str:
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


class ImageSource:
    """An open image: its size, kind, and a reader of its extents.

    ``view`` is an open descriptor of a point-in-time copy of ``path`` (a reflink clone, an
    LVM snapshot), read instead of ``path`` and closed with the source; ``consistency`` then
    names it. Without one, ``path`` is read in place and checked after the read."""

    def __init__(self, path: Path, view: int | None = None, consistency: str | None = None):
        self.path = Path(path)
        if view is not None:
            self._fd = view
            self._take_stock(consistency)
            return
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
        self._take_stock(None)

    def _take_stock(self, consistency: str | None) -> None:
        status = os.fstat(self._fd)
        mode = status.st_mode
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
        self.in_place = consistency is None
        self.consistency = consistency or (UNCHECKED if self.is_block_device else CHECKED)
        self._state_at_open = FileState.of(status)
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
        """Fail if the source is seen to have changed since it was opened: its size (any
        source), and for a file read in place its mtime, ctime, and the inode its path names."""
        now = self._current_size()
        change = f"size {self.size} -> {now} bytes" if now != self.size else None
        if change is None and self.in_place and not self.is_block_device:
            change = change_seen(self._state_at_open, self._state_now())
        if change:
            raise SourceChanged(f"{self.path} changed while it was read ({change}): nothing "
                                f"was recorded; back it up through a point-in-time view "
                                f"(--snapshot reflink|lvm) or stop the writer")

    def _state_now(self) -> FileState:
        """The open file's state, with the inode and device its path names now."""
        state = FileState.of(os.fstat(self._fd))
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return FileState(state.size, state.mtime_ns, state.ctime_ns, -1, -1)
        return FileState(state.size, state.mtime_ns, state.ctime_ns, named.st_ino,
                         named.st_dev)


# What the facade's backup opens its source with: ImageSource itself (in place), or a
# point-in-time view from sources/.
SourceOpener = Callable[[Path], AbstractContextManager[ImageSource]]
