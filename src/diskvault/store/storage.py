"""The storage: what flows (backup, restore, …) and maintenance (prune, compact, check,
repair) work on. One object holds the repository's parts -- config, backend (every byte of
the repository goes through it), packs, index, snapshot records, codec, chunk reader, worker
pool -- and the operations on the repository
as a whole: its locks, its space reserve, the recovery of packs a killed writer left.

It knows nothing of the commands built on it: the facade (repository.py) opens one for the
CLI and the mount, and maintenance receives it from there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path

from ..errors import BadInput, CorruptData, RepositoryReadOnly
from .backends.location import LocationLike, as_location
from .backends.protocol import Backend
from .coordination import locking, readers, space, writers
from .coordination.leases import LeaseFormat
from .format.codec import Codec
from .format.config import (FORMAT_VERSION, PACK_RETENTION_MARGIN, PLAINTEXT_MODE,
                            ChunkerParams, Compression, ObjectLockSettings, RepositoryConfig,
                            read_config, write_config)
from .format.crypto import Keys, NoEncryption, RecordCipher
from .format.packs import PACKS_PREFIX, PackStore
from .format.protection import ProtectionMarks
from .format.snapshot_store import SnapshotStore
from .format.snapshots import SNAPSHOTS_PREFIX
from .host.user_folders import cached_records_folder, make_cached_index_folder
from .host.seen_snapshots import SnapshotMemory
from .index.catch_up import CatchUp, catch_up, index_state
from .index.chunk_index import DATA_FILE, ChunkIndex
from .index.damage import set_aside_index, set_aside_unreadable_index
from .host.record_cache import RecordCache
from .host.snapshot_catalogue import SnapshotCatalogue
from .keys.encryption import Passphrase, create_cipher, open_cipher, passphrase_text
from .pipeline import new_pool
from .read.chunk_reader import ChunkReader

log = logging.getLogger(__name__)

TOP_FOLDERS = ("packs", "snapshots")  # made with a new local repository
CATCH_UP_OUTCOME = ("the index could not be brought up to date and nothing else was "
                    "changed: free space there, then rerun the command")


class Storage:
    """An open repository's parts. Readers may use it while another process writes; a
    writer takes ``writer_lock()`` first. ``location`` names it in messages."""

    def __init__(self, backend: Backend, index_folder: Path, config: RepositoryConfig,
                 cipher: RecordCipher | None = None):
        self.location = backend.location
        self.config = config
        self.cipher: RecordCipher = cipher or NoEncryption()
        if config.encrypted != self.cipher.encrypted:
            raise ValueError("an encrypted repository needs its Encrypted cipher")
        self.backend = backend
        repository_id = config.repository_id
        # What an index must have been built from to be trusted here (index_cache.py).
        self.identity = f"{repository_id} {backend.place}"
        self.packs = PackStore(self.backend, self.cipher, repository_id)
        self.index_set_aside: Path | None = None  # an unreadable index moved aside at open
        self._index_begun = False  # the index was created by this open: it knows nothing
        # The index is a local cache, not part of the backend: its folder is chosen here.
        self.index = self._open_index(index_folder)
        # An object store's records are cached beside its index: `list` then costs a LIST.
        record_cache = RecordCache(
            cached_records_folder(repository_id, backend.place), SNAPSHOTS_PREFIX
        ).create() if backend.index_is_cache else None
        self.snapshots = SnapshotStore(
            self.backend, self.cipher, repository_id, record_cache,
            SnapshotMemory(repository_id, backend.place, str(backend.location)),
            SnapshotCatalogue(repository_id, backend.place))
        self.protection = ProtectionMarks(self.backend)
        self.leases = LeaseFormat(self.cipher, repository_id)  # who holds a lock: sealed
        self.codec = Codec(config.compression, self.cipher, repository_id)
        self.chunks = ChunkReader(self.packs, self.index, self.codec,
                                  on_missing_pack=self.catch_up_index)
        self._pool: ThreadPoolExecutor | None = None
        self._index_kept = False  # see keeping_index

    def _open_index(self, folder: Path) -> ChunkIndex:
        """The index at ``folder``. One that cannot be opened is set aside and begun anew
        (catching up fills it); on a repository this process may not write, a private
        cache is used instead of it."""
        read_only = (not self.backend.index_is_cache
                     and self.backend.read_only_reason() is not None)
        self._index_begun = not (folder / DATA_FILE).exists()
        try:
            return ChunkIndex(folder, readonly=read_only)
        except CorruptData:
            if read_only:
                return self._private_index()
            self.index_set_aside = set_aside_unreadable_index(folder)
            if self.index_set_aside is None:
                raise
            log.warning("the index at %s could not be read: it was moved to %s and is rebuilt "
                        "from the packs", folder, self.index_set_aside)
            self._index_begun = True
            return ChunkIndex(folder)

    def _private_index(self) -> ChunkIndex:
        folder = make_cached_index_folder(self.config.repository_id, self.backend.place)
        self._index_begun = not (folder / DATA_FILE).exists()
        return ChunkIndex(folder)

    def _catches_up_at_open(self, reader: bool) -> bool:
        """An object store's cache, unless the command is a ``reader`` (see open); a local
        repository's index only if it was just begun (lost, or set aside) or names another
        copy of the repository. Otherwise what it lacks is left to writers (which index it
        under their lock) and to check, which reports packs it does not know."""
        if self.backend.index_is_cache:
            return not reader
        if self._index_begun:
            return True
        recorded = self.index.identity()
        return recorded is not None and recorded != self.identity

    @property
    def space_folders(self) -> list[Path]:
        """Where a full disk can stop a writer: the repository's folders and its index's
        (which may be a mount of its own), or the cache's for S3."""
        return [*self.backend.disk_folders(), self.index.path]

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, location: LocationLike, chunk_size: int | None = None,
               compression: str = "zstd:3", encryption: str = PLAINTEXT_MODE,
               passphrase: Passphrase = None, version: int = FORMAT_VERSION,
               chunker: ChunkerParams | None = None, append_only: bool = False,
               object_lock: ObjectLockSettings | None = None) -> "Storage":
        """A new, empty repository at ``location`` (a missing or empty folder, or an empty
        prefix of a bucket). ``encryption`` is a config mode (``repokey-aes-256-gcm`` or
        ``none``); ``version`` 1 only to test that old repositories still work; ``chunker``
        (another repository's parameters) stands in for ``chunk_size``; ``object_lock``
        needs a bucket made with Object Lock."""
        location = as_location(location)
        if object_lock is not None and location.folder is not None:
            raise BadInput(f"cannot init {location}: Object Lock needs an S3 bucket made with "
                           f"it (s3://BUCKET/PREFIX); for a folder, see append-only in "
                           f"docs/threat-model.md")
        location.refuse_used_folder()
        if encryption != PLAINTEXT_MODE:  # asked before anything is created
            passphrase = passphrase_text(passphrase, confirm=True)
        if chunker is None:
            chunker = (ChunkerParams() if chunk_size is None
                       else ChunkerParams.from_average(chunk_size))
        chunker.validate()
        config = RepositoryConfig(chunker=chunker, compression=Compression.parse(compression),
                                  encryption=encryption, version=version,
                                  append_only=append_only, object_lock=object_lock)
        try:
            config.validate()
        except BadInput as error:
            raise BadInput(f"cannot init {location}: {error}") from None
        backend = location.create_backend(TOP_FOLDERS)
        try:
            if object_lock is not None:  # before anything is put: a plain bucket is refused
                use_object_lock(backend, object_lock, verify=True)
            locking.prepare_lock_files(backend)
            space.allocate_reserve(backend)
            config, cipher = create_cipher(backend, config, passphrase)
            write_config(backend, config)  # last: without config it is not a repository
            return cls.on_backend(backend, config, cipher)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def open(cls, location: LocationLike, passphrase: Passphrase = None,
             keys: Keys | None = None, catch_up: bool = True,
             reader: bool = False) -> "Storage":
        """The repository at ``location``. ``passphrase`` (text, or a callable giving it;
        None: the environment or a terminal) is asked for only if the repository is
        encrypted; ``keys`` already unlocked (the mount's daemon) stand in for it. The
        index of an object-store repository is caught up with the bucket here, unless
        ``catch_up`` is False: a writer does it under its lock (recover_unindexed_packs),
        and a listing at open would only repeat that one. Nor for a ``reader``, which uses
        the index only under reader_lock() (restore, cat) or not at all (list): its
        registration must come before the listing of the packs it protects, so the one
        listing is there, after it (DESIGN.md: readers and compaction)."""
        backend = as_location(location).open_backend()
        try:
            config = read_config(backend)
            cipher = open_cipher(backend, config, passphrase, keys)
            storage = cls.on_backend(backend, config, cipher)
        except BaseException:
            backend.close()
            raise
        if catch_up and storage._catches_up_at_open(reader):
            try:
                storage.catch_up_index()
            except BaseException:
                storage.close()
                raise
        return storage

    @classmethod
    def on_backend(cls, backend: Backend, config: RepositoryConfig,
                   cipher: RecordCipher) -> "Storage":
        """The storage over an opened backend, its index where the backend keeps it."""
        if config.object_lock is not None and backend.object_lock is None:
            use_object_lock(backend, config.object_lock)
        return cls(backend, backend.index_folder(config.repository_id), config, cipher)

    def requests_made(self) -> dict[str, int] | None:
        """The object-store requests made so far, by operation; None for a local folder."""
        return self.backend.requests_made()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The shared worker pool (hashing, reading, verifying), started on first use. On
        an object store a read waits on the network, not a core: more threads keep more
        range GETs in flight (restore's window, the mount's read-ahead)."""
        if self._pool is None:
            self._pool = new_pool("diskvault", self.backend.reads_in_flight)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.backend.close()
        self.index.close()

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- locks -------------------------------------------------------------------------
    def writer_lock(self, command: str, lock_wait_s: float = 0.0) -> locking.WriterLock:
        """The exclusive lock (prune, delete, compact, repair): waits for running backups.
        The leases are the repository's, so an encrypted one seals its holder."""
        ensure_writable(self.backend, command)
        return locking.WriterLock(self.backend, command, lock_wait_s, leases=self.leases)

    def backup_lock(self, command: str, lock_wait_s: float = 0.0) -> locking.BackupLock:
        """A backup's or copy's registration: beside other backups, never beside an
        exclusive operation."""
        ensure_writable(self.backend, command)
        return locking.BackupLock(self.backend, command, lock_wait_s, leases=self.leases,
                                  writer_tag=self.packs.writer_tag)

    def reader_lock(self) -> readers.ReaderLock:
        """The reader's registration, and then an object store's index cache caught up: a
        compaction on another host that deleted packs before the registration is seen, and
        none can after it. (A local repository's compaction changes its one index.)"""
        lock = readers.ReaderLock(self.backend, leases=self.leases)
        if not self.backend.index_is_cache:
            return lock
        try:
            self.catch_up_index()
        except BaseException:
            lock.release()
            raise
        return lock

    def readers_excluded(self) -> AbstractContextManager[bool]:
        """A context yielding whether no reader runs (and none may start) inside it."""
        return readers.readers_excluded(self.backend, leases=self.leases)

    def break_lock(self) -> locking.LockHolder | None:
        return locking.break_lock(self.backend, self.leases)

    # -- space -------------------------------------------------------------------------
    def disk_full_reported(self, outcome: str) -> AbstractContextManager[None]:
        """A context in which a full disk becomes RepositoryFull (exit 74) ending in
        ``outcome``."""
        return space.disk_full_reported(self.space_folders, outcome)

    def release_reserve_if_full(self) -> None:
        space.release_reserve_if_full(self.backend, self.space_folders)

    def allocate_reserve(self) -> None:
        """The space reserve where the repository fills a disk (space.allocate_reserve)."""
        space.allocate_reserve(self.backend)

    # -- packs -------------------------------------------------------------------------
    def recover_unindexed_packs(self) -> int:
        """Index packs that reached the repository but not the index (a writer died in
        between; on S3 also packs of other hosts), and remove temp files or multipart
        uploads of packs that never finished. Call with the (exclusive) writer lock held:
        a running backup's pack is unfinished too."""
        self.packs.discard_unfinished()
        return self.catch_up_index(writer=True).packs_added

    def catch_up_before_backup(self) -> int:
        """Index the packs other writers finished (other hosts', or killed writers'), so
        that a backup stores again only what none of them holds, and remove the unfinished
        packs of writers no longer registered (not those of backups still running); with
        the backup lock held."""
        # Both only after the registration and the look at the lock (the lock's order), and
        # independent of each other: the unfinished packs are listed beside the finished
        # ones (on an object store, two round trips at once instead of one after the other).
        abandoned = self.pool.submit(self.packs.discard_abandoned,
                                     lambda: writers.running_writer_tags(self.backend,
                                                                         self.leases))
        try:
            added = self.catch_up_index(writer=True).packs_added
        finally:
            wait([abandoned])
        abandoned.result()
        return added

    @contextmanager
    def keeping_index(self) -> Iterator[None]:
        """For maintenance relying on the reference counts beside the index: a catch-up that
        would rebuild or replace the index (which empties them) raises IndexRebuildRefused."""
        self._index_kept = True
        try:
            yield
        finally:
            self._index_kept = False

    def catch_up_index(self, writer: bool = False) -> CatchUp:
        """Index the packs the index does not know, or rebuild an index not to be trusted
        (index_cache.py). One that knows packs the repository lacks is rebuilt by a
        ``writer`` and on an object store (a cache); a local reader keeps what it knows, for
        check and repair to name the missing packs. An index this process may not change
        that is not current gives way to a private cache. Reads that miss a chunk meanwhile
        wait for it to end (ChunkReader.catching_up)."""
        with self.chunks.catching_up(), self.disk_full_reported(CATCH_UP_OUTCOME):
            try:
                return self._catch_up(writer)
            except CorruptData:  # only the index raises it here: damage met on the way
                if self.index.readonly or self._index_kept:
                    raise
                self.replace_damaged_index()
                return self._catch_up(writer)

    def _catch_up(self, writer: bool) -> CatchUp:
        state = None
        if self.index.readonly:  # another's index, or on read-only media: never filled here
            state = index_state(self.index, self.packs)
            if not state.is_current(self.identity):
                self._use_index(self._private_index())
                state = None
        return catch_up(self.index, self.packs, self.identity, state,
                        vanished_is_stale=writer or self.backend.index_is_cache,
                        may_rebuild=not self._index_kept)

    def replace_damaged_index(self) -> Path:
        """Set the index aside (damage was met in it) and begin a new one in its place;
        returns where the damaged one went."""
        folder = self.index.path
        self.index.close()
        self.index_set_aside = set_aside_index(folder)
        log.warning("the index at %s is damaged: it was moved to %s and is rebuilt from the "
                    "packs", folder, self.index_set_aside)
        self._use_index(ChunkIndex(folder))
        return self.index_set_aside

    def set_aside_unreadable_index(self) -> Path | None:
        """(repair, under the writer lock) Move the index aside if any page or value of it
        fails to read, and begin a new one in its place; returns where it went."""
        folder = self.index.path
        self.index.close()
        moved = set_aside_unreadable_index(folder, thorough=True)
        self._use_index(ChunkIndex(folder))
        return moved

    def _use_index(self, index: ChunkIndex) -> None:
        """Work with ``index`` from now on; the one in use is closed (again: harmless)."""
        self.index.close()
        self.index = index
        self.chunks.use_index(index)


def use_object_lock(backend: Backend, settings: ObjectLockSettings,
                    verify: bool = False) -> None:
    """Packs and snapshot records are put retained (packs a margin longer: they are put
    before the record that needs them); nothing else is, so locks, leases and marks can go."""
    backend.use_object_lock(settings, {PACKS_PREFIX: PACK_RETENTION_MARGIN,
                                       SNAPSHOTS_PREFIX: timedelta(0)}, verify)


def read_config_at(location: LocationLike) -> RepositoryConfig:
    """The config of the repository at ``location``, unauthenticated (no passphrase asked):
    enough for settings that are not secret, such as its chunker parameters."""
    backend = as_location(location).open_backend()
    try:
        return read_config(backend)
    finally:
        backend.close()


def ensure_writable(backend: Backend, command: str) -> None:
    """RepositoryReadOnly, at once and in one line, where a writer could not finish."""
    reason = backend.read_only_reason()
    if reason is not None:
        raise RepositoryReadOnly(f"repository {backend.location} is read-only: {reason}; "
                                 f"{command} changes it (readers such as list, restore, cat, "
                                 f"mount and check work)")
