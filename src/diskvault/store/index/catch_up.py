"""Bringing an index up to date with the packs its repository holds, by listing ``packs/``
and reading only the footers of packs it does not know (several range reads in flight).
For an object store the index is a cache in the user's cache folder: an empty one is
rebuilt this way, one that is behind (another host wrote) catches up on open. For a local
repository it indexes the packs a killed writer left behind.

An index is trusted only while what it knows still exists. One that names another copy of
the repository (the id and place it recorded differ: a copied folder, a cache moved
between machines) or knows packs the repository no longer has (compacted elsewhere, or the
repository was replaced by an older or foreign copy) is rebuilt from every pack's footer,
with every table kept beside it, never patched: a stale cache is never used.

Two processes may catch up one index at once: LMDB serialises their write transactions,
adding a pack twice writes the same entries, and a pack is only taken for vanished if it
was known *before* the listing began -- a pack committed meanwhile (by a writer on this
host, whose upload completed before its commit) is never taken for a vanished one. A
rebuild is another matter: it holds the index's fill lock exclusively, and a catch-up
holds it shared from reading what the index knows until the packs it lacked are in, so a
catch-up waits for a rebuild beside it and then works on the rebuilt index
(generations.py); processes that only read the index see the old one until then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...errors import CorruptData, IndexRebuildRefused
from ..format.packs import PackEntry, PackStore, read_footer
from ..pipeline import ordered_map
from .bulk_load import load_packs, rebuild
from .chunk_index import ChunkIndex

log = logging.getLogger(__name__)

FOOTER_READS_IN_FLIGHT = 16  # requests in flight on an object store; cheap on a local disk


@dataclass
class CatchUp:
    """What a catch-up did."""
    packs_added: int = 0
    damaged: int = 0           # packs whose footer could not be read (or gone meanwhile)
    rebuilt_because: str | None = None  # why the index was distrusted and rebuilt


@dataclass(frozen=True)
class IndexState:
    """What an index knows, beside what its repository holds: enough to judge it."""
    identity: str | None   # as the index recorded it
    known: set[str]        # its packs, read before the listing
    listed: set[str]       # the repository's packs

    def distrust(self, identity: str, vanished_is_stale: bool = True) -> str | None:
        """Why an index must not be used for the repository ``identity``; None if it may.
        Without ``vanished_is_stale`` packs it knows that are gone are left to the caller."""
        if self.identity is not None and self.identity != identity:
            return f"it was built from another copy of the repository ({self.identity})"
        vanished = self.known - self.listed
        if vanished and vanished_is_stale:
            return (f"it knows {len(vanished)} packs the repository no longer has (compacted "
                    f"elsewhere, or the repository was replaced by an older or foreign copy)")
        return None

    def is_current(self, identity: str) -> bool:
        """Trusted, recorded as this repository's, and knowing every pack."""
        return self.identity == identity and self.known == self.listed


def index_state(index: ChunkIndex, packs: PackStore) -> IndexState:
    known = index.known_packs()  # before listing: see the module's docstring
    return IndexState(index.identity(), known, set(packs.list()))


def catch_up(index: ChunkIndex, packs: PackStore, identity: str,
             state: IndexState | None = None, vanished_is_stale: bool = True,
             may_rebuild: bool = True) -> CatchUp:
    """Index every listed pack the index does not know, or rebuild it from every pack if
    it is not to be trusted for ``identity`` (see the module's docstring); IndexRebuildRefused
    instead, with nothing changed, unless ``may_rebuild``. ``state``: one just read
    (index_state) of a read-only index, which no one here fills; else it is read here,
    under the fill lock."""
    outcome = CatchUp()
    with index.fill_lock(exclusive=False):
        state = state or index_state(index, packs)
        outcome.rebuilt_because = state.distrust(identity, vanished_is_stale)
        if not outcome.rebuilt_because:
            _add_missing(index, packs, identity, state, outcome)
            return outcome
    if not may_rebuild:
        raise IndexRebuildRefused(f"the index at {index.path} would have to be rebuilt "
                                  f"({outcome.rebuilt_because}) while maintenance relied on "
                                  f"it: it stopped here, with nothing more changed; run it "
                                  f"again")
    # Not a warning: nothing is lost and there is nothing to do (a copied folder and a
    # compaction on another host are ordinary; a restored bucket cannot be told apart).
    log.info("the index at %s is rebuilt from the packs of %s: %s", index.path,
             packs.backend.location, outcome.rebuilt_because)
    # Unless another process rebuilt it meanwhile (then this one waited for it to end).
    rebuild(index, _footers(packs, sorted(state.listed), outcome), identity,
            expected=(state.identity, state.known))
    with index.fill_lock(exclusive=False):
        # A writer beside it that committed a pack after the listing lost it to the
        # rebuild (or the rebuild was another process's): a second listing puts it back.
        _add_missing(index, packs, identity, index_state(index, packs), outcome)
    return outcome


def _add_missing(index: ChunkIndex, packs: PackStore, identity: str, state: IndexState,
                 outcome: CatchUp) -> None:
    if state.identity is None:
        index.record_identity(identity)
    load_packs(index, _footers(packs, sorted(state.listed - state.known), outcome))

def _footers(packs: PackStore, pack_ids: list[str],
             outcome: CatchUp) -> Iterator[tuple[str, list[PackEntry], int]]:
    """The footers of ``pack_ids`` that can be read, several reads in flight; counted in
    ``outcome``. At most twice as many footers as reads in flight wait to be indexed
    (Executor.map would read them all ahead: a rebuild's memory grew with the chunk count)."""
    with ThreadPoolExecutor(FOOTER_READS_IN_FLIGHT, thread_name_prefix="footers") as readers:
        for _, found in ordered_map(readers, lambda pack_id: _footer(packs, pack_id), pack_ids,
                                    window=2 * FOOTER_READS_IN_FLIGHT):
            if found is None:
                outcome.damaged += 1
                continue
            outcome.packs_added += 1
            yield found


def _footer(packs: PackStore, pack_id: str) -> tuple[str, list[PackEntry], int] | None:
    try:
        size = packs.size(pack_id)
        return pack_id, read_footer(packs, pack_id, size), size
    except CorruptData as error:
        log.warning("pack %s is damaged and was not indexed: %s", pack_id, error)
    except FileNotFoundError:
        pass  # deleted since the listing (a compaction elsewhere): nothing to index
    return None
