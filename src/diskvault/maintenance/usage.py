"""Which indexed chunks no snapshot uses, and which of them compaction frees.

check walks the chunks in use (a digest-ordered DigestSet) and the index (digest-ordered)
together, once: ``merged``. ``PackUsage`` sums, per pack, what its records in use take
and what no snapshot uses, and judges each pack as compaction does (compact_plan.py): a
pack is rewritten or deleted once more than the threshold of it is unused, so the chunks
of other packs wait for ``compact --threshold 0``. Its rows are sorted on disk by pack and
summed in pack order beside the index's pack statistics: no table of every pack.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby

from ..store.format.packs import ENTRY
from ..store.index.records import ChunkLocation, PackStats
from ..store.index.sorted_runs import SortedRuns, joined
from .compact_plan import DEFAULT_THRESHOLD, record_cost

USAGE_ROW = struct.Struct("<16s?Q")  # pack key, in use, its cost (in use) or stored bytes


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
    """Per pack: the cost of its indexed records in use, and its unused indexed chunks; a
    row per indexed chunk in ``rows`` (sorted runs of USAGE_ROW.size bytes)."""

    def __init__(self, rows: SortedRuns):
        self._rows = rows

    def add(self, digest: bytes, location: ChunkLocation, in_use: bool) -> None:
        amount = record_cost(location.entry(digest)) if in_use else location.stored_size
        self._rows.add(USAGE_ROW.pack(bytes.fromhex(location.pack_id), in_use, amount))

    def summed(self, stats: Iterator[tuple[str, PackStats]]) -> Unused:
        """The totals, judging each pack by compaction's default threshold (``stats``:
        the index's pack statistics in key order, whose records and bytes make a pack's
        whole cost)."""
        found = Unused()
        for _, (usage, pack) in joined(self._per_pack(), stats):
            if usage is None:
                continue
            used, chunks, size = usage
            if not chunks:
                continue
            found.chunks += chunks
            found.stored_bytes += size
            total = pack.stored_bytes + ENTRY.size * pack.records if pack else 0
            if not used or total - used > DEFAULT_THRESHOLD * total:
                found.reclaimable_chunks += chunks
                found.reclaimable_bytes += size
        return found

    def _per_pack(self) -> Iterator[tuple[str, tuple[int, int, int]]]:
        """Per pack, in key order: the cost in use, the unused chunks and their bytes."""
        unpack = USAGE_ROW.unpack
        for pack_key, rows in groupby(self._rows, key=lambda row: row[:16]):
            used = chunks = size = 0
            for row in rows:
                _, in_use, amount = unpack(row)
                if in_use:
                    used += amount
                else:
                    chunks += 1
                    size += amount
            yield pack_key.hex(), (used, chunks, size)
