"""Bringing an index up to date with the packs its repository holds, by listing ``packs/``
and reading only the footers of packs it does not know (several range reads in flight), and
forgetting packs that vanished. For an object store the index is a cache in the user's
cache folder: an empty one is rebuilt this way, one that is behind (another host wrote, or
compacted) catches up on open. For a local repository it indexes the packs a killed writer
left behind.

Two processes may catch up one cache at once: LMDB serialises their write transactions,
adding a pack twice writes the same entries, and a pack is only forgotten if it was known
*before* the listing began -- a pack committed meanwhile (by a writer on this host, whose
upload completed before its commit) is never taken for a vanished one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...errors import CorruptData
from ..format.packs import PackEntry, PackStore, read_footer
from ..pipeline import batches
from .chunk_index import ChunkIndex

log = logging.getLogger(__name__)

FOOTER_READS_IN_FLIGHT = 16  # requests in flight on an object store; cheap on a local disk
PACKS_PER_COMMIT = 64        # one LMDB commit (an fsync) for many packs


@dataclass
class CatchUp:
    """What a catch-up did."""
    packs_added: int = 0
    packs_forgotten: int = 0
    damaged: int = 0           # new packs whose footer could not be read


def catch_up(index: ChunkIndex, packs: PackStore, forget_vanished: bool) -> CatchUp:
    """Index every listed pack the index does not know; with ``forget_vanished``, drop the
    packs it knows that are no longer listed (first, so that a chunk a compaction moved
    elsewhere takes its new location)."""
    known = index.known_packs()  # before listing: see the module's docstring
    listed = set(packs.list())
    outcome = CatchUp()
    vanished = known - listed if forget_vanished else set()
    if vanished:
        dropped = index.forget_packs(vanished)
        outcome.packs_forgotten = len(vanished)
        log.info("forgot %d packs no longer in %s (%d chunk locations)", len(vanished),
                 packs.backend.location, dropped)
    new = sorted(listed - known)
    with ThreadPoolExecutor(FOOTER_READS_IN_FLIGHT, thread_name_prefix="footers") as readers:
        footers = readers.map(lambda pack_id: _footer(packs, pack_id), new)
        for batch in batches(footers, PACKS_PER_COMMIT):
            readable = [found for found in batch if found is not None]
            outcome.damaged += len(batch) - len(readable)
            # Newer packs win: a compaction's copy outlives the pack it was copied from.
            index.add_packs(readable, overwrite=forget_vanished)
            outcome.packs_added += len(readable)
    return outcome


def _footer(packs: PackStore, pack_id: str) -> tuple[str, list[PackEntry], int] | None:
    try:
        size = packs.size(pack_id)
        return pack_id, read_footer(packs, pack_id, size), size
    except CorruptData as error:
        log.warning("pack %s is damaged and was not indexed: %s", pack_id, error)
    except FileNotFoundError:
        pass  # deleted since the listing (a compaction elsewhere): nothing to index
    return None
