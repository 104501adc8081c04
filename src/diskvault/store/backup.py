"""The backup path: source -> chunker -> hasher -> index lookup -> compressor -> packs,
then manifest blocks, then (last, atomically) the snapshot record."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from datetime import datetime, timezone
from pathlib import Path

import blake3

from .chunker import Chunk, Chunker, Hint, hash_sequentially
from .chunks import ChunkWriter
from .config import ChunkerParams
from .index import ChunkIndex
from .manifest import ManifestBuilder
from .pipeline import prefetch
from .snapshots import BackupStats, SnapshotRecord
from .source import ImageSource

Progress = Callable[[int], None]


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> bytes:
    """Digest of ``length`` zero bytes: a chunk with this digest is a zero run."""
    return blake3.blake3(bytes(length)).digest()


def _complete_digests(chunks: list[Chunk]) -> list[bytes]:
    """Digests of a batch: those the chunker already verified, the rest hashed here."""
    return [digest or blake3.blake3(view).digest() for view, digest in chunks]


def parallel_hasher(pool: Executor):
    """Hash a batch on two threads at once (blake3 releases the GIL)."""
    def hash_many(views: list) -> list[bytes]:
        if len(views) < 8:
            return hash_sequentially(views)
        half = len(views) // 2
        other = pool.submit(hash_sequentially, views[half:])
        return hash_sequentially(views[:half]) + other.result()
    return hash_many


class _ImageRecorder:
    """Turns chunks into manifest entries and new chunks into stored ones.

    Hashing of one batch overlaps the chunking of the next: a batch is consumed
    only when the following one is submitted (or at a hole, or at the end).
    """

    def __init__(self, writer: ChunkWriter, index: ChunkIndex, pool: Executor,
                 stats: BackupStats):
        self.writer = writer
        self.index = index
        self.pool = pool
        self.stats = stats
        self.manifest = ManifestBuilder(self._store_block)
        self._batch: tuple[list, Future] | None = None

    def add_chunks(self, chunks: list[Chunk]) -> None:
        batch = (chunks, self.pool.submit(_complete_digests, chunks)) if chunks else None
        self.drain()
        self._batch = batch

    def add_zeros(self, length: int) -> None:
        self.drain()
        self.stats.zero_bytes += length
        self.manifest.add_zeros(length)

    def drain(self) -> None:
        if self._batch is None:
            return
        chunks, future = self._batch
        self._batch = None
        digests = future.result()
        self.writer.settle()
        txn = self.index.read_txn()
        new: list[tuple[bytes, bytes]] = []
        new_digests: set[bytes] = set()  # a chunk repeated within the batch is stored once
        try:
            for (chunk, _), digest in zip(chunks, digests):
                length = len(chunk)
                # The cheap byte test first: zero_digest costs a hash of its own.
                if chunk[0] == 0 and chunk[-1] == 0 and digest == zero_digest(length):
                    self.stats.zero_bytes += length
                    self.manifest.add_zeros(length)
                    continue
                self.stats.chunks += 1
                self.manifest.add_data(digest, length)
                if digest not in new_digests and not self.writer.is_stored(digest, txn):
                    new_digests.add(digest)
                    new.append((digest, chunk))  # a view: its buffer lives until compressed
        finally:
            txn.abort()
        self.writer.put(new)

    def _store_block(self, encoded: bytes) -> bytes:
        digest = blake3.blake3(encoded).digest()
        self.stats.manifest_blocks += 1
        self.writer.settle()
        txn = self.index.read_txn()
        try:
            if not self.writer.is_stored(digest, txn):
                self.stats.new_manifest_blocks += 1
                self.writer.put([(digest, encoded)])
        finally:
            txn.abort()
        return digest


def record_image(source: ImageSource, chunker_params: ChunkerParams, writer: ChunkWriter,
                 index: ChunkIndex, pool: Executor, stats: BackupStats,
                 hints: Iterable[Hint] = (), progress: Progress | None = None
                 ) -> ManifestBuilder:
    """Read the whole source into chunks and manifest blocks; returns the finished manifest.

    Holes end the current chunk (they are known zeros and are never read). ``hints`` are
    the previous snapshot's chunks, which make unchanged regions cost a hash, not a cut.
    """
    chunker = Chunker(chunker_params, hints, parallel_hasher(pool))
    recorder = _ImageRecorder(writer, index, pool, stats)
    for extent, buffer in prefetch(source.pieces()):
        if buffer is None:
            recorder.add_chunks(chunker.finish())
            chunker.skip(extent.size)
            recorder.add_zeros(extent.size)
        else:
            stats.bytes_read += len(buffer)
            recorder.add_chunks(chunker.feed(buffer))
        if progress:
            progress(extent.offset + extent.size)
    recorder.add_chunks(chunker.finish())
    recorder.drain()
    recorder.manifest.finish()
    return recorder.manifest


def make_record(source: ImageSource, manifest: ManifestBuilder, name: str, tags: list[str],
                stats: BackupStats, started: float) -> SnapshotRecord:
    stats.duration_s = round(time.monotonic() - started, 3)
    return SnapshotRecord(
        id=SnapshotRecord.new_id(), name=name, time=datetime.now(timezone.utc),
        source=str(Path(source.path).absolute()), size=manifest.size,
        host=socket.gethostname(), tags=list(tags), stats=stats, blocks=manifest.blocks)
