"""Chunks read through windows of their packs, for random readers (the mount, ls, pull,
an NBD export): a record is fetched with the aligned window of the pack around it, and
its neighbours -- written beside it because they sat beside it in the image -- are then
answered from that window without another request. Where a request costs a round trip
(an object store), a filesystem's small scattered reads of its metadata thus cost one
request per window instead of one per chunk. The most recently used windows are kept, up
to a byte budget; readers of one window at once share its one fetch."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from ...errors import CorruptData, MissingChunk
from ...lru import LRU
from .chunk_reader import ChunkReader

DEFAULT_WINDOW_CACHE_BYTES = 32 * 1024 * 1024


class PackWindows:
    """digest -> verified raw bytes, like ChunkReader.get, reading ``window_bytes``-aligned
    windows of packs (``window_bytes`` 0: each record alone, through the ChunkReader).
    Thread-safe."""

    def __init__(self, chunks: ChunkReader, window_bytes: int,
                 cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES):
        self.chunks = chunks
        self.window_bytes = window_bytes
        self._windows: LRU[tuple[str, int], Future] = LRU(cache_bytes)  # weighed in bytes
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bytes:
        if not self.window_bytes:
            return self.chunks.get(digest)
        location = self.chunks.locate(digest)
        first = location.offset // self.window_bytes
        last = (location.offset + location.stored_size - 1) // self.window_bytes
        try:
            windows = [self._window(location.pack_id, number) for number in
                       range(first, last + 1)]
        except MissingChunk:  # compacted away since the index was read: caught up, read anew
            return self.chunks.get(digest)
        start = location.offset - first * self.window_bytes
        stored = windows[0] if len(windows) == 1 else b"".join(windows)
        try:
            return self.chunks.verified(digest, location, memoryview(stored)[
                start:start + location.stored_size])
        except CorruptData:
            with self._lock:  # bytes that failed are not kept: a later read fetches anew
                for number in range(first, last + 1):
                    self._windows.pop((location.pack_id, number))
            raise

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
                future.set_result(self.chunks.packs.read(pack_id, number * self.window_bytes,
                                                         self.window_bytes))
            except BaseException as error:
                future.set_exception(error)
                with self._lock:
                    if self._windows.get(key) is future:  # a failure is not kept
                        self._windows.pop(key)
        return future.result()
