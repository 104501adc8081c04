"""The parts every filesystem driver shares: the Entry value, the Driver interface, the
errors, and the guarded view of a volume that bounds what one step of parsing may cost.

`filesystems` builds the public API on these; drivers (unix, dos, exfat) import them
from here, so that nothing imports in a circle.
"""

from __future__ import annotations

import contextlib
import logging
import stat as stat_module
import sys
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..fileview import PositionedFile, size_of
from ..volumes import PartitionView

# The parsers log damage they work around; keep that out of the user's terminal unless the
# application configures logging (a library adds a NullHandler and nothing else).
logging.getLogger("dissect").addHandler(logging.NullHandler())

# Reads one step may make (resolving one name, producing one directory entry, opening a file).
# Legitimate steps need a handful to a few thousand; a loop in hostile metadata needs endless.
STEP_READ_LIMIT = 100_000
# Python calls one step may make: listing one entry needs thousands, opening a file about 15
# per cluster of its chain (FAT); a loop in cached metadata needs endless. (Filesystem.open
# grants more in proportion to the file's size.) The limit is reached after some seconds.
STEP_CALL_LIMIT = 3_000_000
MAX_SINGLE_READ = 256 * 1024 * 1024




class Damaged(Exception):
    """Raised by drivers and the read guard; `Filesystem` turns it into DamagedFilesystem
    with the volume and path in front (drivers do not know them)."""





KINDS = ("file", "dir", "symlink", "device", "other")


@dataclass(frozen=True)
class Entry:
    """What `ls -l` shows of one name. Times are nanoseconds since the epoch (UTC).

    `mode` holds the type bits too (usable as st_mode); filesystems without POSIX modes (FAT,
    exFAT, NTFS) get 0644/0755 (0444 read-only), and `uid`/`gid` None.
    """

    name: str
    path: str
    kind: str
    size: int
    mode: int
    uid: int | None
    gid: int | None
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    birthtime_ns: int | None = None
    symlink_target: str | None = None


def kind_of_mode(mode: int) -> str:
    fmt = stat_module.S_IFMT(mode)
    if fmt == stat_module.S_IFREG:
        return "file"
    if fmt == stat_module.S_IFDIR:
        return "dir"
    if fmt == stat_module.S_IFLNK:
        return "symlink"
    if fmt in (stat_module.S_IFCHR, stat_module.S_IFBLK):
        return "device"
    return "other"


class Driver:
    """One filesystem family over dissect. Nodes are the parser's own objects, opaque here.

    Drivers may raise anything on damaged input: `Filesystem` turns it into DamagedFilesystem.
    """

    kind: str = "?"
    label: str | None = None
    case_insensitive = False

    def root(self) -> Any:
        raise NotImplementedError

    def children(self, node: Any) -> Iterator[tuple[str, Any]]:
        """(name, node) for each entry of a directory node, without '.' and '..'."""
        raise NotImplementedError

    def describe(self, node: Any, name: str, path: str) -> Entry:
        raise NotImplementedError

    def identity(self, node: Any) -> Hashable:
        """Equal for two nodes that are the same directory (cycle detection)."""
        raise NotImplementedError

    def open(self, node: Any) -> BinaryIO:
        """The content stream of a regular file node (has `.size`)."""
        raise NotImplementedError

    def data_ranges(self, stream: BinaryIO) -> list[tuple[int, int]] | None:
        """Byte ranges of an opened stream that hold data (the rest are holes), if known."""
        from dissect.util.stream import RunlistStream

        if type(stream) is not RunlistStream:  # subclasses (NTFS compression) mean otherwise
            return None
        return merge_ranges((offset is not None, count * stream.block_size)
                            for offset, count in stream.runlist)


def merge_ranges(pieces) -> list[tuple[int, int]]:
    """(has data, length) pieces laid end to end -> merged (start, end) ranges with data."""
    ranges: list[tuple[int, int]] = []
    position = 0
    for has_data, length in pieces:
        if has_data and length > 0:
            if ranges and ranges[-1][1] == position:
                ranges[-1] = (ranges[-1][0], position + length)
            else:
                ranges.append((position, position + length))
        position += length
    return ranges


class GuardedVolume(PositionedFile):
    """The volume as the parsers see it: positioned reads, with a per-step budget of reads and
    of Python calls. Reads alone are not enough: dissect caches what it parsed, so a cycle in
    hostile metadata can spin forever on cached nodes without reading; it still calls Python
    functions, which a trace hook (this thread only, only inside `watch()`) counts. A trace
    hook, not a profile hook: it is called for Python calls only, where a profile hook is also
    called for every return and every call of a C function, which made pulling a tree of small
    files twice as slow."""

    def __init__(self, fileobj: BinaryIO):
        self._view = fileobj if isinstance(fileobj, PartitionView) else PartitionView(
            fileobj, 0, size_of(fileobj))
        super().__init__(self._view.size)
        self.reads_left, self.calls_left = STEP_READ_LIMIT, STEP_CALL_LIMIT
        self.tracer = self._count_call  # one bound method, so `is` can recognise it

    def arm(self, reads: int = STEP_READ_LIMIT, calls: int = STEP_CALL_LIMIT) -> None:
        """Start a new step's budget (after progress: a new entry, a new read request)."""
        self.reads_left, self.calls_left = reads, calls

    def _count_call(self, frame, event: str, arg) -> None:
        """The global trace function: called once per Python call; returning None, it leaves
        the called function untraced line by line."""
        self.calls_left -= 1
        if self.calls_left < 0:
            raise Damaged("its structures send the reader in circles (endless work)")

    @contextlib.contextmanager
    def watch(self):
        """Count calls while the body runs (nested use is fine; a tracer in use is restored)."""
        previous = sys.gettrace()
        installed = previous is not self.tracer
        if installed:
            sys.settrace(self.tracer)
        try:
            yield
        finally:
            if installed:
                sys.settrace(previous)

    def read(self, n: int = -1) -> bytes:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise Damaged("its structures send the reader in circles (endless reads)")
        n = self.size - self._position if n is None or n < 0 else n
        if n > MAX_SINGLE_READ:  # file content comes in pieces; only a lying structure asks this
            raise Damaged(f"a structure claims {n} bytes in one piece")
        return super().read(n)

    def pread(self, offset: int, length: int) -> bytes:
        return self._view.pread(offset, length)
