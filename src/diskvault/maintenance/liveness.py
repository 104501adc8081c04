"""What the snapshots still use: reference counts kept beside the index
(store/index/reference_counts.py).

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
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from ..errors import CorruptData
from ..store.format.manifest import ManifestEntry
from ..store.index.chunk_index import ChunkIndex
from ..store.index.reference_counts import ReferenceCounts
from ..store.index.sorted_runs import DigestSet
from ..store.pipeline import batches, ordered_map, worker_count
from .scratch import scratch_folder
from .usage import merged

log = logging.getLogger(__name__)

# Blocks per write transaction: one commit (fsync) amortised over several, while the pages
# their references dirty (one per chunk at most, 4 KiB each) stay bounded: a block names at
# most 1,024 chunks, so 16 blocks dirty 64 MiB at most.
BATCH_BLOCKS = 16

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


class Liveness(ReferenceCounts):
    """The maintenance tables (store/index/reference_counts.py), brought in step with the
    snapshot records."""

    def reconcile(self, live_blocks: Iterable[bytes], read_block: ReadBlock,
                  pool: Executor) -> ReconcileStats:
        """Count the references of live blocks not yet accounted, and release those of
        accounted blocks no snapshot lists any more.

        ``live_blocks``: in digest order, each once (a DigestSet). Added blocks are counted
        before released ones are let go, so a chunk that moved
        from an old block to a new one never looks dead in between. ``read_block`` raising
        CorruptData for a block to add aborts (its chunks would look unused); a released
        block that cannot be read stays accounted, which keeps its chunks (safe, logged).
        """
        stats = ReconcileStats()
        for sign, loaded in _changes(self.accounted_in_order, live_blocks, read_block,
                                     pool):
            self._count_blocks(loaded, sign)
            stats.note(sign, len(loaded))
        return stats

    def _count_blocks(self, blocks: list[tuple[bytes, list[ManifestEntry]]],
                      sign: int) -> None:
        """Add (sign +1) or release (-1) the references of ``blocks`` and mark them
        accounted or not, in one transaction. Deltas are summed first: consecutive
        snapshots' blocks name mostly the same chunks."""
        deltas: Counter[bytes] = Counter()
        for block, entries in blocks:
            deltas.update(_referenced(block, entries))
        self.apply({digest: sign * delta for digest, delta in deltas.items()},
                   [block for block, _ in blocks], accounted=sign > 0)

    def used(self, digests: Sequence[bytes]) -> list[bool]:
        """Whether a snapshot uses each of ``digests``."""
        return [count > 0 for count in self.counts(digests)]


def preview(index: ChunkIndex, live_blocks: Iterable[bytes], read_block: ReadBlock,
            pool: Executor) -> PendingLiveness:
    """The tables as Liveness.reconcile would leave them, with nothing written (compact
    --dry-run). Holds one count per chunk that the added and released blocks name."""
    pending = PendingLiveness(index, Liveness.existing(index))
    accounted = (pending.committed.accounted_in_order if pending.committed
                 else lambda: iter(()))
    for sign, loaded in _changes(accounted, live_blocks, read_block, pool):
        pending.count(loaded, sign)
    return pending


def _changes(accounted: Callable[[], Iterator[bytes]], live_blocks: Iterable[bytes],
             read_block: ReadBlock, pool: Executor
             ) -> Iterator[tuple[int, list[tuple[bytes, list[ManifestEntry]]]]]:
    """Batches of (+1, live blocks not yet accounted), then (-1, readable blocks that are
    accounted but no longer live). Both streams are in digest order: one merge of them
    sorts the two kinds of change into sets on disk (the read of ``accounted`` ends
    before any count changes), so that memory does not follow the manifest blocks."""
    window = 4 * worker_count()
    with DigestSet(scratch_folder()) as added, DigestSet(scratch_folder()) as released:
        for digest, live, was_accounted in merged(iter(live_blocks),
                                                  ((d, True) for d in accounted())):
            if live and not was_accounted:
                added.add(digest)
            elif was_accounted and not live:
                released.add(digest)
        for batch in batches(added, BATCH_BLOCKS):
            yield +1, list(ordered_map(pool, read_block, batch, window))
        for batch in batches(released, BATCH_BLOCKS):
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

    def used(self, digests: Sequence[bytes]) -> list[bool]:
        committed = self.committed.counts(digests) if self.committed else [0] * len(digests)
        return [count + self.deltas.get(digest, 0) > 0
                for digest, count in zip(digests, committed)]

    def doomed(self) -> set[str]:
        return self.committed.doomed() if self.committed else set()

    def packs_to_review(self, known_packs: Collection[str], threshold: float) -> list[str]:
        """As Liveness.packs_to_review once reconciled: the homes of chunks that die are
        reviewed too."""
        if self.committed is None:
            return sorted(known_packs)
        chosen = set(self.committed.packs_to_review(known_packs, threshold))
        dying = [digest for digest, delta in self.deltas.items() if delta < 0]
        located = self.index.locate_many(dying)
        for (_, location), used in zip(located, self.used(dying)):
            if location and not used:
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
