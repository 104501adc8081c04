"""Which indexed chunks no snapshot uses, and which of them compaction frees.

check walks the chunks in use (a digest-ordered DigestSet) and the index (digest-ordered)
together, once: ``merged``. ``PackUsage`` sums, per pack, what its records in use take
and what no snapshot uses, and judges each pack as compaction does (compact_plan.py): a
pack is rewritten or deleted once more than the threshold of it is unused, so the chunks
of other packs wait for ``compact --threshold 0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from ..store.format.packs import ENTRY
from ..store.index.records import ChunkLocation, PackStats
from .compact_plan import DEFAULT_THRESHOLD, record_cost


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
    """Per pack: the cost of its indexed records in use, and its unused indexed chunks."""

    def __init__(self):
        self.used: Counter[str] = Counter()
        self.unused: dict[str, list[int]] = {}  # pack -> [chunks, stored bytes]

    def add(self, digest: bytes, location: ChunkLocation, in_use: bool) -> None:
        if in_use:
            self.used[location.pack_id] += record_cost(location.entry(digest))
        else:
            counts = self.unused.setdefault(location.pack_id, [0, 0])
            counts[0] += 1
            counts[1] += location.stored_size

    def summed(self, stats: dict[str, PackStats]) -> Unused:
        """The totals, judging each pack by compaction's default threshold (``stats``:
        the index's pack statistics, whose records and bytes make a pack's whole cost)."""
        found = Unused()
        for pack_id, (chunks, size) in self.unused.items():
            found.chunks += chunks
            found.stored_bytes += size
            pack = stats.get(pack_id)
            total = pack.stored_bytes + ENTRY.size * pack.records if pack else 0
            used = self.used[pack_id]
            if not used or total - used > DEFAULT_THRESHOLD * total:
                found.reclaimable_chunks += chunks
                found.reclaimable_bytes += size
        return found
