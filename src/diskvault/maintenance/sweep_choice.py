"""How compaction finds the index entries of the packs it deletes: a pass over the whole
index (ChunkIndex.sweep_out), or, when those packs hold few records beside the index, a
lookup of each digest their footers list, in digest order. The pass costs ~0.35 µs per
index entry whatever goes (~9 minutes at 100 TB, for one small pack); the lookups cost a
few µs per record listed (footer read, sort on disk, lookup from the root, deletion), so
they win below a share of the index (benchmarks/compact_few.py; docs/architecture.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..errors import CorruptData
from ..store.format.packs import PackEntry, read_footer
from ..store.index.catch_up import FOOTER_READS_IN_FLIGHT
from ..store.index.sorted_runs import DigestSet
from ..store.pipeline import ordered_map
from ..store.storage import Storage
from .scratch import scratch_folder

log = logging.getLogger(__name__)

# List the footers' digests when their records are at most this share of the index's
# entries. Measured at 10^6 entries (load 7): the pass 0.35 µs an entry, a listed record
# 3.7 µs (256 packs) to 8.6 µs (one pack), footer read and sort included: even at ~1/10.
# 1/16 leaves a margin for an index whose pages are cold (a random read per lookup, where
# the pass reads in order).
LISTED_SHARE = 1 / 16
# A footer read costs about as much as this many listed records on a local disk, on top of
# its records (on an object store a round trip costs more; reads overlap there).
RECORDS_PER_FOOTER_READ = 64


def worth_listing(listed_records: int, packs: int, index_entries: int) -> bool:
    """Whether looking up ``listed_records`` digests from ``packs`` footers costs less
    than a pass over ``index_entries``."""
    return listed_records + RECORDS_PER_FOOTER_READ * packs <= index_entries * LISTED_SHARE


@contextmanager
def listed_digests(storage: Storage, pack_ids: Sequence[str]) -> Iterator[DigestSet | None]:
    """Every digest the footers of these packs list, in order, each once (sorted runs on
    disk: a few footers in memory at a time); None when the full pass is the way: the packs
    hold too many records, one has no statistics, or a footer cannot be read (an entry
    into a pack about to be deleted must never be missed)."""
    records = storage.index.records_in(pack_ids)
    if records is None or not worth_listing(records, len(pack_ids),
                                            storage.index.chunk_count()):
        yield None
        return
    with DigestSet(scratch_folder()) as digests:
        yield digests if _add_footers(storage, pack_ids, digests) else None


def _add_footers(storage: Storage, pack_ids: Sequence[str], digests: DigestSet) -> bool:
    """Add the footers' digests, several reads in flight (one request each on an object
    store); False at the first footer that cannot be read."""
    footers = ordered_map(storage.pool, lambda pack_id: _footer(storage, pack_id), pack_ids,
                          FOOTER_READS_IN_FLIGHT)
    for _, entries in footers:
        if entries is None:
            return False
        for entry in entries:
            digests.add(entry.digest)
    return True


def _footer(storage: Storage, pack_id: str) -> list[PackEntry] | None:
    try:
        return read_footer(storage.packs, pack_id)
    except (CorruptData, FileNotFoundError) as error:
        log.warning("the footer of pack %s cannot be read (%s): its index entries are "
                    "found by a pass over the whole index", pack_id,
                    error if isinstance(error, CorruptData) else "it is missing")
        return None
