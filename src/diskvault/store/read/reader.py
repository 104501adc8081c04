"""Random-access image reader: offset -> manifest block (binary search) -> chunk -> bytes.

Bounded LRU caches of decoded manifest blocks and of verified chunks; zero runs are
answered without I/O; the chunks of one large read are fetched in parallel, and large
sequential reads trigger read-ahead of the next chunks, on a thread pool. Thread-safe, for
the FUSE mount and the filesystem browser.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from ...errors import CorruptData
from ...image.fileview import PositionedFile
from ...lru import LRU
from ..format.manifest import block_ends, placed_entries
from ..format.snapshots import SnapshotRecord
from .chunk_reader import ChunkReader
from .image_map import damage_context
from .pack_windows import windowed

DEFAULT_CHUNK_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_BLOCK_CACHE_BLOCKS = 256
# Read-ahead starts small and doubles with each sequential read: a scan soon has 4 MiB
# decompressing ahead of it, while scattered reads (a filesystem's metadata) waste little.
READAHEAD_MIN_BYTES = 256 * 1024
READAHEAD_MAX_BYTES = 4 * 1024 * 1024
# A read this close to the last one's end still counts as sequential: the kernel sends a
# FUSE mount its read-ahead as several requests at once, and they arrive out of order.
SEQUENTIAL_SLACK_BYTES = 1024 * 1024
# Reads smaller than this neither start nor stop read-ahead: they are a parser's metadata
# (4 KiB inode and directory blocks, often close together), for which read-ahead fetched
# ten times the bytes needed. Streams (pull's 1 MiB pieces, the kernel's 128 KiB) are larger.
READAHEAD_MIN_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Block:
    starts: list[int]               # absolute offset of each entry
    lengths: list[int]
    digests: list[bytes | None]


class ImageReader:
    """Read any byte range of one snapshot's image; every chunk verified on first load."""

    def __init__(self, chunks: ChunkReader, record: SnapshotRecord, pool: Executor,
                 chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
                 block_cache_blocks: int = DEFAULT_BLOCK_CACHE_BLOCKS,
                 readahead_max_bytes: int = READAHEAD_MAX_BYTES):
        # Where a request costs a round trip, chunks and manifest blocks come through
        # windows of their packs: a filesystem's scattered small reads then share requests.
        self.chunks = windowed(chunks, chunks.packs.backend.read_window_bytes)
        self.record = record
        self.size = record.size
        self.pool = pool
        self._block_starts = [b.offset for b in record.blocks]
        self._block_ends = block_ends(record.blocks, record.size)
        # Futures, so that concurrent readers of one block or chunk share one fetch.
        self._blocks: LRU[int, Future] = LRU(block_cache_blocks)
        self._chunks: LRU[bytes, Future] = LRU(chunk_cache_bytes)  # weighed in raw bytes
        self._lock = threading.Lock()
        self._last_end = -1
        self._ahead_until = 0  # read-ahead is queued up to here
        self._ahead_max = readahead_max_bytes  # 0: never fetch past what was asked for
        self._ahead_bytes = min(READAHEAD_MIN_BYTES, readahead_max_bytes)

    # -- manifest blocks ---------------------------------------------------------------
    def _load_block(self, index: int) -> _Block:
        ref = self.record.blocks[index]
        try:
            entries = placed_entries(self.chunks.get(ref.digest), ref.offset,
                                     self._block_ends[index])
        except CorruptData as error:
            raise damage_context(self.record, ref.offset, error) from None
        starts, lengths, digests, offset = [], [], [], ref.offset
        for entry in entries:
            starts.append(offset)
            lengths.append(entry.length)
            digests.append(entry.digest)
            offset += entry.length
        return _Block(starts, lengths, digests)

    def _block(self, index: int) -> _Block:
        with self._lock:
            future = self._blocks.get(index)
            owner = future is None
            if owner:
                future = Future()
                self._blocks.put(index, future)
        if owner:
            try:
                future.set_result(self._load_block(index))
            except BaseException as error:
                future.set_exception(error)
                with self._lock:
                    self._blocks.pop(index)
        return future.result()

    # -- chunks ------------------------------------------------------------------------
    def _is_cached(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._chunks

    def fetches_running(self) -> int:
        """How many chunk fetches (reads and read-ahead) have not finished yet."""
        with self._lock:
            return sum(not future.done() for future in self._chunks.values())

    def _chunk_future(self, digest: bytes, length: int, in_pool: bool) -> Future:
        with self._lock:
            cached = self._chunks.get(digest)
            if cached is not None:
                return cached
            if in_pool:
                future = self.pool.submit(self.chunks.get, digest)
            else:
                future = Future()
            self._chunks.put(digest, future, length)
        if not in_pool:
            try:
                future.set_result(self.chunks.get(digest))
            except BaseException as error:
                future.set_exception(error)
        return future

    def _chunk(self, digest: bytes, length: int) -> bytes:
        future = self._chunk_future(digest, length, in_pool=False)
        try:
            return future.result()
        except BaseException:
            with self._lock:
                if self._chunks.get(digest) is future:  # not a later fetch's: drop the failure
                    self._chunks.pop(digest)
            raise

    def _read_ahead(self, end: int) -> None:
        """Keep the chunks of the next ``_ahead_bytes`` queued; each call queues only those
        past the last call's frontier, so a stream of small reads costs little each."""
        stop = min(end + self._ahead_bytes, self.size)
        start = self._ahead_until if end <= self._ahead_until <= stop else end
        self._ahead_until = stop
        self._queue_chunks(start, stop)

    def _queue_chunks(self, start: int, stop: int) -> None:
        """Start fetching, on the pool, the chunks that begin in [start, stop)."""
        block_index = bisect.bisect_right(self._block_starts, start) - 1
        while block_index < len(self._block_starts) and self._block_starts[block_index] < stop:
            block = self._block(block_index)
            entry_index = bisect.bisect_left(block.starts, start)  # first chunk from start on
            while entry_index < len(block.starts) and block.starts[entry_index] < stop:
                digest = block.digests[entry_index]
                if digest is not None and not self._is_cached(digest):
                    with contextlib.suppress(CorruptData):  # the read itself reports it
                        self.chunks.announce(digest)  # the kernel starts reading it now
                    self._chunk_future(digest, block.lengths[entry_index], in_pool=True)
                entry_index += 1
            block_index += 1

    # -- reads -------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length), cut at the end of the image."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        streaming = end - offset >= READAHEAD_MIN_READ_BYTES
        sequential = streaming and abs(offset - self._last_end) <= SEQUENTIAL_SLACK_BYTES
        if streaming:
            self._last_end = end
            self._ahead_bytes = min(2 * self._ahead_bytes if sequential else READAHEAD_MIN_BYTES,
                                    self._ahead_max)
            self._queue_chunks(offset + 1, end)  # this read's own chunks decompress in parallel
        parts = []
        position = offset
        block_index = bisect.bisect_right(self._block_starts, position) - 1
        while position < end:
            block = self._block(block_index)
            entry_index = bisect.bisect_right(block.starts, position) - 1
            while entry_index < len(block.starts) and position < end:
                start, span = block.starts[entry_index], block.lengths[entry_index]
                take = min(start + span, end) - position
                digest = block.digests[entry_index]
                if digest is None:
                    parts.append(bytes(take))
                else:
                    try:
                        data = self._chunk(digest, span)
                    except CorruptData as error:
                        raise damage_context(self.record, start, error) from None
                    parts.append(data[position - start: position - start + take])
                position += take
                entry_index += 1
            if position < end:
                block_index += 1
        if sequential and self._ahead_bytes:
            self._read_ahead(end)
        return b"".join(parts)

    # -- where the data is: from the manifest, reading no chunk --------------------------
    def _entries(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, holds data) of the manifest entries that overlap [start, end)."""
        block_index = bisect.bisect_right(self._block_starts, start) - 1
        while block_index < len(self._block_starts) and self._block_starts[block_index] < end:
            block = self._block(block_index)
            entry_index = max(bisect.bisect_right(block.starts, start) - 1, 0)
            for index in range(entry_index, len(block.starts)):
                if block.starts[index] >= end:
                    return
                yield block.starts[index], block.lengths[index], block.digests[index] is not None
            block_index += 1

    def seek_data(self, offset: int, end: int) -> int:
        """Like SEEK_DATA within [offset, end): the first offset that is not in a zero run;
        ``end`` if only zeros follow."""
        for start, _, data in self._entries(offset, end):
            if data:
                return max(start, offset)
        return end

    def seek_hole(self, offset: int, end: int) -> int:
        """Like SEEK_HOLE within [offset, end): the first offset in a zero run, or ``end``."""
        for start, _, data in self._entries(offset, end):
            if not data:
                return max(start, offset)
        return end

    def data_bytes(self, start: int, end: int) -> int:
        """How many bytes of [start, end) are in data chunks, not zero runs (st_blocks)."""
        return sum(min(offset + length, end) - max(offset, start)
                   for offset, length, data in self._entries(start, end) if data)

    def open(self) -> "ImageFile":
        return ImageFile(self)


class ImageFile(PositionedFile):
    """A seekable, read-only file object over an ImageReader (for partition and
    filesystem parsers)."""

    def __init__(self, reader: ImageReader):
        super().__init__(reader.size)
        self.reader = reader

    def pread(self, offset: int, length: int) -> bytes:
        """A read that leaves the position alone: the partition views and filesystems sharing
        this file then need no lock around seek + read (see volumes.read_at)."""
        return self.reader.read(offset, length)
