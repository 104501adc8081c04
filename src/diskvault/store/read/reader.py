"""Random-access image reader: offset -> manifest block (binary search) -> chunk -> bytes.

Bounded LRU caches of decoded manifest blocks and of verified chunks; zero runs are
answered without I/O; chunks are read in pack order, neighbouring records of a pack as one
range request: the chunks of one large read in a few ranges fetched in parallel, and large
sequential reads trigger read-ahead of the next chunks, on a thread pool. Several sequential
streams are followed at once (an NBD client's connections, a guest booting beside a block job
copying its disk). Thread-safe, for the FUSE mount, the NBD export and the filesystem browser.
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
from ..format.manifest import placed_entries
from ..format.snapshots import SnapshotRecord
from .chunk_reader import ChunkReader
from .image_map import damage_context
from .pack_ranges import PackRange, coalesce, read_blocks, read_range
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
# Sequential streams followed at once; the least recently read is forgotten first.
MAX_STREAMS = 8
# One read-ahead range request reads at most this: larger ones would decompress serially in
# one pool task while the other workers idle.
READAHEAD_RANGE_MAX_BYTES = 1024 * 1024
# A large read's own chunks are fetched in ranges of at most this, on the pool: a few per read,
# so that they decompress in parallel, and one index lookup and one task per range, not per chunk.
READ_RANGE_MAX_BYTES = 128 * 1024


@dataclass
class _Stream:
    """One sequential reader: where its last read ended and how far ahead it is read."""
    end: int
    ahead_until: int
    ahead_bytes: int


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
        self._block_starts = record.blocks.offsets  # an array: bisected without a list
        self._block_ends = record.blocks.ends(record.size)
        # Futures, so that concurrent readers of one block or chunk share one fetch.
        self._blocks: LRU[int, Future] = LRU(block_cache_blocks)
        self._chunks: LRU[bytes, Future] = LRU(chunk_cache_bytes)  # weighed in raw bytes
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []  # the most recently read last
        self._ahead_max = readahead_max_bytes  # 0: never fetch past what was asked for

    # -- manifest blocks ---------------------------------------------------------------
    def load_manifest(self) -> None:
        """Read the manifest's blocks now, as many as the block cache holds, in a few pack
        range requests: a random read then costs one chunk read, not one more for its block
        (the NBD export does this before it serves). A damaged block is left to the read
        that needs it, which names the offset."""
        count = min(len(self.record.blocks), self._blocks.capacity)
        found = read_blocks(self.chunks, self.record.blocks[:count])
        for index, ref in enumerate(self.record.blocks[:count]):
            data = found[ref.digest]
            if isinstance(data, bytes):
                with contextlib.suppress(CorruptData):
                    future = Future()
                    future.set_result(self._parse_block(index, data))
                    with self._lock:
                        self._blocks.put(index, future)

    def _load_block(self, index: int) -> _Block:
        ref = self.record.blocks[index]
        try:
            return self._parse_block(index, self.chunks.get(ref.digest))
        except CorruptData as error:
            raise damage_context(self.record, ref.offset, error) from None

    def _parse_block(self, index: int, data: bytes) -> _Block:
        """The entries of block ``index`` from its verified bytes; CorruptData if they do not
        fill the range the record gives the block."""
        ref = self.record.blocks[index]
        entries = placed_entries(data, ref.offset, self._block_ends[index])
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

    def _chunk_future(self, digest: bytes, length: int) -> Future:
        with self._lock:
            cached = self._chunks.get(digest)
            if cached is not None:
                return cached
            future = Future()
            self._chunks.put(digest, future, length)
        try:
            future.set_result(self.chunks.get(digest))
        except BaseException as error:
            future.set_exception(error)
        return future

    def _chunk(self, digest: bytes, length: int) -> bytes:
        future = self._chunk_future(digest, length)
        try:
            return future.result()
        except BaseException:
            with self._lock:
                if self._chunks.get(digest) is future:  # not a later fetch's: drop the failure
                    self._chunks.pop(digest)
            raise

    def _follow(self, offset: int, end: int) -> _Stream | None:
        """The stream a large read continues (its read-ahead now grown), or None: the read
        starts a stream of its own, read ahead once it goes on."""
        with self._lock:
            for stream in self._streams:
                if abs(offset - stream.end) <= SEQUENTIAL_SLACK_BYTES:
                    self._streams.remove(stream)
                    self._streams.append(stream)
                    stream.end = max(stream.end, end)  # requests in flight arrive out of order
                    stream.ahead_bytes = min(2 * stream.ahead_bytes, self._ahead_max)
                    return stream
            self._streams.append(_Stream(end, end, min(READAHEAD_MIN_BYTES, self._ahead_max)))
            del self._streams[:-MAX_STREAMS]
            return None

    def _read_ahead(self, stream: _Stream, end: int) -> None:
        """Keep the chunks of the stream's next ``ahead_bytes`` queued; each call queues only
        those past the last call's frontier, so a stream of small reads costs little each."""
        with self._lock:
            stop = min(end + stream.ahead_bytes, self.size)
            start = stream.ahead_until if end <= stream.ahead_until <= stop else end
            stream.ahead_until = stop
        self._queue_ranges(start, stop, READAHEAD_RANGE_MAX_BYTES)

    def _queue_ranges(self, start: int, stop: int, max_bytes: int) -> None:
        """Start fetching, on the pool, the chunks that begin in [start, stop), as ranges of
        at most ``max_bytes``."""
        for pack_range, futures in self._claim_ranges(start, stop, max_bytes):
            with contextlib.suppress(CorruptData):  # a missing pack: its read says so
                self.chunks.packs.advise_will_need(pack_range.pack_id, pack_range.offset,
                                                   pack_range.length)  # the kernel starts now
            self.pool.submit(self._fetch_range, pack_range, futures)

    def _claim_ranges(self, start: int, stop: int,
                      max_bytes: int) -> list[tuple[PackRange, dict]]:
        """The chunks that begin in [start, stop) and nobody fetches yet, each given a
        future, grouped into pack ranges; the caller settles the futures with
        ``_fetch_range``."""
        locations = {}
        for digest in self._uncached(start, stop):
            try:
                locations[digest] = self.chunks.locate(digest)
            except CorruptData:
                continue  # the read itself reports it, naming the offset
        claimed = []
        for pack_range in coalesce(locations, self.chunks.packs.backend.read_gap_bytes,
                                   max_bytes):
            futures = {}
            with self._lock:
                for digest, location in pack_range.records:
                    if digest not in self._chunks:
                        futures[digest] = Future()
                        self._chunks.put(digest, futures[digest], location.raw_size)
            if futures:
                claimed.append((pack_range, futures))
        return claimed

    def _fetch_range(self, pack_range: PackRange, futures: dict[bytes, Future]) -> None:
        """Read one range and settle the futures of the chunks claimed in it."""
        try:
            found = read_range(self.chunks, pack_range)
        except BaseException as error:  # the whole range failed (a missing pack)
            found = dict.fromkeys(futures, error)
        for digest, future in futures.items():
            outcome = found[digest]
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _entry_start(self, offset: int) -> int:
        """Where the manifest entry holding ``offset`` begins."""
        block = self._block(self.record.blocks.find(offset))
        return block.starts[bisect.bisect_right(block.starts, offset) - 1]

    def _uncached(self, start: int, stop: int) -> Iterator[bytes]:
        """The digests of the data chunks that begin in [start, stop), not cached."""
        block_index = self.record.blocks.find(start)
        while block_index < len(self._block_starts) and self._block_starts[block_index] < stop:
            block = self._block(block_index)
            entry_index = bisect.bisect_left(block.starts, start)  # first chunk from start on
            while entry_index < len(block.starts) and block.starts[entry_index] < stop:
                digest = block.digests[entry_index]
                if digest is not None and not self._is_cached(digest):
                    yield digest
                entry_index += 1
            block_index += 1

    # -- reads -------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length), cut at the end of the image."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        stream = None
        if end - offset >= READAHEAD_MIN_READ_BYTES:
            stream = self._follow(offset, end)
            # this read's own chunks (but the first, read here), decompressing in parallel
            self._queue_ranges(offset + 1, end, READ_RANGE_MAX_BYTES)
        else:  # a small read: the chunks it spans (usually one, at times two) in one request
            for pack_range, futures in self._claim_ranges(self._entry_start(offset), end,
                                                          READ_RANGE_MAX_BYTES):
                self._fetch_range(pack_range, futures)
        parts = []
        position = offset
        block_index = self.record.blocks.find(position)
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
        if stream is not None and stream.ahead_bytes:
            self._read_ahead(stream, end)
        return b"".join(parts)

    # -- where the data is: from the manifest, reading no chunk --------------------------
    def _entries(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, holds data) of the manifest entries that overlap [start, end)."""
        block_index = self.record.blocks.find(start)
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
