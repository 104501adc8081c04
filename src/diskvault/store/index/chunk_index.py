"""The LMDB index: digest -> chunk location, plus per-pack statistics.

An accelerator only: everything in it can be rebuilt from the pack footers.
Entries are committed only after the pack they point into is durable.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb

from ...errors import CorruptData
from ..format.packs import PackEntry
from ..host.durable import make_private_folder
from ..pipeline import batches
from .probe import DATA_FILE, META_TABLE, cut_off, open_environment, open_tables, reader_crashes

LOCATION = struct.Struct("<16sQIIB")
LOCATION_PLACE = struct.Struct("<16sQ")  # how a location begins: pack and offset
PACK_STATS = struct.Struct("<QQQI")
LMDB_FILES = ("data.mdb", "lock.mdb")
DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError,
                 lmdb.BadValsizeError, struct.error)
IDENTITY_KEY = b"identity"  # the repository the index was built from (see identity())
# A write transaction keeps a copy of every page it dirties in memory until it commits (and
# LMDB keeps the freed copies for the next one), and refuses one that dirties ~130,000
# (MDB_TXN_FULL). A write in digest order dirties a page per ~50 entries, one at a random
# place a page (4 KiB) each: this many writes per transaction bound that memory to 64 MiB at
# worst (digests spread over a big index) and to about 1 MiB when appended in order.
WRITES_PER_TRANSACTION = 1 << 14
READ_AHEAD_MAX_BYTES = 256 * 1024 * 1024  # read_ahead: a data file up to this size


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: str
    offset: int
    stored_size: int
    raw_size: int
    flags: int

    def entry(self, digest: bytes) -> PackEntry:
        """The record as its pack's footer lists it: what the index knows of a pack whose
        footer is lost or not read."""
        return PackEntry(digest, self.offset, self.stored_size, self.raw_size, self.flags)


@dataclass(frozen=True)
class PackStats:
    file_size: int
    stored_bytes: int
    raw_bytes: int
    records: int


REPAIR_HINT = "run 'diskvault check --repair' to rebuild it from the packs"
LOCK_FILE = "lock.mdb"


def index_damaged(path: Path, detail: object) -> CorruptData:
    """The one error for an index LMDB cannot read, or whose contents do not decode."""
    return CorruptData(f"index at {path} is damaged ({detail}); {REPAIR_HINT}")


def _writable(path: Path) -> bool:
    """Whether this process may change the environment (access() also answers EROFS)."""
    return all(os.access(file, os.W_OK) for file in (path, path / DATA_FILE, path / LOCK_FILE)
               if file.exists())


def _decode_location(value: bytes) -> ChunkLocation:
    pack, offset, stored, raw, flags = LOCATION.unpack(value)
    return ChunkLocation(pack.hex(), offset, stored, raw, flags)


def encode_location(pack_key: bytes, entry: PackEntry) -> bytes:
    return LOCATION.pack(pack_key, entry.offset, entry.stored_size, entry.raw_size, entry.flags)


FINGERPRINT_MASK = (1 << 64) - 1


def fingerprint(pack_id: str, entries: Iterable[PackEntry]) -> int:
    """An order-free sum over the index entries these records would have: equal to the
    pack's fingerprint in ``pack_fingerprints`` when the index points at exactly these
    records (a process's own hash: compare only within one process)."""
    pack_key = bytes.fromhex(pack_id)
    return sum(hash(entry.digest + encode_location(pack_key, entry))
               for entry in entries) & FINGERPRINT_MASK


def is_index_error(error: BaseException) -> bool:
    """An error of LMDB itself (a full disk's short write may come as one)."""
    return isinstance(error, lmdb.Error)


class ChunkIndex:
    """One LMDB environment with two tables: ``chunks`` and ``packs``. Every read turns
    LMDB's errors and undecodable values into CorruptData that sends the user to repair."""

    def __init__(self, path: Path, readonly: bool = False, probe: bool = True):
        self.path = path
        # Read-only media, or a user who may read but not write: no lock file either
        # (registering a reader writes to it). No writer can run on read-only media;
        # beside another user's writer every chunk read is still verified by digest.
        if not readonly:
            make_private_folder(path)
        self.readonly = readonly or not _writable(path)
        for name in LMDB_FILES:  # LMDB opens them following links: refuse a planted one
            if (path / name).is_symlink():
                raise CorruptData(f"index file {path / name} is a symbolic link, which "
                                  f"diskvault never writes through; run 'diskvault check "
                                  f"--repair' to set the index aside and rebuild it")
        # A raised error is left to the open below, which reports it; a crash is not.
        if probe and (path / DATA_FILE).exists() and reader_crashes(path, self.readonly):
            raise index_damaged(path, "opening it crashed the reader (damaged pages)")
        with self._reading():
            self.env = open_environment(path, self.readonly)
            self._check_file_size()
            self._chunks, self._packs, self._meta = open_tables(self.env, self.readonly)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (lmdb.Error, struct.error) as error:
            raise index_damaged(self.path, error) from None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Damage met while writing becomes CorruptData; other errors (an I/O error on a
        full disk) stay as they are, for the caller to report as such."""
        try:
            yield
        except DAMAGE_ERRORS as error:
            raise index_damaged(self.path, error) from None

    def _check_file_size(self) -> None:
        """A data file shorter than the pages its meta page claims (cut off) would be read
        past its end through the memory map: SIGBUS, not an error. Refuse it first."""
        sizes = cut_off(self.env, self.path)
        if sizes is not None:
            actual, needed = sizes
            raise index_damaged(self.path, f"{DATA_FILE} is {actual} bytes, its pages need "
                                           f"{needed}: it was cut off")

    def table_sizes(self) -> tuple[int, int]:
        """Entries in ``chunks`` and ``packs`` (reads both tables' roots)."""
        with self._reading(), self.env.begin() as txn:
            return txn.stat(self._chunks)["entries"], txn.stat(self._packs)["entries"]

    def close(self) -> None:
        self.env.close()

    def read_ahead(self) -> None:
        """Start reading the data file into the page cache in the background, if it is at
        most READ_AHEAD_MAX_BYTES: a whole-image backup or restore then looks chunks up in
        memory, instead of faulting the pages in one by one from a cold disk (LMDB maps the
        file for random reads). A larger index is left to fault in what it needs."""
        try:
            fd = os.open(self.path / DATA_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # not there yet: nothing to read
        try:
            size = os.fstat(fd).st_size
            if size <= READ_AHEAD_MAX_BYTES:
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def lookup(self, digest: bytes, txn: lmdb.Transaction | None = None) -> ChunkLocation | None:
        with self._reading():
            if txn is None:
                with self.env.begin() as own:
                    value = own.get(digest, db=self._chunks)
            else:
                value = txn.get(digest, db=self._chunks)
            return None if value is None else _decode_location(value)

    def are_indexed(self, digests: Sequence[bytes]) -> list[bool]:
        """For each digest, whether the index holds it: one read transaction serves them all."""
        with self._reading(), self.env.begin(buffers=True) as txn:
            get, chunks = txn.get, self._chunks
            return [get(digest, db=chunks) is not None for digest in digests]

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry], file_size: int) -> None:
        """Commit a durable pack's entries; a digest already indexed keeps its location."""
        with self.env.begin(write=True) as txn:
            self._put_pack(txn, pack_id, entries, file_size, overwrite=False)

    def add_relocated_pack(self, pack_id: str, entries: Iterable[PackEntry],
                           file_size: int) -> None:
        """Commit a durable pack of copies made by compaction: its records become the
        location of their digests, in one transaction."""
        with self.env.begin(write=True) as txn:
            self._put_pack(txn, pack_id, entries, file_size, overwrite=True)

    def identity(self) -> str | None:
        """The repository this index was built from (its id and place), None if never
        recorded: an index found beside another repository is not to be trusted."""
        with self._reading(), self.env.begin() as txn:
            value = txn.get(IDENTITY_KEY, db=self._meta)
        return None if value is None else value.decode("utf-8", "replace")

    def record_identity(self, identity: str) -> None:
        with self._writing(), self.env.begin(write=True) as txn:
            txn.put(IDENTITY_KEY, identity.encode(), db=self._meta)

    def clear(self, expected: tuple[str | None, set[str]] | None = None) -> bool:
        """Empty every table -- locations, packs, and every table kept beside them
        (maintenance's counts) -- and forget the identity, in one transaction. With
        ``expected`` (identity, known packs) only if the index still holds exactly those:
        of two processes that distrusted it at once, the second does not empty the tables
        the first is filling again (it catches up instead). Returns whether it emptied."""
        with self._writing(), self.env.begin(write=True) as txn:
            if expected is not None:
                identity = txn.get(IDENTITY_KEY, db=self._meta)
                known = {key.hex() for key in txn.cursor(db=self._packs).iternext(values=False)}
                if (None if identity is None else identity.decode("utf-8", "replace"),
                        known) != expected:
                    return False
            for name in list(txn.cursor().iternext(values=False)):
                if name != META_TABLE:
                    txn.drop(self.env.open_db(name, txn=txn, create=False), delete=False)
            txn.delete(IDENTITY_KEY, db=self._meta)
        return True

    def put_in_order(self, records: Iterable[bytes]) -> None:
        """Index (digest + encoded location) records, given in digest order and one per
        digest, WRITES_PER_TRANSACTION to a transaction; a digest already indexed keeps its
        location. Where a batch comes after the last key, LMDB appends it (pages filled,
        no search): a rebuild's cost is then linear in the chunks."""
        size = LOCATION.size
        for group in batches(records, WRITES_PER_TRANSACTION):
            with self._writing(), self.env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._chunks)
                append = not cursor.last() or cursor.key() < group[0][:-size]
                cursor.putmulti(((r[:-size], r[-size:]) for r in group), overwrite=False,
                                append=append)

    def put_pack_rows(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Record packs as indexed ((16-byte id, PACK_STATS) pairs, in id order): only
        once every location in them is committed (put_in_order)."""
        for group in batches(rows, WRITES_PER_TRANSACTION):
            with self._writing(), self.env.begin(write=True) as txn:
                txn.cursor(db=self._packs).putmulti(group)

    def _put_pack(self, txn: lmdb.Transaction, pack_id: str, entries: Iterable[PackEntry],
                  file_size: int, overwrite: bool) -> None:
        pack_key = bytes.fromhex(pack_id)
        stored = raw = records = 0
        for entry in entries:
            txn.put(entry.digest, encode_location(pack_key, entry), db=self._chunks,
                    overwrite=overwrite)
            stored += entry.stored_size
            raw += entry.raw_size
            records += 1
        txn.put(pack_key, PACK_STATS.pack(file_size, stored, raw, records), db=self._packs)

    def point_at(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        """Make these records of a pack (still indexed) the location of their digests: the
        copy they pointed at is gone. The pack's statistics stay as they are."""
        pack_key = bytes.fromhex(pack_id)
        with self.env.begin(write=True) as txn:
            for entry in entries:
                txn.put(entry.digest, encode_location(pack_key, entry), db=self._chunks)

    def locate_many(self, digests: Iterable[bytes]
                    ) -> Iterator[tuple[bytes, ChunkLocation | None]]:
        """Each digest with its location (None: not indexed), from one read transaction."""
        with self._reading(), self.env.begin() as txn:
            for digest in digests:
                value = txn.get(digest, db=self._chunks)
                yield digest, None if value is None else _decode_location(value)

    def indexed_here(self, pack_id: str, entries: Sequence[PackEntry]) -> list[bool]:
        """For each record of this pack, whether the index points at exactly it (pack and
        offset): one read transaction, nothing decoded (compaction asks it of every record
        of every pack it reviews)."""
        pack_key = bytes.fromhex(pack_id)
        place = LOCATION_PLACE.pack
        with self._reading(), self.env.begin(buffers=True) as txn:
            get, chunks = txn.get, self._chunks
            return [(value := get(entry.digest, db=chunks)) is not None
                    and value[:LOCATION_PLACE.size] == place(pack_key, entry.offset)
                    for entry in entries]

    def packs_holding(self, digests: Iterable[bytes]) -> Iterator[bytes | None]:
        """For each digest, the id (16 bytes) of the pack the index puts it in, or None:
        one read transaction, nothing else decoded (a pass over every chunk in use)."""
        with self._reading(), self.env.begin(buffers=True) as txn:
            get, chunks = txn.get, self._chunks
            for digest in digests:
                value = get(digest, db=chunks)
                yield None if value is None else bytes(value[:16])

    def remove_locations(self, packs: dict[str, list[PackEntry]]) -> int:
        """Drop the index entries that point at these records of these packs (entries that
        point elsewhere stay), in digest order, WRITES_PER_TRANSACTION records to a
        transaction; returns how many were dropped. A kill between two leaves the index
        pointing at fewer of these records, never at anything that is not there."""
        records = sorted(((entry.digest, bytes.fromhex(pack_id), entry.offset)
                          for pack_id, entries in packs.items() for entry in entries))
        removed = 0
        for group in batches(records, WRITES_PER_TRANSACTION):
            with self.env.begin(write=True) as txn:
                for digest, pack_key, offset in group:
                    value = txn.get(digest, db=self._chunks)
                    if value is not None and LOCATION.unpack(value)[:2] == (pack_key, offset):
                        txn.delete(digest, db=self._chunks)
                        removed += 1
        return removed

    def sweep_out(self, pack_ids: Collection[str], unless_in=None,
                  before_each: Callable[[], None] = lambda: None) -> set[str]:
        """Drop every entry that points into these packs, except (``unless_in``: the handle
        of a table keyed by digest, in this environment) those of digests that table holds;
        returns the packs such an entry was kept in. One pass over the index in key order,
        deciding per entry and deleting through the cursor, WRITES_PER_TRANSACTION deletions
        to a transaction (``before_each`` is called before each): linear in the index, no
        lookup from the root per record. A kill between two leaves the index pointing at
        fewer of these records, never at anything that is not there."""
        keys = {bytes.fromhex(pack_id) for pack_id in pack_ids}
        kept: set[bytes] = set()
        resume: bytes | None = b""
        while resume is not None and keys:
            before_each()
            with self._writing(), self.env.begin(write=True) as txn:
                resume = self._sweep_some(txn, keys, unless_in, resume, kept)
        return {key.hex() for key in kept}

    def _sweep_some(self, txn: lmdb.Transaction, keys: set[bytes], unless_in,
                    start: bytes, kept: set[bytes]) -> bytes | None:
        """One transaction of sweep_out from ``start``: where the next one starts, or None
        at the end of the index."""
        cursor = txn.cursor(db=self._chunks)
        used = None if unless_in is None else txn.cursor(db=unless_in)
        found = cursor.set_range(start) if start else cursor.first()
        deleted = 0
        while found:
            digest, value = cursor.item()
            pack_key = value[:16]
            if pack_key not in keys:
                found = cursor.next()
            elif used is not None and used.set_key(digest):  # in key order: near the last
                kept.add(pack_key)
                found = cursor.next()
            elif deleted == WRITES_PER_TRANSACTION:
                return digest
            else:
                cursor.delete()  # and on to the next entry
                deleted += 1
                found = cursor.key() != b""  # digests are never empty; b"": past the end
        return None

    def remove_packs(self, pack_ids: Iterable[str]) -> None:
        """Forget packs' statistics once their files are gone."""
        with self.env.begin(write=True) as txn:
            for pack_id in pack_ids:
                txn.delete(bytes.fromhex(pack_id), db=self._packs)

    def known_packs(self) -> set[str]:
        with self._reading(), self.env.begin() as txn:
            return {key.hex() for key in txn.cursor(db=self._packs).iternext(values=False)}

    def pack_stats(self) -> Iterator[tuple[str, PackStats]]:
        with self._reading(), self.env.begin() as txn:
            for key, value in txn.cursor(db=self._packs):
                yield key.hex(), PackStats(*PACK_STATS.unpack(value))

    def iter_chunks(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        """Every (digest, location), in digest order, from one read transaction."""
        with self._reading(), self.env.begin() as txn:
            for digest, value in txn.cursor(db=self._chunks):
                yield digest, _decode_location(value)

    def pack_fingerprints(self) -> dict[str, tuple[int, int]]:
        """Per pack, how many index entries point into it and their fingerprint (see
        ``fingerprint``): one sequential pass, nothing decoded, so that check compares a
        pack's footer with the index without a lookup per record."""
        counts: dict[bytes, int] = {}
        sums: dict[bytes, int] = {}
        with self._reading(), self.env.begin() as txn:
            for digest, value in txn.cursor(db=self._chunks):
                pack_key = value[:16]
                counts[pack_key] = counts.get(pack_key, 0) + 1
                sums[pack_key] = sums.get(pack_key, 0) + hash(digest + value)
        return {key.hex(): (count, sums[key] & FINGERPRINT_MASK)
                for key, count in counts.items()}

    def locations_in(self, pack_ids: Collection[str]) -> dict[str, list[tuple[bytes,
                                                                          ChunkLocation]]]:
        """Every (digest, location) that points into these packs: one pass over the index,
        for the few packs whose entries must be named one by one."""
        keys = {bytes.fromhex(pack_id) for pack_id in pack_ids}
        found: dict[str, list[tuple[bytes, ChunkLocation]]] = {p: [] for p in pack_ids}
        with self._reading(), self.env.begin() as txn:
            for digest, value in txn.cursor(db=self._chunks):
                if value[:16] in keys:
                    location = _decode_location(value)
                    found[location.pack_id].append((digest, location))
        return found

    def chunk_count(self) -> int:
        with self._reading(), self.env.begin() as txn:
            return txn.stat(self._chunks)["entries"]

    def read_everything(self) -> None:
        """Read every page of every table and decode every location and statistic:
        CorruptData if any of it is damaged (repair's test of whether to rebuild)."""
        for _ in self.iter_chunks():
            pass
        for _ in self.pack_stats():
            pass
        with self._reading(), self.env.begin() as txn:
            for name in txn.cursor().iternext(values=False):
                for _ in txn.cursor(db=self.env.open_db(name, txn=txn, create=False)):
                    pass

