"""Chunk storage: compress and pack new chunks (writer), fetch and verify them (reader).

The only code that turns a digest into stored bytes and back. Pack data is made
durable before the index commits entries that point at it.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import blake3
import zstandard

from .config import Compression
from ..errors import CorruptData, DiskvaultError, MissingChunk
from .index import ChunkIndex, ChunkLocation
from .packs import FLAG_ZSTD, PackStore, PackWriter
from .snapshots import BackupStats


class Codec:
    """zstd with one compressor/decompressor per thread (they are not thread-safe)."""

    def __init__(self, compression: Compression):
        self._level = compression.level
        self._enabled = compression.codec == "zstd"
        self._local = threading.local()

    def compress(self, raw) -> tuple[bytes, int]:
        """Stored bytes and flags; raw bytes are kept when compression does not save space."""
        if self._enabled:
            compressor = getattr(self._local, "compressor", None)
            if compressor is None:
                compressor = self._local.compressor = zstandard.ZstdCompressor(level=self._level)
            packed = compressor.compress(raw)
            if len(packed) < len(raw):
                return packed, FLAG_ZSTD
        return bytes(raw), 0

    def decompress(self, stored: bytes, location: ChunkLocation) -> bytes:
        if not location.flags & FLAG_ZSTD:
            return stored
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        return decompressor.decompress(stored, max_output_size=location.raw_size)


class ChunkReader:
    """digest -> verified raw bytes. Thread-safe."""

    def __init__(self, backend: PackStore, index: ChunkIndex, codec: Codec):
        self.backend = backend
        self.index = index
        self.codec = codec

    def locate(self, digest: bytes) -> ChunkLocation:
        location = self.index.lookup(digest)
        if location is None:
            raise MissingChunk(f"chunk {digest.hex()[:16]} is not in the index (run "
                               f"'diskvault check': if a pack holds it, or the index is "
                               f"damaged, 'diskvault check --repair' indexes it again)")
        return location

    def announce(self, digest: bytes) -> ChunkLocation:
        """Locate a chunk that will be read soon and let the kernel start fetching it
        (an asynchronous read-ahead: cold restores and mounts wait less on the disk)."""
        location = self.locate(digest)
        self.backend.advise_will_need(location.pack_id, location.offset, location.stored_size)
        return location

    def get(self, digest: bytes, location: ChunkLocation | None = None) -> bytes:
        """The verified raw bytes of a chunk (``location`` if already known)."""
        location = location or self.locate(digest)
        stored = self.backend.read(location.pack_id, location.offset, location.stored_size)
        if len(stored) != location.stored_size:
            raise CorruptData(f"chunk {digest.hex()[:16]} is cut short in pack "
                              f"{location.pack_id}")
        try:
            raw = self.codec.decompress(stored, location)
        except zstandard.ZstdError:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} does not "
                              f"decompress") from None
        if len(raw) != location.raw_size or blake3.blake3(raw).digest() != digest:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} does not "
                              f"match its digest")
        return raw


MAX_PACKS_SYNCING = 2


class ChunkWriter:
    """Stores new chunks. Compression runs on ``pool``; one writer thread appends the
    records to packs in submission order, makes each full pack durable, then commits its
    entries to the index -- so the caller's thread never waits on disk writes or fsync."""

    def __init__(self, backend: PackStore, index: ChunkIndex, codec: Codec,
                 pack_target_bytes: int, pool: Executor, stats: BackupStats,
                 max_batches_in_flight: int = 4):
        self.backend = backend
        self.index = index
        self.codec = codec
        self.pack_target_bytes = pack_target_bytes
        self.pool = pool
        self.stats = stats
        self._records: queue.Queue = queue.Queue(maxsize=max_batches_in_flight)
        self._committed: queue.SimpleQueue = queue.SimpleQueue()
        self._uncommitted: set[bytes] = set()  # submitted, not yet seen committed
        self._pack: PackWriter | None = None
        self._error: BaseException | None = None
        # Full packs are made durable on a thread of their own, so the next pack fills
        # while the last one is fsynced (the disk and the compressors work at once).
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack-sync")
        self._syncing: deque[Future] = deque()
        self._thread = threading.Thread(target=self._write_loop, name="pack-writer", daemon=True)
        self._thread.start()

    def is_stored(self, digest: bytes, txn) -> bool:
        """True if the chunk is in the index (as of ``txn``) or on its way into a pack.

        Digests leave the in-flight set only in ``settle``, which the caller runs before it
        opens a new read transaction, so no chunk is ever missed between the two.
        """
        return digest in self._uncommitted or self.index.contains(txn, digest)

    def settle(self) -> None:
        """Forget in-flight digests whose packs are committed; raise a writer failure."""
        while True:
            try:
                self._uncommitted.difference_update(self._committed.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise self._error

    def put(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Store (digest, raw bytes) pairs: compressed together in one pool task, since a
        task per chunk costs more in hand-offs than small chunks take to compress."""
        if self._error is not None:
            raise self._error
        if not chunks:
            return
        self._uncommitted.update(digest for digest, _ in chunks)
        future = self.pool.submit(self._compress_all, [raw for _, raw in chunks])
        self._records.put(([digest for digest, _ in chunks], [len(raw) for _, raw in chunks],
                           future))

    def _compress_all(self, raws: list[bytes]) -> list[tuple[bytes, int]]:
        return [self.codec.compress(raw) for raw in raws]

    def _write_loop(self) -> None:
        """Batches and flush requests in order; after a failure, the rest is skipped."""
        while True:
            item = self._records.get()
            if item is None:
                return
            is_flush = isinstance(item, Future)
            if self._error is None:
                try:
                    self._finish_all() if is_flush else self._write_batch(*item)
                except BaseException as error:
                    self._error = error
            elif not is_flush:
                item[2].cancel()
            if is_flush:
                item.set_result(None)

    def _write_batch(self, digests: list[bytes], raw_sizes: list[int], future: Future) -> None:
        for digest, raw_size, (stored, flags) in zip(digests, raw_sizes, future.result()):
            if self._pack is None:
                self._pack = PackWriter(self.backend, secrets.token_hex(16))
            self._pack.add(digest, stored, raw_size, flags)
            self.stats.new_chunks += 1
            self.stats.new_bytes += raw_size
            self.stats.stored_bytes += len(stored)
            if self._pack.size >= self.pack_target_bytes:
                self._finish_pack()

    def _finish_pack(self) -> None:
        if self._pack is None:
            return
        pack, self._pack = self._pack, None
        self._syncing.append(self._syncer.submit(self._make_durable, pack))
        while len(self._syncing) > MAX_PACKS_SYNCING:
            self._syncing.popleft().result()

    def _make_durable(self, pack: PackWriter) -> None:
        try:
            entries = pack.finish()  # fsync + rename + fsync dir: durable from here on
        except BaseException:
            pack.abort()
            raise
        self.index.add_pack(pack.pack_id, entries, pack.size)
        self._committed.put([e.digest for e in entries])

    def _finish_all(self) -> None:
        self._finish_pack()
        while self._syncing:
            self._syncing.popleft().result()

    def flush(self) -> None:
        """Write everything submitted and commit it: after this, all of it is durable."""
        done: Future = Future()
        self._records.put(done)
        done.result()
        self.settle()

    def close(self) -> None:
        """Stop the writer thread; a pack left open (after a failure) is dropped."""
        if self._thread.is_alive():
            self._records.put(None)
            self._thread.join()
        self._syncer.shutdown(wait=True)  # a pack being synced still lands: it is whole
        if self._pack is not None:
            self._pack.abort()
            self._pack = None

    def abort(self) -> None:
        """Drop what is not yet durable; committed packs stay (a rerun reuses them)."""
        if self._error is None:
            self._error = DiskvaultError("backup abandoned")
        self.close()
