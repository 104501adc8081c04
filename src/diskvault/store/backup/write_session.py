"""One backup's writes: whether a digest is stored or on its way, and the storing of new
chunks (compressed on threads of its own, appended to packs on one writer thread, each pack
made durable before the index learns of it, several packs to an index transaction).

The only owner of the question "is this digest stored or in flight": its index lookups run
in the index's own read transactions, never handed to the caller.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ...errors import DiskvaultError
from ..format.codec import Codec
from ..format.packs import PackStore
from ..index.chunk_index import ChunkIndex
from ..pipeline import new_pool
from .packing import BatchedCommit, DurablePack, PackFiller

MAX_PACKS_SYNCING = 2
# Index entries of durable packs committed in one transaction. With random digests a
# transaction dirties about a leaf page (4 KiB) per entry once the index is large, plus the
# branch pages above them, all held in memory until it commits: 32 MiB of leaves at most
# (~45 MiB in all at 10^7 entries), and the index file keeps about twice that in pages
# freed for later transactions. Twice as many saved ~15 % of the commits' CPU at 10^6.
INDEX_ENTRIES_PER_COMMIT = 1 << 13


@dataclass
class StoredCounts:
    """What the session stored (settled once ``flush`` returns)."""
    chunks: int = 0
    raw_bytes: int = 0       # the chunks' own bytes
    stored_bytes: int = 0    # the bytes they take in packs, after compression


class WriteSession:
    """Stores new chunks. Compression runs on the session's pool; one writer thread appends
    the records to packs in submission order, makes each full pack durable, then commits
    its entries to the index -- so the caller's thread never waits on disk writes or fsync.
    Durable packs reach the index together, INDEX_ENTRIES_PER_COMMIT entries at a time: in
    a large index each new digest dirties a page of its own, which a transaction writes
    whole (and syncs), so a transaction per pack wrote about a page per chunk.

    Use it as a context manager: leaving it normally closes it (call ``flush`` first to
    make everything durable); leaving it by an exception drops what is not yet durable.
    """

    def __init__(self, packs: PackStore, index: ChunkIndex, codec: Codec,
                 pack_target_bytes: int, max_batches_in_flight: int = 4):
        self.index = index
        self.codec = codec
        self.counts = StoredCounts()
        self._records: queue.Queue = queue.Queue(maxsize=max_batches_in_flight)
        self._committed: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight: set[bytes] = set()  # queued, not yet seen committed
        self._error: BaseException | None = None
        # Compression gets threads of its own: on the shared pool, the hashing that the
        # chunker waits for would queue behind it.
        self._compressors = new_pool("compress")
        # Full packs are made durable on a thread of their own, so the next pack fills
        # while the last one is fsynced (the disk and the compressors work at once); on an
        # object store several packs go up at once.
        uploads = packs.backend.uploads_in_flight
        self._syncer = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="pack-sync")
        self._max_syncing = max(MAX_PACKS_SYNCING, uploads)
        self._syncing: deque[Future] = deque()
        self._index_commits = BatchedCommit(self._commit, INDEX_ENTRIES_PER_COMMIT)
        self._packs = PackFiller(packs, pack_target_bytes, self._index_commits,
                                 self._sync_later)
        # Manifest blocks get packs of their own: a later backup's hints and a restore read
        # a whole manifest in a few range requests instead of one request per block.
        self._block_packs = PackFiller(packs, pack_target_bytes, self._index_commits,
                                       self._sync_later)
        self._thread = threading.Thread(target=self._write_loop, name="pack-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> "WriteSession":
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()

    # -- the caller's thread -----------------------------------------------------------
    def store_missing(self, chunks: Sequence[tuple[bytes, object]],
                      manifest_blocks: bool = False) -> int:
        """Queue the (digest, raw bytes) pairs that are neither stored nor in flight, a
        digest repeated within ``chunks`` once; returns how many were queued. The raw bytes
        may be views: their buffers must live until compressed (the session keeps them).
        ``manifest_blocks`` puts them in the session's packs of manifest blocks."""
        raw_by_digest: dict[bytes, object] = {}
        for digest, raw in chunks:
            raw_by_digest.setdefault(digest, raw)
        new = [(digest, raw_by_digest[digest]) for digest in self.lacks(list(raw_by_digest))]
        if new:
            self._in_flight.update(digest for digest, _ in new)
            future = self._compressors.submit(self._compress_all, new)
            filler = self._block_packs if manifest_blocks else self._packs
            self._records.put(([digest for digest, _ in new], [len(raw) for _, raw in new],
                               future, filler))
        return len(new)

    def lacks(self, digests: Sequence[bytes]) -> list[bytes]:
        """The digests, each once and in order, that are neither stored nor in flight: what
        ``store_missing`` would queue. A copy asks first, so it reads only those."""
        self._settle()
        candidates = [digest for digest in dict.fromkeys(digests)
                      if digest not in self._in_flight]
        # In-flight digests were settled before this lookup's transaction began, so a
        # chunk committed in between is still in flight here: none is missed.
        return [digest for digest, indexed in zip(candidates, self.index.are_indexed(candidates))
                if not indexed]

    def flush(self) -> None:
        """Write everything queued and commit it: after this, all of it is durable."""
        done: Future = Future()
        self._records.put(done)
        done.result()
        self._settle()

    def close(self) -> None:
        """Stop the threads; a pack left open (after a failure) is dropped. Durable packs
        not yet committed are committed, unless something failed: then the next backup's
        catch-up indexes them."""
        if self._thread.is_alive():
            self._records.put(None)
            self._thread.join()
        self._compressors.shutdown(cancel_futures=True)
        self._syncer.shutdown(wait=True)  # a pack being synced still lands: it is whole
        self._run_safely(self._index_commits.flush)
        self._packs.abort()
        self._block_packs.abort()

    def abort(self) -> None:
        """Drop what is not yet durable; committed packs stay (a rerun reuses them)."""
        if self._error is None:
            self._error = DiskvaultError("backup abandoned")
        self.close()

    def _settle(self) -> None:
        """Forget in-flight digests whose packs are committed; raise a writer failure."""
        while True:
            try:
                self._in_flight.difference_update(self._committed.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise self._error

    def _compress_all(self, chunks: list[tuple[bytes, object]]) -> list[tuple[bytes, int]]:
        """One pool task per batch: a task per chunk costs more in hand-offs than small
        chunks take to compress (and seal, in an encrypted repository)."""
        return [self.codec.compress(raw, digest) for digest, raw in chunks]

    # -- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        """Batches and flush requests in order; after a failure, the rest is skipped."""
        while True:
            item = self._records.get()
            if item is None:
                return
            if isinstance(item, Future):
                self._run_safely(self._finish_all)
                item.set_result(None)
            elif self._error is None:
                self._run_safely(lambda: self._write_batch(*item))
            else:
                item[2].cancel()

    def _run_safely(self, step: Callable[[], None]) -> None:
        """Run one step unless an earlier one failed; a failure is kept for the caller."""
        if self._error is None:
            try:
                step()
            except BaseException as error:
                self._error = error

    def _write_batch(self, digests: list[bytes], raw_sizes: list[int], future: Future,
                     filler: PackFiller) -> None:
        for digest, raw_size, (stored, flags) in zip(digests, raw_sizes, future.result()):
            filler.add(digest, stored, raw_size, flags)
            self.counts.chunks += 1
            self.counts.raw_bytes += raw_size
            self.counts.stored_bytes += len(stored)

    def _sync_later(self, seal: Callable[[], None]) -> None:
        self._syncing.append(self._syncer.submit(seal))
        while len(self._syncing) > self._max_syncing:
            self._syncing.popleft().result()

    def _commit(self, packs: list[DurablePack]) -> None:
        """On a sync thread (or at flush), once the packs are durable (see packing.seal)."""
        self.index.add_packs(packs)
        for _, entries, _ in packs:
            self._committed.put([e.digest for e in entries])

    def _finish_all(self) -> None:
        self._packs.finish()
        self._block_packs.finish()
        while self._syncing:
            self._syncing.popleft().result()
        self._index_commits.flush()
