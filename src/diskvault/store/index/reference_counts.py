"""The reference counts compaction keeps beside the index, in the index's LMDB file (so a
lost index loses them too, which is safe: empty counts and an empty accounted set agree).

The tables and every transaction on them are here; what the counts mean and when they
change is maintenance's (maintenance/liveness.py). Each method is one transaction, so a
kill at any instant leaves the tables as before or after it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import lmdb

from .chunk_index import ChunkIndex

COUNT = struct.Struct("<I")
USAGE = struct.Struct("<QQ")  # a reviewed pack's unused and total bytes
TABLES = (b"refs", b"accounted", b"reviewed", b"doomed")


class ReferenceCounts:
    """``refs`` (digest -> count), ``accounted`` (block digests), ``reviewed`` (pack ->
    unused and total bytes, as of its last review) and ``doomed`` (packs whose live data
    was moved or died, deleted once no reader runs)."""

    def __init__(self, index: ChunkIndex, tables: list | None = None):
        self.index = index
        self._env = index.env
        self._refs, self._accounted, self._reviewed, self._doomed = (
            tables or [self._env.open_db(name) for name in TABLES])

    @classmethod
    def existing(cls, index: ChunkIndex):
        """The tables, opened without writing a byte, or None if no compact made them."""
        with index.env.begin() as txn:
            if any(txn.get(name) is None for name in TABLES):
                return None
        # Not inside that read transaction: a handle opened in one is not usable after it.
        return cls(index, [index.env.open_db(name, create=False) for name in TABLES])

    # -- counts ------------------------------------------------------------------------
    def accounted_in_order(self) -> Iterator[bytes]:
        """The accounted blocks, in digest order, from one read transaction."""
        with self._env.begin() as txn:
            yield from txn.cursor(db=self._accounted).iternext(values=False)

    def apply(self, deltas: Mapping[bytes, int], blocks: Iterable[bytes],
              accounted: bool) -> None:
        """Add ``deltas`` to the counts and mark ``blocks`` accounted (or no longer), in one
        transaction; the home pack of a chunk whose count drops to zero is reviewed again."""
        with self._env.begin(write=True) as txn:
            for digest, delta in sorted(deltas.items()):  # in order: fewer pages dirtied
                if self._add(txn, digest, delta) == 0:
                    self._unreview_home(txn, digest)
            for block in blocks:
                if accounted:
                    txn.put(block, b"", db=self._accounted)
                else:
                    txn.delete(block, db=self._accounted)

    def _add(self, txn: lmdb.Transaction, digest: bytes, delta: int) -> int:
        count = self._count(txn, digest) + delta
        if count > 0:
            txn.put(digest, COUNT.pack(count), db=self._refs)
        else:
            txn.delete(digest, db=self._refs)
        return max(count, 0)

    def _unreview_home(self, txn: lmdb.Transaction, digest: bytes) -> None:
        location = self.index.lookup(digest, txn)
        if location is not None:
            txn.delete(bytes.fromhex(location.pack_id), db=self._reviewed)

    def _count(self, txn: lmdb.Transaction, digest: bytes) -> int:
        value = txn.get(digest, db=self._refs)
        return 0 if value is None else COUNT.unpack(value)[0]

    def counts(self, digests: Sequence[bytes]) -> list[int]:
        """How many accounted blocks reference each of ``digests``."""
        with self._env.begin() as txn:
            return [self._count(txn, digest) for digest in digests]

    def used_digests(self) -> Iterator[bytes]:
        """Every chunk an accounted manifest block references, in digest order."""
        with self._env.begin() as txn:
            yield from txn.cursor(db=self._refs).iternext(values=False)

    def remove_unused_locations(self, pack_ids: Collection[str],
                                before_each: Callable[[], None],
                                listed: Iterable[bytes] | None = None) -> set[str]:
        """Drop the index entries into these packs whose chunk no accounted block references
        (ChunkIndex.sweep_out: one pass over the index, or only the ``listed`` digests of
        their footers, in order); returns the packs that hold the indexed copy of a chunk in
        use: they must stay."""
        return self.index.sweep_out(pack_ids, self._refs, before_each, listed)

    # -- pack review and deferred deletion ---------------------------------------------
    def packs_to_review(self, known_packs: Collection[str], threshold: float) -> list[str]:
        """Packs that may hold garbage: never reviewed, lost a chunk since, doomed, or
        reviewed with more unused bytes than ``threshold`` allows."""
        chosen = []
        with self._env.begin() as txn:
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
        with self._env.begin(write=True) as txn:
            for pack_id, usage in reviewed.items():
                txn.put(bytes.fromhex(pack_id), USAGE.pack(*usage), db=self._reviewed)
            for pack_id in doomed:
                key = bytes.fromhex(pack_id)
                txn.put(key, b"", db=self._doomed)
                txn.delete(key, db=self._reviewed)

    def doomed(self) -> set[str]:
        with self._env.begin() as txn:
            return {key.hex() for key in txn.cursor(db=self._doomed).iternext(values=False)}

    def forget_packs(self, pack_ids: Iterable[str]) -> None:
        """The packs' files are gone: drop them from every table."""
        with self._env.begin(write=True) as txn:
            for pack_id in pack_ids:
                key = bytes.fromhex(pack_id)
                txn.delete(key, db=self._doomed)
                txn.delete(key, db=self._reviewed)

    def reset(self) -> None:
        """Forget all derived state (repair): the next reconcile recounts from scratch."""
        with self._env.begin(write=True) as txn:
            for table in (self._refs, self._accounted, self._reviewed, self._doomed):
                txn.drop(table, delete=False)
