"""An NBD export as a backup source: ``nbd://HOST[:PORT]/EXPORT`` or
``nbd+unix:///EXPORT?socket=PATH`` (the standard NBD URIs), read through nbd_reader.py.

Extents the server reports as zeros arrive as holes: fed to the chunker as zeros, never
read, exactly like a sparse file's holes, so an export and the file behind it give the same
chunks.

Opened with a dirty bitmap's name, the source also knows which extents the server's
``qemu:dirty-bitmap:NAME`` marks (``changes``) and reads any range on request
(``read_buffers``), so that a backup reads only those (docs/vm-sources.md); and, when it is
told, the snapshot the bitmap counts from (``counts_from``) and whom to tell the new
snapshot once it is recorded (``recorded``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import DiskvaultError, SourceError, ToolMissing
from ..store.backup.change_map import ChangeMap, merge_ranges
from ..store.backup.source import Extent
from . import nbd_reader
from .children import STOP_WAIT_S, start_child, stop_child

NBD_SCHEMES = ("nbd://", "nbds://", "nbd+unix://", "nbds+unix://")
# Debian's interpreter, the one python3-libnbd is built for (see nbd_reader.py).
SYSTEM_PYTHON = "/usr/bin/python3"


def is_nbd_uri(text: str) -> bool:
    return str(text).startswith(NBD_SCHEMES)


class NbdReadFailed(DiskvaultError):
    """The export could not be read to its end (server gone, read error)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; nothing was recorded")


class NbdSource:
    """The ``pieces``/``check_unchanged`` side of ImageSource, over an NBD export."""

    def __init__(self, uri: str, label: str | None = None, consistency: str | None = None,
                 bitmap: str | None = None, counts_from: str | None = None,
                 on_recorded: Callable[[str], None] | None = None):
        """``consistency`` says how the served view was held still, where diskvault made
        it (a running guest's); None: the server's view is what it is."""
        self.label = label or uri
        self.consistency = consistency
        self.path = self.label  # what messages call it
        self.bitmap = bitmap
        self.counts_from = counts_from
        self._on_recorded = on_recorded
        if not Path(SYSTEM_PYTHON).exists():
            raise ToolMissing(f"reading NBD needs Debian's {SYSTEM_PYTHON} with the package "
                              f"python3-libnbd")
        bitmap_argument = [bitmap] if bitmap is not None else []
        self._process = start_child(
            [SYSTEM_PYTHON, "-I", nbd_reader.__file__, uri, self.path, *bitmap_argument],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if bitmap is not None else subprocess.DEVNULL)
        header = self._process.stdout.read(nbd_reader.SIZE.size)
        if len(header) < nbd_reader.SIZE.size:
            self._fail(f"the NBD reader of {self.path} stopped before it began")
        (self.size,) = nbd_reader.SIZE.unpack(header)
        self._complete = bitmap is not None  # until pieces() is asked for: see check_unchanged
        self.changes = self._read_changes() if bitmap is not None else None

    def _read_changes(self) -> ChangeMap:
        """The extents the bitmap marks dirty, as the reader sends them first."""
        ranges = []
        kind, offset, length = self._frame()
        while kind != nbd_reader.END:
            if kind != nbd_reader.CHANGED:
                self._fail(f"the NBD reader of {self.path} sent a {kind!r} frame among the "
                           f"dirty extents", reader_ended=False)
            ranges.append((offset, offset + length))
            kind, offset, length = self._frame()
        return ChangeMap(merge_ranges(ranges))

    def _frame(self) -> tuple[bytes, int, int]:
        """The next frame's header, checked to lie inside the export."""
        frame = self._process.stdout.read(nbd_reader.FRAME.size)
        if len(frame) < nbd_reader.FRAME.size:
            self._fail(f"the NBD reader of {self.path} stopped")
        kind, offset, length = nbd_reader.FRAME.unpack(frame)
        if offset + length > self.size:
            self._fail(f"the NBD reader of {self.path} sent a frame past the export's end",
                       reader_ended=False)
        return kind, offset, length

    def _ask(self, kind: bytes, offset: int, length: int) -> None:
        """Send the reader a request (bitmap mode only)."""
        try:
            self._process.stdin.write(nbd_reader.FRAME.pack(kind, offset, length))
            self._process.stdin.flush()
        except BrokenPipeError:
            self._fail(f"the NBD reader of {self.path} stopped")

    def read_buffers(self, extent: Extent) -> Iterator[bytes]:
        """The bytes of ``extent``, in one buffer (bitmap mode only)."""
        self._ask(nbd_reader.READ, extent.offset, extent.size)
        kind, offset, length = self._frame()
        if (kind, offset, length) != (nbd_reader.DATA, extent.offset, extent.size):
            self._fail(f"the NBD reader of {self.path} answered a read of "
                       f"{extent.offset}+{extent.size} with {kind!r} {offset}+{length}",
                       reader_ended=False)
        data = self._process.stdout.read(length)
        if len(data) < length:
            self._fail(f"reading {self.path} stopped at byte {offset + len(data)}")
        yield data

    def pieces(self) -> Iterator[tuple[Extent, bytes | None]]:
        """The export in order: (zero extent, None), never read, or (data extent, bytes)."""
        if self.bitmap is not None:
            self._complete = False
            self._ask(nbd_reader.ALL, 0, self.size)
        stream, position = self._process.stdout, 0
        while True:
            frame = stream.read(nbd_reader.FRAME.size)
            if len(frame) < nbd_reader.FRAME.size:
                self._fail(f"reading {self.path} stopped at byte {position}")
            kind, offset, length = nbd_reader.FRAME.unpack(frame)
            if offset != position or length > max(self.size - position, 0):
                self._fail(f"the NBD reader of {self.path} sent a frame out of order "
                           f"at byte {offset}", reader_ended=False)
            if kind == nbd_reader.END:
                if position != self.size:
                    self._fail(f"reading {self.path} ended at byte {position}")
                self._complete = True
                return
            if kind == nbd_reader.ZEROS:
                yield Extent(offset, length, True), None
            else:
                data = stream.read(length)
                if len(data) < length:
                    self._fail(f"reading {self.path} stopped at byte {offset + len(data)}")
                yield Extent(offset, length, False), data
            position += length

    def recorded(self, snapshot_id: str) -> None:
        """The snapshot read from this source is recorded (a rotated bitmap moves on)."""
        if self._on_recorded is not None:
            self._on_recorded(snapshot_id)

    def check_unchanged(self) -> None:
        """An export is the server's view; what must hold is that it was read to its end
        (when read whole: a read by ranges fails at the range that fails)."""
        if not self._complete:
            raise NbdReadFailed(f"{self.path} was not read to its end")

    def _fail(self, what: str, reader_ended: bool = True):
        """Raise the reader's own one-line reason if it gave one, else ``what``."""
        process = self._process
        if not reader_ended:
            process.kill()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reason = process.stderr.read().decode(errors="replace").strip().splitlines()
        line = reason[-1] if reason else what
        if process.returncode in (nbd_reader.EXIT_CONNECT, nbd_reader.EXIT_NO_BITMAP):
            raise SourceError(line)
        if process.returncode == nbd_reader.EXIT_NO_BINDING:
            raise ToolMissing(line)
        raise NbdReadFailed(line)

    def close(self) -> None:
        if self._process.stdin is not None:
            try:
                self._process.stdin.close()  # the reader's end of requests: it ends
            except BrokenPipeError:
                pass
        stop_child(self._process)

    def __enter__(self) -> "NbdSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
