"""The backup path: source -> chunker -> hasher -> index lookup -> compressor -> packs,
then manifest blocks, then (last, atomically) the snapshot record."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import datetime, timezone
from pathlib import Path

import blake3

from .chunker import StreamChunker
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


def _hash_all(chunks: list) -> list[bytes]:
    return [blake3.blake3(chunk).digest() for chunk in chunks]


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

    def add_chunks(self, chunks: list) -> None:
        batch = (chunks, self.pool.submit(_hash_all, chunks)) if chunks else None
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
        try:
            for chunk, digest in zip(chunks, digests):
                length = len(chunk)
                # The cheap byte test first: zero_digest costs a hash of its own.
                if chunk[0] == 0 and chunk[-1] == 0 and digest == zero_digest(length):
                    self.stats.zero_bytes += length
                    self.manifest.add_zeros(length)
                    continue
                self.stats.chunks += 1
                self.manifest.add_data(digest, length)
                if not self.writer.is_stored(digest, txn):
                    self.writer.put(digest, bytes(chunk))
        finally:
            txn.abort()

    def _store_block(self, encoded: bytes) -> bytes:
        digest = blake3.blake3(encoded).digest()
        self.stats.manifest_blocks += 1
        self.writer.settle()
        txn = self.index.read_txn()
        try:
            if not self.writer.is_stored(digest, txn):
                self.stats.new_manifest_blocks += 1
                self.writer.put(digest, encoded)
        finally:
            txn.abort()
        return digest


def record_image(source: ImageSource, chunker_params: ChunkerParams, writer: ChunkWriter,
                 index: ChunkIndex, pool: Executor, stats: BackupStats,
                 progress: Progress | None = None) -> ManifestBuilder:
    """Read the whole source into chunks and manifest blocks; returns the finished manifest.

    Holes end the current chunk (they are known zeros and are never read).
    """
    chunker = StreamChunker(chunker_params)
    recorder = _ImageRecorder(writer, index, pool, stats)
    for extent, buffer in prefetch(source.pieces()):
        if buffer is None:
            recorder.add_chunks(chunker.finish())
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
