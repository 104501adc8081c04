"""Indexing many packs at once (a catch-up, a rebuild) in memory that does not grow with
the chunks, and in time linear in them.

Footers come in pack order, their digests at random. Put into LMDB as they come, each
lands on a random page and a batch dirties a page (4 KiB, held in memory until the commit)
per chunk; one big transaction held the whole index in memory (2.6 GiB for 10^7 chunks).
So the locations are sorted first, on disk (sorted_runs.py), and put in digest order in
bounded transactions: into an empty index they are appended. The packs' rows go in last,
once every location in them is committed, so a kill at any point leaves an index that
knows fewer packs than are listed, and the next catch-up indexes them again (a digest
already indexed keeps its location: the same one). A rebuild fills a spare generation
that no one reads until it is whole (generations.py). Memory: one sorted run, the merge's
read buffers and one transaction's pages, about 100 MiB at most whatever the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..format.packs import PackEntry
from .chunk_index import ChunkIndex
from .records import LOCATION, PACK_STATS, encode_location
from .sorted_runs import SortedRuns, first_of_each

DIGEST_BYTES = 32
ORDINAL_BYTES = 8  # the order records were met in: the first copy of a digest wins
PACK_KEY_BYTES = 16

PackFooter = tuple[str, list[PackEntry], int]  # pack id, its records, its file size


def load_packs(index: ChunkIndex, packs: Iterable[PackFooter],
               generation: int | None = None) -> None:
    """Index these durable packs (see the module docstring) into ``generation`` (None: the
    live one); where several records share a digest, the first met is indexed, as if they
    were added one by one in this order."""
    scratch = index.path  # private, on the index's disk; the runs have no names
    with SortedRuns(DIGEST_BYTES + ORDINAL_BYTES + LOCATION.size, scratch) as locations, \
            SortedRuns(PACK_KEY_BYTES + PACK_STATS.size, scratch) as rows:
        ordinal = 0
        for pack_id, entries, file_size in packs:
            pack_key = bytes.fromhex(pack_id)
            for entry in entries:
                locations.add(entry.digest + ordinal.to_bytes(ORDINAL_BYTES, "big")
                              + encode_location(pack_key, entry))
                ordinal += 1
            rows.add(pack_key + PACK_STATS.pack(
                file_size, sum(e.stored_size for e in entries),
                sum(e.raw_size for e in entries), len(entries)))
        index.put_in_order(_without_ordinal(first_of_each(locations, DIGEST_BYTES)),
                           generation)
        index.put_pack_rows(((row[:PACK_KEY_BYTES], row[PACK_KEY_BYTES:]) for row in rows),
                            generation)


def _without_ordinal(records: Iterator[bytes]) -> Iterator[bytes]:
    cut = DIGEST_BYTES + ORDINAL_BYTES
    for record in records:
        yield record[:DIGEST_BYTES] + record[cut:]


def rebuild(index: ChunkIndex, packs: Iterable[PackFooter], identity: str | None,
            expected: tuple[str | None, set[str]] | None = None) -> bool:
    """Replace everything the index holds with ``packs``, recorded as built from
    ``identity`` (the repository it now describes), unseen until whole: the spare
    generation is filled, then made live in one transaction (generations.py). Until then
    every process reads the old index, and a kill leaves it live, still distrusted, so the
    next open rebuilds again. Holds the fill lock exclusively: ``expected`` (see
    ChunkIndex.begin_rebuild) is judged once a rebuild beside it has ended; returns False,
    with nothing done, if the index no longer holds it."""
    with index.fill_lock(exclusive=True):
        generation = index.begin_rebuild(expected)
        if generation is None:
            return False
        load_packs(index, packs, generation)
        index.switch_generation(generation, identity)
    return True
