"""What the snapshots still use: reference counts kept in LMDB beside the index.

Compaction must know which packs lost data without reading every snapshot each time.
The snapshot records list their manifest blocks, so the set of live blocks costs no pack
I/O. Per chunk we keep how many *accounted* manifest blocks reference it (a block counts
as a reference to itself). ``reconcile`` brings the counts in step with the records by
reading only the blocks that appeared (new backups) or disappeared (deleted snapshots)
since the last run -- backup itself never touches these tables. A chunk whose count drops
to zero marks its pack for review; packs never reviewed (new ones) are reviewed too.

Every update of a block's references and of its accounted mark share one transaction, so
a kill at any instant leaves the counts consistent with the accounted set. Losing the
tables (a deleted index) is safe: empty counts and an empty accounted set agree, and the
next reconcile reads every live block once.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import lmdb

from ..errors import CorruptData
from ..store.format.manifest import ManifestEntry
from ..store.index.chunk_index import ChunkIndex
from ..store.pipeline import batches, ordered_map, worker_count

log = logging.getLogger(__name__)

COUNT = struct.Struct("<I")
USAGE = struct.Struct("<QQ")  # a reviewed pack's unused and total bytes
TABLES = (b"refs", b"accounted", b"reviewed", b"doomed")
BATCH_BLOCKS = 256  # blocks per write transaction: one commit (fsync) amortised over many

ReadBlock = Callable[[bytes], list[ManifestEntry]]


@dataclass
class ReconcileStats:
    blocks_added: int = 0
    blocks_released: int = 0

    def note(self, sign: int, blocks: int) -> None:
        if sign > 0:
            self.blocks_added += blocks
        else:
            self.blocks_released += blocks


def _referenced(block_digest: bytes, entries: list[ManifestEntry]) -> set[bytes]:
    """The digests one block holds a reference to: its data chunks and itself."""
    digests = {entry.digest for entry in entries if entry.digest is not None}
    digests.add(block_digest)
    return digests


class Liveness:
    """The maintenance tables: ``refs`` (digest -> count), ``accounted`` (block digests),
    ``reviewed`` (pack -> unused and total bytes, as of its last review) and ``doomed``
    (packs whose live data was moved or died, deleted once no reader runs)."""

    def __init__(self, index: ChunkIndex, tables: list | None = None):
        self.index = index
        self._refs, self._accounted, self._reviewed, self._doomed = (
            tables or [index.env.open_db(name) for name in TABLES])

    @classmethod
    def existing(cls, index: ChunkIndex) -> Liveness | None:
        """The tables, opened without writing a byte, or None if no compact made them."""
        with index.env.begin() as txn:
            if any(txn.get(name) is None for name in TABLES):
                return None
        # Not inside that read transaction: a handle opened in one is not usable after it.
        return cls(index, [index.env.open_db(name, create=False) for name in TABLES])

    # -- reference counts --------------------------------------------------------------
    def reconcile(self, live_blocks: Collection[bytes], read_block: ReadBlock,
                  pool: Executor) -> ReconcileStats:
        """Count the references of live blocks not yet accounted, and release those of
        accounted blocks no snapshot lists any more.

        Added blocks are counted before released ones are let go, so a chunk that moved
        from an old block to a new one never looks dead in between. ``read_block`` raising
        CorruptData for a block to add aborts (its chunks would look unused); a released
        block that cannot be read stays accounted, which keeps its chunks (safe, logged).
        """
        stats = ReconcileStats()
        for sign, loaded in _changes(self.accounted(), live_blocks, read_block, pool):
            self._count(loaded, sign)
            stats.note(sign, len(loaded))
        return stats

    def accounted(self) -> set[bytes]:
        with self.index.env.begin() as txn:
            return set(txn.cursor(db=self._accounted).iternext(values=False))

    def _count(self, blocks: list[tuple[bytes, list[ManifestEntry]]], sign: int) -> None:
        """Add (sign +1) or release (-1) the references of ``blocks`` and mark them
        accounted or not, in one transaction. Deltas are summed first: consecutive
        snapshots' blocks name mostly the same chunks."""
        deltas: Counter[bytes] = Counter()
        for block, entries in blocks:
            deltas.update(_referenced(block, entries))
        with self.index.env.begin(write=True) as txn:
            for digest, delta in deltas.items():
                if self._add(txn, digest, sign * delta) == 0:
                    self._unreview_home(txn, digest)
            for block, _ in blocks:
                if sign > 0:
                    txn.put(block, b"", db=self._accounted)
                else:
                    txn.delete(block, db=self._accounted)

    def _add(self, txn: lmdb.Transaction, digest: bytes, delta: int) -> int:
        count = self.count(txn, digest) + delta
        if count > 0:
            txn.put(digest, COUNT.pack(count), db=self._refs)
        else:
            txn.delete(digest, db=self._refs)
        return max(count, 0)

    def _unreview_home(self, txn: lmdb.Transaction, digest: bytes) -> None:
        location = self.index.lookup(digest, txn)
        if location is not None:
            txn.delete(bytes.fromhex(location.pack_id), db=self._reviewed)

    def count(self, txn: lmdb.Transaction, digest: bytes) -> int:
        value = txn.get(digest, db=self._refs)
        return 0 if value is None else COUNT.unpack(value)[0]

    def is_used(self, txn: lmdb.Transaction, digest: bytes) -> bool:
        return txn.get(digest, db=self._refs) is not None

    def read_txn(self) -> lmdb.Transaction:
        return self.index.env.begin()

    def used_digests(self) -> Iterator[bytes]:
        """Every chunk an accounted manifest block references, in digest order."""
        with self.index.env.begin() as txn:
            yield from txn.cursor(db=self._refs).iternext(values=False)

    # -- pack review and deferred deletion ---------------------------------------------
    def packs_to_review(self, known_packs: Iterable[str], threshold: float) -> list[str]:
        """Packs that may hold garbage: never reviewed, lost a chunk since, doomed, or
        reviewed with more unused bytes than ``threshold`` allows."""
        chosen = []
        with self.index.env.begin() as txn:
            for pack in known_packs:
                value = txn.get(bytes.fromhex(pack), db=self._reviewed)
                if value is None:
                    chosen.append(pack)
                    continue
                unused, total = USAGE.unpack(value)
                if unused > threshold * total:
                    chosen.append(pack)
        return sorted(chosen)

    def record_reviews(self, reviewed: dict[str, tuple[int, int]],
                       doomed: Iterable[str]) -> None:
        """In one transaction: remember reviewed packs' unused and total bytes until one of
        their chunks dies, and doom packs (to be deleted once no reader runs)."""
        with self.index.env.begin(write=True) as txn:
            for pack_id, usage in reviewed.items():
                txn.put(bytes.fromhex(pack_id), USAGE.pack(*usage), db=self._reviewed)
            for pack_id in doomed:
                key = bytes.fromhex(pack_id)
                txn.put(key, b"", db=self._doomed)
                txn.delete(key, db=self._reviewed)

    def doomed(self) -> set[str]:
        with self.index.env.begin() as txn:
            return {key.hex() for key in txn.cursor(db=self._doomed).iternext(values=False)}

    def forget_packs(self, pack_ids: Iterable[str]) -> None:
        """The packs' files are gone: drop them from every table."""
        with self.index.env.begin(write=True) as txn:
            for pack_id in pack_ids:
                key = bytes.fromhex(pack_id)
                txn.delete(key, db=self._doomed)
                txn.delete(key, db=self._reviewed)

    def reset(self) -> None:
        """Forget all derived state (repair): the next reconcile recounts from scratch."""
        with self.index.env.begin(write=True) as txn:
            for table in (self._refs, self._accounted, self._reviewed, self._doomed):
                txn.drop(table, delete=False)


def preview(index: ChunkIndex, live_blocks: Collection[bytes], read_block: ReadBlock,
            pool: Executor) -> PendingLiveness:
    """The tables as Liveness.reconcile would leave them, with nothing written (compact
    --dry-run). Holds one count per chunk that the added and released blocks name."""
    pending = PendingLiveness(index, Liveness.existing(index))
    accounted = pending.committed.accounted() if pending.committed else set()
    for sign, loaded in _changes(accounted, live_blocks, read_block, pool):
        pending.count(loaded, sign)
    return pending


def _changes(accounted: set[bytes], live_blocks: Collection[bytes], read_block: ReadBlock,
             pool: Executor) -> Iterator[tuple[int, list[tuple[bytes, list[ManifestEntry]]]]]:
    """Batches of (+1, live blocks not yet accounted), then (-1, readable blocks that are
    accounted but no longer live)."""
    live = set(live_blocks)
    window = 4 * worker_count()
    for batch in batches(sorted(live - accounted), BATCH_BLOCKS):
        yield +1, list(ordered_map(pool, read_block, batch, window))
    for batch in batches(sorted(accounted - live), BATCH_BLOCKS):
        loaded = list(ordered_map(pool, _tolerant(read_block), batch, window))
        yield -1, [(block, entries) for block, entries in loaded if entries is not None]


class PendingLiveness:
    """The committed tables (None: no compact made them yet) plus the reference changes a
    reconcile would make, in memory; answers what compaction's planning asks of Liveness."""

    def __init__(self, index: ChunkIndex, committed: Liveness | None):
        self.index = index
        self.committed = committed
        self.deltas: Counter[bytes] = Counter()

    def count(self, blocks: list[tuple[bytes, list[ManifestEntry]]], sign: int) -> None:
        for block, entries in blocks:
            for digest in _referenced(block, entries):
                self.deltas[digest] += sign

    def read_txn(self) -> lmdb.Transaction:
        return self.index.env.begin()

    def is_used(self, txn: lmdb.Transaction, digest: bytes) -> bool:
        committed = self.committed.count(txn, digest) if self.committed else 0
        return committed + self.deltas.get(digest, 0) > 0

    def doomed(self) -> set[str]:
        return self.committed.doomed() if self.committed else set()

    def packs_to_review(self, known_packs: Collection[str], threshold: float) -> list[str]:
        """As Liveness.packs_to_review once reconciled: the homes of chunks that die are
        reviewed too."""
        if self.committed is None:
            return sorted(known_packs)
        chosen = set(self.committed.packs_to_review(known_packs, threshold))
        with self.read_txn() as txn:
            for digest, delta in self.deltas.items():
                location = self.index.lookup(digest, txn)
                if delta < 0 and location and not self.is_used(txn, digest):
                    chosen.add(location.pack_id)
        return sorted(chosen.intersection(known_packs))


def _tolerant(read_block: ReadBlock) -> Callable[[bytes], list[ManifestEntry] | None]:
    def read(block: bytes) -> list[ManifestEntry] | None:
        try:
            return read_block(block)
        except CorruptData as error:
            log.warning("manifest block %s of a deleted snapshot cannot be read (%s); the "
                        "chunks it references are kept", block.hex()[:16], error)
            return None
    return read
