"""A full restore's writes. The chunks are written into the target by the pool thread that
verified them, a few at a time (read_plan.DELIVER_BYTES), while their bytes are still in
that core's cache; the caller follows in image order, writes the zero runs where they must
be written (a block device) and starts the disk write of what lies behind it in large
ranges. Gathering a window's chunks into long runs written by one thread instead made that
thread copy them into the page cache from memory, on one core, while the pool waited."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

from ..format.manifest import Span
from ..host.durable import write_all
from .writeback import start_writeback

ZERO_WRITE_BYTES = 1024 * 1024
RUN_BYTES = 16 * 1024 * 1024  # one pwritev writes at most this
RUN_BUFFERS = 512  # and at most this many buffers (IOV_MAX is 1024)
HOLE_BLOCK_BYTES = 4096  # blocks of zeros of this size, aligned in the file, left as holes
WRITEBACK_BYTES = 32 * 1024 * 1024  # the disk write is started behind every this much image
_ZEROS = memoryview(bytes(ZERO_WRITE_BYTES))
_ZERO_BLOCK = bytes(HOLE_BLOCK_BYTES)
Progress = Callable[[int], None]
Pieces = Iterator[tuple[Span, bytes | None]]


def zero_pieces(length: int) -> Iterator[memoryview]:
    """``length`` zeros, in pieces of at most ZERO_WRITE_BYTES."""
    for start in range(0, length, ZERO_WRITE_BYTES):
        yield _ZEROS[:min(ZERO_WRITE_BYTES, length - start)]


def without_zero_blocks(offset: int, data: bytes) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) runs of ``data`` (at ``offset`` in the file) without the blocks of
    HOLE_BLOCK_BYTES, aligned in the file, that hold only zeros: in a new sparse file they
    are holes already. A disk's free space is zeros inside data chunks too (a chunk that
    one written block turned from zeros to data), and a restore is bound by its writes."""
    view = memoryview(data)
    start = (-offset) % HOLE_BLOCK_BYTES  # where the first aligned block begins in data
    # The first byte of every aligned block, in one slice: only a block starting with a
    # zero is compared in full (most data has none).
    firsts = data[start::HOLE_BLOCK_BYTES]
    run_start = 0
    index = firsts.find(0)
    while index >= 0:
        block = start + index * HOLE_BLOCK_BYTES
        if block + HOLE_BLOCK_BYTES <= len(data) and data.startswith(_ZERO_BLOCK, block):
            if block > run_start:
                yield offset + run_start, view[run_start:block]
            run_start = block + HOLE_BLOCK_BYTES
        index = firsts.find(0, index + 1)
    if run_start < len(data):
        yield offset + run_start, view[run_start:]


class RunWriter:
    """Adjacent pieces gathered into one pwritev: large sequential writes, each sent on to
    the disk at once if ``writeback`` (see store/restore/writeback.py)."""

    def __init__(self, fd: int, writeback: bool = True):
        self.fd = fd
        self.writeback = writeback
        self.buffers: list = []
        self.start = self.end = 0
        self.written = 0

    def add(self, offset: int, data) -> None:
        if self.buffers and (offset != self.end or len(self.buffers) >= RUN_BUFFERS
                             or self.end - self.start >= RUN_BYTES):
            self.flush()
        if not self.buffers:
            self.start = self.end = offset
        self.buffers.append(data)
        self.end += len(data)

    def flush(self) -> None:
        if not self.buffers:
            return
        done = os.pwritev(self.fd, self.buffers, self.start)
        if done < self.end - self.start:  # a short write: the rest one by one
            write_all(self.fd, b"".join(self.buffers)[done:], self.start + done)
        if self.writeback:
            start_writeback(self.fd, self.start, self.end - self.start)
        self.written += self.end - self.start
        self.buffers = []


class ImageWrites:
    """The writes of a whole image into ``fd``: ``deliver`` (called on the pool with a few
    verified chunks at a time, in any order) writes them; ``follow`` consumes the pieces in
    image order. Zero runs, and zero blocks inside chunks (``without_zero_blocks``), are
    written only if ``write_zeros``. ``written`` counts the bytes written."""

    def __init__(self, fd: int, write_zeros: bool):
        self.fd = fd
        self.write_zeros = write_zeros
        self.written = 0
        self._count_lock = threading.Lock()

    def deliver(self, pieces: list[tuple[Span, bytes]]) -> None:
        """Write ``pieces``, neighbours in one pwritev (on a pool thread)."""
        writer = RunWriter(self.fd, writeback=False)  # started behind, in large ranges
        for span, data in pieces:
            if self.write_zeros:
                writer.add(span.offset, data)
            else:
                for offset, run in without_zero_blocks(span.offset, data):
                    writer.add(offset, run)
        writer.flush()
        with self._count_lock:
            self.written += writer.written

    def follow(self, pieces: Pieces, progress: Progress | None = None) -> None:
        """Consume ``pieces`` (read with ``deliver``): when a span comes back, it and every
        span before it are written."""
        started = 0  # the disk write is started for the image before this offset
        for span, _ in pieces:
            if span.digest is None and self.write_zeros:
                self._write_zeros(span)
            end = span.offset + span.length
            if end - started >= WRITEBACK_BYTES:
                start_writeback(self.fd, started, end - started)
                started = end
            if progress:
                progress(end)

    def _write_zeros(self, span: Span) -> None:
        offset = span.offset
        for zeros in zero_pieces(span.length):
            write_all(self.fd, zeros, offset)
            offset += len(zeros)
        with self._count_lock:
            self.written += span.length
