"""Which indexed chunks no snapshot uses, and which of them compaction frees.

check walks the chunks in use (a digest-ordered DigestSet) and the index (digest-ordered)
together, once: ``merged``. ``PackUsage`` sums, per pack, what its records in use take
and what no snapshot uses, and judges each pack as compaction does (compact_plan.py): a
pack is rewritten or deleted once more than the threshold of it is unused, so the chunks
of other packs wait for ``compact --threshold 0``. Its sums per pack go to disk where the
packs are many, and are read in pack order beside the index's pack statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..store.format.packs import ENTRY
from ..store.index.records import ChunkLocation, PackStats
from ..store.index.sorted_runs import KeyedSums, joined
from .compact_plan import DEFAULT_THRESHOLD, record_cost

USAGE_SUMS = 3  # per pack: the cost of its records in use, its unused chunks, their bytes


def merged(in_use: Iterator[bytes], indexed: Iterator[tuple[bytes, ChunkLocation]]
           ) -> Iterator[tuple[bytes, bool, ChunkLocation | None]]:
    """Two digest-ordered streams walked together: each digest of either, whether it is in
    use, and its location (None: not indexed)."""
    end = (None, None)
    digest = next(in_use, None)
    indexed_digest, location = next(indexed, end)
    while digest is not None or indexed_digest is not None:
        if indexed_digest is None or (digest is not None and digest < indexed_digest):
            yield digest, True, None
            digest = next(in_use, None)
        elif digest is None or indexed_digest < digest:
            yield indexed_digest, False, location
            indexed_digest, location = next(indexed, end)
        else:
            yield digest, True, location
            digest = next(in_use, None)
            indexed_digest, location = next(indexed, end)


@dataclass
class Unused:
    chunks: int = 0
    stored_bytes: int = 0
    reclaimable_chunks: int = 0   # in packs compact rewrites or deletes at its default
    reclaimable_bytes: int = 0    # threshold; the others wait for --threshold 0


class PackUsage:
    """Per pack: the cost of its indexed records in use, and its unused indexed chunks
    (``sums``: USAGE_SUMS values per 16-byte pack key)."""

    def __init__(self, sums: KeyedSums):
        self._sums = sums

    def add(self, digest: bytes, location: ChunkLocation, in_use: bool) -> None:
        if in_use:
            self._sums.add(bytes.fromhex(location.pack_id),
                           record_cost(location.entry(digest)), 0, 0)
        else:
            self._sums.add(bytes.fromhex(location.pack_id), 0, 1, location.stored_size)

    def summed(self, stats: Iterator[tuple[str, PackStats]]) -> Unused:
        """The totals, judging each pack by compaction's default threshold (``stats``:
        the index's pack statistics in key order, whose records and bytes make a pack's
        whole cost)."""
        found = Unused()
        per_pack = ((pack_key.hex(), sums) for pack_key, sums in self._sums)
        for _, (usage, pack) in joined(per_pack, stats):
            if usage is None or not usage[1]:
                continue
            used, chunks, size = usage
            found.chunks += chunks
            found.stored_bytes += size
            total = pack.stored_bytes + ENTRY.size * pack.records if pack else 0
            if not used or total - used > DEFAULT_THRESHOLD * total:
                found.reclaimable_chunks += chunks
                found.reclaimable_bytes += size
        return found
