"""The LMDB index: digest -> chunk location, plus per-pack statistics.

An accelerator only: everything in it can be rebuilt from the pack footers.
Entries are committed only after the pack they point into is durable.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import lmdb

from ...errors import CorruptData
from ..format.packs import PackEntry
from ..host.durable import make_private_folder
from . import generations
from .generations import Tables, live_generation, open_tables, table_names
from .bulk_writes import IDENTITY_KEY, BulkWrites
from .sweeps import Sweeps
from .probe import DATA_FILE, cut_off, open_environment, reader_crashes
from .records import (LOCATION_PLACE, PACK_STATS, ChunkLocation,
                      PackStats, decode_location, encode_location, pack_stats_row)
from .sorted_runs import KeyedSums

LMDB_FILES = ("data.mdb", "lock.mdb")
DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError,
                 lmdb.BadValsizeError, struct.error)
READ_AHEAD_MAX_BYTES = 256 * 1024 * 1024  # read_ahead: a data file up to this size


REPAIR_HINT = "run 'diskvault check --repair' to rebuild it from the packs"
LOCK_FILE = "lock.mdb"


def index_damaged(path: Path, detail: object) -> CorruptData:
    """The one error for an index LMDB cannot read, or whose contents do not decode."""
    return CorruptData(f"index at {path} is damaged ({detail}); {REPAIR_HINT}")


def _writable(path: Path) -> bool:
    """Whether this process may change the environment (access() also answers EROFS)."""
    return all(os.access(file, os.W_OK)
               for file in (path, path / DATA_FILE, path / LOCK_FILE,
                            path / generations.LOCK_FILE)
               if file.exists())


class _Unopened(Exception):
    """A read-only index met a generation it has no handles for yet."""

    def __init__(self, generation: int):
        super().__init__(generation)
        self.generation = generation


def is_index_error(error: BaseException) -> bool:
    """An error of LMDB itself (a full disk's short write may come as one)."""
    return isinstance(error, lmdb.Error)


class ChunkIndex(BulkWrites, Sweeps):
    """One LMDB environment with two tables, ``chunks`` and ``packs``, in two generations
    (generations.py): every transaction uses the live one. Every read turns LMDB's errors
    and undecodable values into CorruptData that sends the user to repair."""

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
            self._meta, self._tables = open_tables(self.env, self.readonly)
        self._opening = threading.Lock()  # a read-only index opens a new generation late
        self._last_live: tuple[object, Tables | None] = (None, None)  # see _live

    def _live(self, txn: lmdb.Transaction, generation: int | None = None) -> Tables:
        """The (chunks, packs) handles of ``generation``, or of the live one as ``txn``
        sees it."""
        if generation is not None:
            return self._handles(generation)
        last_txn, tables = self._last_live  # many lookups share one transaction
        if last_txn is not txn:
            tables = self._handles(live_generation(txn, self._meta))
            self._last_live = (txn, tables)
        return tables

    def _handles(self, generation: int) -> Tables:
        try:
            return self._tables[generation]
        except KeyError:  # read-only, and made by another process since the open
            raise _Unopened(generation) from None

    @contextmanager
    def _snapshot(self, buffers: bool = False
                  ) -> Iterator[tuple[lmdb.Transaction, object, object]]:
        """A read transaction and the live generation's (chunks, packs) in it."""
        with self._reading():
            try:
                with self.env.begin(buffers=buffers) as txn:
                    chunks, packs = self._live(txn)
                    yield txn, chunks, packs
                    return
            except _Unopened as missing:
                self._open_generation(missing.generation)
            with self.env.begin(buffers=buffers) as txn:
                yield txn, *self._live(txn)

    def _open_generation(self, generation: int) -> None:
        """Open the tables of a generation another process made while this read-only
        index was open (outside any transaction: a handle is seen only by later ones)."""
        with self._opening:
            if generation not in self._tables:
                self._tables[generation] = tuple(self.env.open_db(name, create=False)
                                                 for name in table_names(generation))

    def fill_lock(self, exclusive: bool) -> AbstractContextManager[None]:
        """The lock every process filling this index holds (generations.fill_lock); a
        read-only index, which no one here fills, needs none."""
        if self.readonly:
            return nullcontext()
        return generations.fill_lock(self.path, exclusive)

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
        with self._snapshot() as (txn, chunks, packs):
            return txn.stat(chunks)["entries"], txn.stat(packs)["entries"]

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
        # Not through _snapshot: one lookup per chunk read is hot, and a generator-based
        # context manager costs as much as the lookup itself.
        with self._reading():
            if txn is None:
                try:
                    with self.env.begin() as own:
                        value = own.get(digest, db=self._live(own)[0])
                except _Unopened as missing:
                    self._open_generation(missing.generation)
                    return self.lookup(digest)
            else:
                value = txn.get(digest, db=self._live(txn)[0])
            return None if value is None else decode_location(value)

    def are_indexed(self, digests: Sequence[bytes]) -> list[bool]:
        """For each digest, whether the index holds it: one read transaction serves them all."""
        with self._snapshot(buffers=True) as (txn, chunks, _):
            get = txn.get
            return [get(digest, db=chunks) is not None for digest in digests]

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry], file_size: int) -> None:
        """Commit a durable pack's entries; a digest already indexed keeps its location."""
        self.add_packs([(pack_id, list(entries), file_size)])

    def add_packs(self, packs: Sequence[tuple[str, Sequence[PackEntry], int]]) -> None:
        """Commit durable packs' (id, entries, file size) in one transaction; a digest
        already indexed keeps its location, and of two of these packs holding one digest
        the first gives it. A transaction writes (and syncs) every page it touches, and in
        a large index each new digest touches a page of its own: packs committed together
        share more of those pages. (Sorting the entries first saves nothing measurable.)"""
        rows = ((entry.digest, encode_location(bytes.fromhex(pack_id), entry))
                for pack_id, entries, _ in packs for entry in entries)
        with self.env.begin(write=True) as txn:
            chunks, pack_table = self._live(txn)
            txn.cursor(db=chunks).putmulti(rows, overwrite=False)
            for pack_id, entries, file_size in packs:
                txn.put(bytes.fromhex(pack_id), pack_stats_row(entries, file_size),
                        db=pack_table)

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

    def _put_pack(self, txn: lmdb.Transaction, pack_id: str, entries: Iterable[PackEntry],
                  file_size: int, overwrite: bool) -> None:
        pack_key = bytes.fromhex(pack_id)
        chunks, packs = self._live(txn)
        entries = list(entries)
        for entry in entries:
            txn.put(entry.digest, encode_location(pack_key, entry), db=chunks,
                    overwrite=overwrite)
        txn.put(pack_key, pack_stats_row(entries, file_size), db=packs)

    def locate_many(self, digests: Iterable[bytes]
                    ) -> Iterator[tuple[bytes, ChunkLocation | None]]:
        """Each digest with its location (None: not indexed), from one read transaction."""
        with self._snapshot() as (txn, chunks, _):
            for digest in digests:
                value = txn.get(digest, db=chunks)
                yield digest, None if value is None else decode_location(value)

    def indexed_here(self, pack_id: str, entries: Sequence[PackEntry]) -> list[bool]:
        """For each record of this pack, whether the index points at exactly it (pack and
        offset): one read transaction, nothing decoded (compaction asks it of every record
        of every pack it reviews)."""
        pack_key = bytes.fromhex(pack_id)
        place = LOCATION_PLACE.pack
        with self._snapshot(buffers=True) as (txn, chunks, _):
            get = txn.get
            return [(value := get(entry.digest, db=chunks)) is not None
                    and value[:LOCATION_PLACE.size] == place(pack_key, entry.offset)
                    for entry in entries]

    def packs_holding(self, digests: Iterable[bytes]) -> Iterator[bytes | None]:
        """For each digest, the id (16 bytes) of the pack the index puts it in, or None:
        one read transaction, nothing else decoded (a pass over every chunk in use)."""
        with self._snapshot(buffers=True) as (txn, chunks, _):
            get = txn.get
            for digest in digests:
                value = get(digest, db=chunks)
                yield None if value is None else bytes(value[:16])

    def remove_packs(self, pack_ids: Iterable[str]) -> None:
        """Forget packs' statistics once their files are gone."""
        with self.env.begin(write=True) as txn:
            packs = self._live(txn)[1]
            for pack_id in pack_ids:
                txn.delete(bytes.fromhex(pack_id), db=packs)

    def known_packs(self) -> set[str]:
        with self._snapshot() as (txn, _, packs):
            return {key.hex() for key in txn.cursor(db=packs).iternext(values=False)}

    def records_in(self, pack_ids: Iterable[str]) -> int | None:
        """How many records these packs hold, by their statistics (a lookup each); None if
        one of them has none."""
        total = 0
        with self._snapshot() as (txn, _, packs):
            for pack_id in pack_ids:
                value = txn.get(bytes.fromhex(pack_id), db=packs)
                if value is None:
                    return None
                total += PackStats(*PACK_STATS.unpack(value)).records
        return total

    def pack_stats(self) -> Iterator[tuple[str, PackStats]]:
        with self._snapshot() as (txn, _, packs):
            for key, value in txn.cursor(db=packs):
                yield key.hex(), PackStats(*PACK_STATS.unpack(value))

    def iter_chunks(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        """Every (digest, location), in digest order, from one read transaction."""
        with self._snapshot() as (txn, chunks, _):
            for digest, value in txn.cursor(db=chunks):
                yield digest, decode_location(value)

    def add_fingerprints(self, sums: KeyedSums) -> None:
        """Add to ``sums`` (two values per 16-byte pack key) each index entry's count and
        share of its pack's fingerprint (see ``fingerprint``): one sequential pass, nothing
        decoded; ``pack_fingerprints`` reads them per pack. So check compares a pack's
        footer with the index without a lookup per record, and without a table of every
        pack in memory."""
        add = sums.add
        with self._snapshot() as (txn, chunks, _):
            for digest, value in txn.cursor(db=chunks):
                add(value[:16], 1, hash(digest + value))

    def locations_in(self, pack_ids: Collection[str]) -> dict[str, list[tuple[bytes,
                                                                          ChunkLocation]]]:
        """Every (digest, location) that points into these packs: one pass over the index,
        for the few packs whose entries must be named one by one."""
        keys = {bytes.fromhex(pack_id) for pack_id in pack_ids}
        found: dict[str, list[tuple[bytes, ChunkLocation]]] = {p: [] for p in pack_ids}
        with self._snapshot() as (txn, chunks, _):
            for digest, value in txn.cursor(db=chunks):
                if value[:16] in keys:
                    location = decode_location(value)
                    found[location.pack_id].append((digest, location))
        return found

    def chunk_count(self) -> int:
        with self._snapshot() as (txn, chunks, _):
            return txn.stat(chunks)["entries"]

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

