"""Dropping the index entries that point into packs about to be deleted, by a pass over
the whole index or by a lookup of listed digests: the same decision per entry either way.
A part of ChunkIndex."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator

import lmdb

from .bulk_writes import WRITES_PER_TRANSACTION


class Sweeps:
    """ChunkIndex's sweeps (it provides env, _live and _writing)."""

    def sweep_out(self, pack_ids: Collection[str], unless_in=None,
                  before_each: Callable[[], None] = lambda: None,
                  listed: Iterable[bytes] | None = None) -> set[str]:
        """Drop every entry that points into these packs, except (``unless_in``: the handle
        of a table keyed by digest, in this environment) those of digests that table holds;
        returns the packs such an entry was kept in. Without ``listed``, one pass over the
        index in key order, deciding per entry and deleting through the cursor: linear in
        the index, no lookup from the root per record. With ``listed`` (every digest these
        packs' footers hold, in ascending order), only those entries are visited, each
        found from the root: for few packs in a large index. Either way the same decision
        per entry (_drops), WRITES_PER_TRANSACTION deletions to a transaction
        (``before_each`` is called before each). A kill between two leaves the index
        pointing at fewer of these records, never at anything that is not there."""
        keys = {bytes.fromhex(pack_id) for pack_id in pack_ids}
        kept: set[bytes] = set()
        if listed is None:
            more, resume = self._sweep_some, b""
        else:
            digests = iter(listed)
            more = functools.partial(self._drop_listed_some, rest=digests)
            resume = next(digests, None)
        while resume is not None and keys:
            before_each()
            with self._writing(), self.env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._live(txn)[0])
                used = None if unless_in is None else txn.cursor(db=unless_in)
                resume = more(cursor, keys, used, resume, kept)
        return {key.hex() for key in kept}

    @staticmethod
    def _drops(digest: bytes, value: bytes, keys: set[bytes], used, kept: set[bytes]) -> bool:
        """Whether sweep_out drops this entry: it points into one of the packs (``keys``)
        and its digest is not in ``used`` (a cursor on unless_in, or None); an entry kept
        for being in use adds its pack to ``kept``."""
        pack_key = value[:16]
        if pack_key not in keys:
            return False
        if used is not None and used.set_key(digest):  # in key order: near the last
            kept.add(pack_key)
            return False
        return True

    def _sweep_some(self, cursor: lmdb.Cursor, keys: set[bytes], used, start: bytes,
                    kept: set[bytes]) -> bytes | None:
        """One transaction of the full sweep from ``start``: where the next one starts, or
        None at the end of the index."""
        found = cursor.set_range(start) if start else cursor.first()
        deleted = 0
        drops = self._drops
        while found:
            digest, value = cursor.item()
            # Most entries point elsewhere: skipped without a call (a fifth of the pass).
            if value[:16] not in keys or not drops(digest, value, keys, used, kept):
                found = cursor.next()
            elif deleted == WRITES_PER_TRANSACTION:
                return digest
            else:
                cursor.delete()  # and on to the next entry
                deleted += 1
                found = cursor.key() != b""  # digests are never empty; b"": past the end
        return None

    def _drop_listed_some(self, cursor: lmdb.Cursor, keys: set[bytes], used, first: bytes,
                          kept: set[bytes], rest: Iterator[bytes]) -> bytes | None:
        """One transaction of the listed sweep: ``first``, then the digests of ``rest``,
        each looked up from the root: the digest the next transaction starts with, or None
        once ``rest`` is exhausted."""
        deleted = 0
        drops = self._drops
        for digest in itertools.chain((first,), rest):
            if cursor.set_key(digest) and drops(digest, cursor.value(), keys, used, kept):
                if deleted == WRITES_PER_TRANSACTION:
                    return digest
                cursor.delete()
                deleted += 1
        return None
