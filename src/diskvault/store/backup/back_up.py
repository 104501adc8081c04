"""The backup path: source -> chunker -> hasher -> index lookup -> compressor -> packs,
then manifest blocks, then (last, atomically) the snapshot record. The order of operations
lives in ``back_up``; the write session owns what is stored and how."""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from datetime import datetime, timezone
from typing import Protocol

from ..format.codec import Codec
from ..format.config import ChunkerParams, RepositoryConfig
from ..format.manifest import ManifestBuilder, Span
from ..format.packs import PackStore
from ..format.snapshot_store import SnapshotStore
from ..format.snapshots import BackupStats, SnapshotRecord
from ..index.chunk_index import ChunkIndex
from ..pipeline import prefetch
from .chunker import Chunker, ChunkId, Hint, Piece, ZeroRun, hash_sequentially, plain_chunk_id
from .request import BackupRequest
from .source import Extent, ImageSource
from .write_session import WriteSession

Progress = Callable[[int], None]
HASH_AHEAD_BUFFERS = 2  # read buffers whose hints hash while the chunker cuts an earlier one


def zero_digest(length: int, chunk_id: ChunkId = plain_chunk_id) -> bytes:
    """Digest of ``length`` zero bytes: a chunk with this digest is a zero run."""
    return chunk_id(bytes(length))


def _complete_digests(pieces: list[Piece], chunk_id: ChunkId) -> list[bytes | None]:
    """Digests of a batch: those the chunker already verified, the rest hashed here
    (None for a ZeroRun)."""
    return [None if isinstance(piece, ZeroRun) else piece[1] or chunk_id(piece[0])
            for piece in pieces]


def parallel_hasher(pool: Executor, chunk_id: ChunkId = plain_chunk_id):
    """Hash a batch on two threads at once (blake3 releases the GIL)."""
    def hash_many(views: list) -> list[bytes]:
        if len(views) < 8:
            return hash_sequentially(views, chunk_id)
        half = len(views) // 2
        other = pool.submit(hash_sequentially, views[half:], chunk_id)
        return hash_sequentially(views[:half], chunk_id) + other.result()
    return hash_many


class ImageRecorder:
    """Turns chunks into manifest entries and new chunks into stored ones.

    Hashing of one batch overlaps the chunking of the next: a batch is consumed
    only when the following one is submitted (or at a hole, or at the end).
    """

    def __init__(self, session: WriteSession, pool: Executor, stats: BackupStats):
        self.session = session
        self.chunk_id = session.codec.chunk_id
        self._zero_digests: dict[int, bytes] = {}
        self.pool = pool
        self.stats = stats
        self.manifest = ManifestBuilder(self._store_block)
        self._batch: tuple[list, Future] | None = None

    def add_chunks(self, chunks: list[Piece]) -> None:
        batch = (chunks, self.pool.submit(_complete_digests, chunks, self.chunk_id)) if chunks else None
        self.drain()
        self._batch = batch

    def add_known(self, spans: list[Span]) -> None:
        """Entries of the previous snapshot taken as they are, without reading: their
        chunks are stored already."""
        self.drain()
        for span in spans:
            if span.digest is None:
                self._add_zeros(span.length)
            else:
                self.stats.chunks += 1
                self.manifest.add_data(span.digest, span.length)

    def drain(self) -> None:
        if self._batch is None:
            return
        chunks, future = self._batch
        self._batch = None
        data: list[tuple[bytes, memoryview]] = []
        for piece, digest in zip(chunks, future.result()):
            if isinstance(piece, ZeroRun):
                self._add_zeros(piece.length)
                continue
            chunk = piece[0]
            length = len(chunk)
            # The cheap byte test first: zero_digest costs a hash of its own.
            if chunk[0] == 0 and chunk[-1] == 0 and digest == self._zero_digest(length):
                self._add_zeros(length)
                continue
            self.stats.chunks += 1
            self.manifest.add_data(digest, length)
            data.append((digest, chunk))  # a view: its buffer lives until compressed
        self.session.store_missing(data)

    def _add_zeros(self, length: int) -> None:
        self.stats.zero_bytes += length
        self.manifest.add_zeros(length)

    def _zero_digest(self, length: int) -> bytes:
        """Cached per backup: the id of zeros depends on the repository's key."""
        digest = self._zero_digests.get(length)
        if digest is None:
            digest = self._zero_digests[length] = zero_digest(length, self.chunk_id)
        return digest

    def _store_block(self, encoded: bytes) -> bytes:
        digest = self.chunk_id(encoded)
        self.stats.manifest_blocks += 1
        self.stats.new_manifest_blocks += self.session.store_missing(
            [(digest, encoded)], manifest_blocks=True)
        return digest


def hashed_ahead(pieces: Iterable[tuple[Extent, bytes | None]], chunker: Chunker,
                 depth: int = HASH_AHEAD_BUFFERS) -> Iterator[tuple[Extent, bytes | None]]:
    """``pieces`` handed on ``depth`` buffers late, each buffer's hints hashing on the pool
    from the moment it arrives: the chunker then finds their digests done (a nightly's
    hashing overlaps its reading and cutting, instead of the two cores taking turns)."""
    held: deque = deque()
    for extent, buffer in pieces:
        if buffer is not None:
            chunker.hash_ahead(extent.offset, buffer)
        held.append((extent, buffer))
        if len(held) > depth:
            yield held.popleft()
    yield from held


def record_image(source: ImageSource, chunker_params: ChunkerParams, session: WriteSession,
                 pool: Executor, stats: BackupStats, hints: Iterable[Hint] = (),
                 progress: Progress | None = None) -> ManifestBuilder:
    """Read the whole source into chunks and manifest blocks; returns the finished manifest.

    Holes are chunked as the zeros they are, without being read, so the manifest depends
    only on the image's bytes. ``hints`` are the previous snapshot's chunks, which make
    unchanged regions cost a hash, not a cut.
    """
    chunk_id = session.codec.chunk_id
    chunker = Chunker(chunker_params, hints, parallel_hasher(pool, chunk_id),
                      session.codec.cipher.chunk_permutation,
                      hash_later=lambda views: pool.submit(hash_sequentially, views, chunk_id))
    recorder = ImageRecorder(session, pool, stats)
    session.index.read_ahead()  # every chunk of the image is looked up
    for extent, buffer in hashed_ahead(prefetch(source.pieces()), chunker):
        if buffer is None:
            recorder.add_chunks(chunker.feed_zeros(extent.size))
        else:
            stats.bytes_read += len(buffer)
            recorder.add_chunks(chunker.feed(buffer))
        if progress:
            progress(extent.offset + extent.size)
    recorder.add_chunks(chunker.finish())
    recorder.drain()
    recorder.manifest.finish()
    return recorder.manifest


class BackupStorage(Protocol):
    """The parts of an open repository (store/storage.py) a backup writes to."""
    packs: PackStore
    index: ChunkIndex
    codec: Codec
    config: RepositoryConfig
    pool: Executor
    snapshots: SnapshotStore


def back_up(storage: BackupStorage, source: ImageSource, request: BackupRequest,
            before_record: Callable[[], None]) -> SnapshotRecord:
    """Store the image and record it; call with the backup lock held. Every chunk and
    manifest block is durable and indexed before the snapshot record is written (last,
    atomically), so a failure at any point records nothing and a rerun reuses what landed.
    ``before_record`` raises if that lock was lost (BackupLock.ensure_held)."""
    stats = BackupStats()
    config, changed = storage.config, request.changed
    with WriteSession(storage.packs, storage.index, storage.codec,
                      config.pack_target_bytes) as session:
        if changed is None:
            manifest = record_image(source, config.chunker, session, storage.pool, stats,
                                    request.hints, request.progress)
        else:
            manifest = changed.record(session, stats)
        session.flush()  # before the check: a moved source's chunks serve the rerun
        source.check_unchanged()
    stats.new_chunks = session.counts.chunks
    stats.new_bytes = session.counts.raw_bytes
    stats.stored_bytes = session.counts.stored_bytes
    stats.duration_s = round(time.monotonic() - request.started, 3)
    record = SnapshotRecord(
        id=SnapshotRecord.new_id(), name=request.name, time=datetime.now(timezone.utc),
        source=source.label, size=manifest.size, host=socket.gethostname(),
        tags=list(request.tags), stats=stats, blocks=manifest.blocks,
        base_id=changed.base_id if changed else None,
        holes_as_zeros=changed.holes_as_zeros if changed else True,
        consistency=source.consistency, dirty_bitmap=request.dirty_bitmap)
    before_record()
    storage.snapshots.save(record)
    return record
