"""The index's writes in bulk, for a rebuild or a catch-up of many packs (bulk_load.py):
into a spare generation of the tables (generations.py) that is made live in one small
transaction, in bounded transactions of records in digest order. A part of ChunkIndex."""

from __future__ import annotations

from collections.abc import Iterable

from ..pipeline import batches
from . import generations
from .generations import META_TABLE, live_generation, table_names
from .records import LOCATION

IDENTITY_KEY = b"identity"  # the repository the index was built from (ChunkIndex.identity)
# A write transaction keeps a copy of every page it dirties in memory until it commits (and
# LMDB keeps the freed copies for the next one), and refuses one that dirties ~130,000
# (MDB_TXN_FULL). A write in digest order dirties a page per ~50 entries, one at a random
# place a page (4 KiB) each: this many writes per transaction bound that memory to 64 MiB at
# worst (digests spread over a big index) and to about 1 MiB when appended in order.
WRITES_PER_TRANSACTION = 1 << 14


class BulkWrites:
    """ChunkIndex's bulk writes (it provides env, _meta, _live and _writing)."""

    def begin_rebuild(self, expected: tuple[str | None, set[str]] | None = None
                      ) -> int | None:
        """Empty the spare generation (a killed rebuild may have half filled it) and return
        it, to be filled and then made live (switch_generation); with the fill lock held
        exclusively. With ``expected`` (identity, known packs) only if the live generation
        still holds exactly those: of two processes that distrusted the index at once, the
        second finds it rebuilt and catches up instead (None: nothing done)."""
        with self._writing(), self.env.begin(write=True) as txn:
            live = live_generation(txn, self._meta)
            if expected is not None:
                identity = txn.get(IDENTITY_KEY, db=self._meta)
                packs = self._live(txn, live)[1]
                known = {key.hex() for key in txn.cursor(db=packs).iternext(values=False)}
                if (None if identity is None else identity.decode("utf-8", "replace"),
                        known) != expected:
                    return None
            spare = generations.spare(live)
            for table in self._live(txn, spare):
                txn.drop(table, delete=False)
        return spare

    def switch_generation(self, generation: int, identity: str | None) -> None:
        """Make the filled ``generation`` live, recorded as built from ``identity``, and
        empty the old one and every table kept beside them (maintenance's counts, which
        described the old index), in one transaction: every process sees the old index
        or this one. Freeing the old tables' pages reads only their branch pages."""
        keep = {META_TABLE, *table_names(generation)}
        with self._writing(), self.env.begin(write=True) as txn:
            generations.make_live(txn, self._meta, generation)
            if identity is None:
                txn.delete(IDENTITY_KEY, db=self._meta)
            else:
                txn.put(IDENTITY_KEY, identity.encode(), db=self._meta)
            for name in list(txn.cursor().iternext(values=False)):
                if name not in keep:
                    txn.drop(self.env.open_db(name, txn=txn, create=False), delete=False)

    def put_in_order(self, records: Iterable[bytes], generation: int | None = None) -> None:
        """Index (digest + encoded location) records, given in digest order and one per
        digest, WRITES_PER_TRANSACTION to a transaction, into ``generation`` (None: the
        live one); a digest already indexed keeps its location. Where a batch comes after
        the last key, LMDB appends it (pages filled, no search): a rebuild's cost is then
        linear in the chunks."""
        size = LOCATION.size
        for group in batches(records, WRITES_PER_TRANSACTION):
            with self._writing(), self.env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._live(txn, generation)[0])
                append = not cursor.last() or cursor.key() < group[0][:-size]
                cursor.putmulti(((r[:-size], r[-size:]) for r in group), overwrite=False,
                                append=append)

    def put_pack_rows(self, rows: Iterable[tuple[bytes, bytes]],
                      generation: int | None = None) -> None:
        """Record packs as indexed ((16-byte id, PACK_STATS) pairs, in id order) in
        ``generation`` (None: the live one): only once every location in them is committed
        (put_in_order)."""
        for group in batches(rows, WRITES_PER_TRANSACTION):
            with self._writing(), self.env.begin(write=True) as txn:
                txn.cursor(db=self._live(txn, generation)[1]).putmulti(group)
