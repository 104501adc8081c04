"""Packs read in windows, for random readers (the mount, ls, pull, an NBD export): a small
read of a pack (a record, or a few neighbours) fetches the aligned window of the pack
around it, and the records beside it -- written there because they sat beside it in the
image -- are then answered from that window without another request. Where a request costs
a round trip (an object store), a filesystem's small scattered reads of its metadata thus
cost one request per window instead of one per chunk. The most recently used windows are
kept, up to a byte budget; readers of one window at once share its one fetch. A read
longer than a window (a stream's read-ahead) goes to the pack directly and is not kept."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from ...errors import CorruptData, MissingChunk
from ...lru import LRU
from ..format.packs import PackStore
from ..index.records import ChunkLocation
from .chunk_reader import ChunkReader

DEFAULT_WINDOW_CACHE_BYTES = 32 * 1024 * 1024


class PackWindows:
    """PackStore's reads (``read``, ``advise_will_need``, ``backend``) through a cache of
    ``window_bytes``-aligned windows. Thread-safe."""

    def __init__(self, packs: PackStore, window_bytes: int,
                 cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES):
        self.packs = packs
        self.backend = packs.backend
        self.window_bytes = window_bytes
        self._windows: LRU[tuple[str, int], Future] = LRU(cache_bytes)  # weighed in bytes
        self._lock = threading.Lock()

    def read(self, pack_id: str, offset: int, length: int) -> bytes:
        numbers = self._numbers(offset, length)
        if len(numbers) > 2:  # a stream's range: read as it is, not kept
            return self.packs.read(pack_id, offset, length)
        windows = [self._window(pack_id, number) for number in numbers]
        start = offset - numbers[0] * self.window_bytes
        joined = windows[0] if len(windows) == 1 else b"".join(windows)
        return memoryview(joined)[start:start + length]

    def advise_will_need(self, pack_id: str, offset: int, length: int) -> None:
        self.packs.advise_will_need(pack_id, offset, length)

    def forget(self, pack_id: str, offset: int, length: int) -> None:
        """Drop the windows holding [offset, offset + length): their bytes failed."""
        with self._lock:
            for number in self._numbers(offset, length):
                self._windows.pop((pack_id, number))

    def _numbers(self, offset: int, length: int) -> range:
        return range(offset // self.window_bytes,
                     (offset + max(length, 1) - 1) // self.window_bytes + 1)

    def _window(self, pack_id: str, number: int) -> bytes:
        key = (pack_id, number)
        with self._lock:
            future = self._windows.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._windows.put(key, future, self.window_bytes)
        if owner:
            try:
                future.set_result(self.packs.read(pack_id, number * self.window_bytes,
                                                  self.window_bytes))
            except BaseException as error:
                future.set_exception(error)
                with self._lock:
                    if self._windows.get(key) is future:  # a failure is not kept
                        self._windows.pop(key)
        return future.result()


class WindowedChunks:
    """A ChunkReader's reads with its pack reads through PackWindows: what the image reader
    and pack_ranges.read_range use (``packs``, ``locate``, ``announce``, ``get``,
    ``verified``). Locating, verifying and catching the index up stay the ChunkReader's,
    so an index it is given later serves here too."""

    def __init__(self, chunks: ChunkReader, window_bytes: int,
                 cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES):
        self.chunks = chunks
        self.packs = PackWindows(chunks.packs, window_bytes, cache_bytes)

    def locate(self, digest: bytes) -> ChunkLocation:
        return self.chunks.locate(digest)

    def announce(self, digest: bytes) -> ChunkLocation:
        return self.chunks.announce(digest)

    def get(self, digest: bytes, location: ChunkLocation | None = None) -> bytes:
        location = location or self.locate(digest)
        try:
            stored = self.packs.read(location.pack_id, location.offset, location.stored_size)
        except MissingChunk:  # compacted away since the index was read: caught up, read anew
            return self.chunks.get(digest)
        return self.verified(digest, location, stored)

    def verified(self, digest: bytes, location: ChunkLocation, stored) -> bytes:
        try:
            return self.chunks.verified(digest, location, stored)
        except CorruptData:  # bytes that failed are not kept: a later read fetches anew
            self.packs.forget(location.pack_id, location.offset, location.stored_size)
            raise


def windowed(chunks: ChunkReader, window_bytes: int) -> ChunkReader | WindowedChunks:
    """``chunks`` reading through windows of ``window_bytes`` (the backend's
    ``read_window_bytes``), or ``chunks`` itself where that is 0."""
    return WindowedChunks(chunks, window_bytes) if window_bytes else chunks
