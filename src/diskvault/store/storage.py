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
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

from ..errors import BadInput, CorruptData, RepositoryNotFound, RepositoryReadOnly
from .backends.local import LocalBackend
from .backends.location import Location, LocationLike, as_location, cached_index_folder
from .backends.protocol import Backend
from .coordination import locking, readers, space
from .coordination.leases import PLAINTEXT_LEASES, LeaseFormat
from .format.codec import Codec
from .format.config import (FORMAT_VERSION, PLAINTEXT_MODE, ChunkerParams, Compression,
                            RepositoryConfig, read_config, write_config)
from .format.crypto import Keys, NoEncryption, RecordCipher
from .format.packs import PackStore
from .format.protection import ProtectionMarks
from .format.snapshots import SnapshotStore
from .host.durable import make_private_folder
from .host.seen_snapshots import SnapshotMemory
from .host.user_folders import user_cache_folder
from .index.catch_up import CatchUp, catch_up, index_state
from .index.chunk_index import DATA_FILE, ChunkIndex
from .index.damage import set_aside_index, set_aside_unreadable_index
from .keys.encryption import Passphrase, create_cipher, open_cipher, passphrase_text
from .pipeline import new_pool
from .read.chunk_reader import ChunkReader

log = logging.getLogger(__name__)

PACKS_DIR = "packs"
INDEX_DIR = "index"
SNAPSHOTS_DIR = "snapshots"
OBJECT_STORE_READS_IN_FLIGHT = 16  # the S3 client's connection pool holds as many
CATCH_UP_OUTCOME = ("the index could not be brought up to date and nothing else was "
                    "changed: free space there, then rerun the command")


class Storage:
    """An open repository's parts. Readers may use it while another process writes; a
    writer takes ``writer_lock()`` first. ``root`` is the folder of a local repository
    (None on an object store); ``location`` names either in messages."""

    def __init__(self, backend: Backend, index_folder: Path, config: RepositoryConfig,
                 cipher: RecordCipher | None = None, root: Path | None = None):
        self.root = root
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
        self.snapshots = SnapshotStore(
            self.backend, self.cipher, repository_id,
            SnapshotMemory(repository_id, backend.place, str(backend.location)))
        self.protection = ProtectionMarks(self.backend)
        self.leases = LeaseFormat(self.cipher, repository_id)  # who holds a lock: sealed
        self.codec = Codec(config.compression, self.cipher, repository_id)
        self.chunks = ChunkReader(self.packs, self.index, self.codec,
                                  on_missing_pack=self.catch_up_index)
        self._pool: ThreadPoolExecutor | None = None

    def _open_index(self, folder: Path) -> ChunkIndex:
        """The index at ``folder``. One that cannot be opened is set aside and begun anew
        (catching up fills it); on a repository this process may not write, a private
        cache is used instead of it."""
        read_only = self.root is not None and self.backend.read_only_reason() is not None
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
        folder = cached_index_folder(self.config.repository_id, self.backend.place)
        _make_cache_folders(folder)
        self._index_begun = not (folder / DATA_FILE).exists()
        return ChunkIndex(folder)

    def _catches_up_at_open(self) -> bool:
        """An object store's cache always; a local repository's index only if it was just
        begun (lost, or set aside) or names another copy of the repository. Otherwise what
        it lacks is left to writers (which index it under their lock) and to check, which
        reports packs it does not know."""
        if not self.is_local or self._index_begun:
            return True
        recorded = self.index.identity()
        return recorded is not None and recorded != self.identity

    @property
    def space_folders(self) -> list[Path]:
        """Where a full disk can stop a writer: the repository's folders and its index's
        (which may be a mount of its own), or the cache's for S3."""
        if self.root is None:
            return [self.index.path]
        return [self.root, self.index.path, self.root / PACKS_DIR]

    @property
    def is_local(self) -> bool:
        return self.root is not None

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, location: LocationLike, chunk_size: int | None = None,
               compression: str = "zstd:3", encryption: str = PLAINTEXT_MODE,
               passphrase: Passphrase = None, version: int = FORMAT_VERSION,
               chunker: ChunkerParams | None = None) -> "Storage":
        """A new, empty repository at ``location`` (a missing or empty folder, or an empty
        prefix of a bucket). ``encryption`` is a config mode (``repokey-aes-256-gcm`` or
        ``none``); ``version`` 1 only to test that old repositories still work; ``chunker``
        (another repository's parameters) stands in for ``chunk_size``."""
        location = as_location(location)
        if location.is_local:
            _refuse_used_folder(location.folder)
        if encryption != PLAINTEXT_MODE:  # asked before anything is created
            passphrase = passphrase_text(passphrase, confirm=True)
        if chunker is None:
            chunker = (ChunkerParams() if chunk_size is None
                       else ChunkerParams.from_average(chunk_size))
        chunker.validate()
        config = RepositoryConfig(chunker=chunker, compression=Compression.parse(compression),
                                  encryption=encryption, version=version)
        try:
            config.validate()
        except BadInput as error:
            raise BadInput(f"cannot init {location}: {error}") from None
        root = _make_repository_folder(location.folder) if location.is_local else None
        backend = LocalBackend(root) if root else location.open_object_store()
        try:
            if root is None:
                _refuse_used_prefix(backend)
            locking.prepare_lock_files(backend)
            if root is not None:
                space.allocate_reserve(backend)
            config, cipher = create_cipher(backend, config, passphrase)
            write_config(backend, config)  # last: without config it is not a repository
            return cls.on_backend(backend, config, cipher, root)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def open(cls, location: LocationLike, passphrase: Passphrase = None,
             keys: Keys | None = None, catch_up: bool = True) -> "Storage":
        """The repository at ``location``. ``passphrase`` (text, or a callable giving it;
        None: the environment or a terminal) is asked for only if the repository is
        encrypted; ``keys`` already unlocked (the mount's daemon) stand in for it. The
        index of an object-store repository is caught up with the bucket here, unless
        ``catch_up`` is False: a writer does it under its lock (recover_unindexed_packs),
        and a listing at open would only repeat that one."""
        backend, root = open_backend(as_location(location))
        try:
            config = read_config(backend)
            cipher = open_cipher(backend, config, passphrase, keys)
            storage = cls.on_backend(backend, config, cipher, root)
        except BaseException:
            backend.close()
            raise
        if catch_up and storage._catches_up_at_open():
            try:
                storage.catch_up_index()
            except BaseException:
                storage.close()
                raise
        return storage

    @classmethod
    def on_backend(cls, backend: Backend, config: RepositoryConfig, cipher: RecordCipher,
                   root: Path | None) -> "Storage":
        """The storage over an opened backend: the index in the local repository's folder,
        or in this user's cache for an object store."""
        if root is not None:
            return cls(backend, index_path(root), config, cipher, root)
        index_folder = cached_index_folder(config.repository_id, backend.place)
        _make_cache_folders(index_folder)
        return cls(backend, index_folder, config, cipher, root)

    def requests_made(self) -> dict[str, int] | None:
        """The object-store requests made so far, by operation; None for a local folder."""
        return None if self.is_local else self.backend.requests.snapshot()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The shared worker pool (hashing, reading, verifying), started on first use. On
        an object store a read waits on the network, not a core: more threads keep more
        range GETs in flight (restore's window, the mount's read-ahead)."""
        if self._pool is None:
            self._pool = new_pool("diskvault") if self.is_local else ThreadPoolExecutor(
                max_workers=OBJECT_STORE_READS_IN_FLIGHT, thread_name_prefix="diskvault")
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
        return writer_lock(self.backend, command, lock_wait_s, self.leases)

    def reader_lock(self) -> readers.ReaderLock:
        """The reader's registration, and then an object store's index cache caught up: a
        compaction on another host that deleted packs before the registration is seen, and
        none can after it. (A local repository's compaction changes its one index.)"""
        lock = readers.ReaderLock(self.backend, leases=self.leases)
        if self.is_local:
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
        """A local repository's space reserve; an object store needs none."""
        if self.is_local:
            space.allocate_reserve(self.backend)

    # -- packs -------------------------------------------------------------------------
    def recover_unindexed_packs(self) -> int:
        """Index packs that reached the repository but not the index (a writer died in
        between; on S3 also packs of other hosts), and remove temp files or multipart
        uploads of packs that never finished. Call with the writer lock held."""
        self.packs.discard_unfinished()
        return self.catch_up_index(writer=True).packs_added

    def catch_up_index(self, writer: bool = False) -> CatchUp:
        """Index the packs the index does not know, or rebuild an index not to be trusted
        (index_cache.py). One that knows packs the repository lacks is rebuilt by a
        ``writer`` and on an object store (a cache); a local reader keeps what it knows, for
        check and repair to name the missing packs. An index this process may not change
        that is not current gives way to a private cache."""
        with self.disk_full_reported(CATCH_UP_OUTCOME):
            try:
                return self._catch_up(writer)
            except CorruptData:  # only the index raises it here: damage met on the way
                if self.index.readonly:
                    raise
                self.replace_damaged_index()
                return self._catch_up(writer)

    def _catch_up(self, writer: bool) -> CatchUp:
        state = index_state(self.index, self.packs)
        if self.index.readonly and not state.is_current(self.identity):
            self._use_index(self._private_index())
            state = None
        return catch_up(self.index, self.packs, self.identity, state,
                        vanished_is_stale=writer or not self.is_local)

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


def open_backend(location: Location) -> tuple[Backend, Path | None]:
    """The backend of an existing repository, and a local one's folder (resolved once)."""
    if location.is_local:
        root = locate(location.folder)
        return LocalBackend(root), root
    return location.open_object_store(), None


def read_config_at(location: LocationLike) -> RepositoryConfig:
    """The config of the repository at ``location``, unauthenticated (no passphrase asked):
    enough for settings that are not secret, such as its chunker parameters."""
    backend, _ = open_backend(as_location(location))
    try:
        return read_config(backend)
    finally:
        backend.close()


def locate(root: Path) -> Path:
    """The repository folder ``root``, resolved once: inside it, no link is followed."""
    root = Path(root)
    if not root.exists():
        raise RepositoryNotFound(f"repository {root} does not exist; create it with "
                                 f"'diskvault init -r {root}'")
    if not root.is_dir():
        raise RepositoryNotFound(f"repository {root} is not a folder")
    return root.resolve()


def _refuse_used_folder(root: Path) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise BadInput(f"cannot init {root}: it exists and is not an empty folder")


def _make_repository_folder(root: Path) -> Path:
    """The folders of a new local repository; the root resolved once (the user may name it
    through a link), inside it nothing is followed."""
    root.parent.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    make_private_folder(root)  # an empty folder made by the user keeps its mode
    for folder in (PACKS_DIR, SNAPSHOTS_DIR):
        make_private_folder(root / folder)
    return root


def _refuse_used_prefix(backend: Backend) -> None:
    if backend.list(""):
        raise BadInput(f"cannot init {backend.location}: objects already exist under that "
                       f"prefix; choose an empty prefix")


def _make_cache_folders(index_folder: Path) -> None:
    """``<cache>/diskvault/<repository id>/<place key>/``, each folder 0700 (the index
    names chunks)."""
    top = user_cache_folder()
    top.parent.mkdir(parents=True, exist_ok=True)
    for folder in (top, index_folder.parent.parent, index_folder.parent):
        make_private_folder(folder)


def index_path(root: Path) -> Path:
    return root / INDEX_DIR


def writer_lock(backend: Backend, command: str, lock_wait_s: float = 0.0,
                leases: LeaseFormat = PLAINTEXT_LEASES) -> locking.WriterLock:
    """The writer lock of the repository behind ``backend``, for ``command``; needs no open
    index (repair takes it before it looks at the index). ``leases``: the repository's
    (``LeaseFormat(cipher, repository id)``), so an encrypted one seals its holder."""
    ensure_writable(backend, command)
    return locking.WriterLock(backend, command, lock_wait_s, leases=leases)


def ensure_writable(backend: Backend, command: str) -> None:
    """RepositoryReadOnly, at once and in one line, where a writer could not finish."""
    reason = backend.read_only_reason()
    if reason is not None:
        raise RepositoryReadOnly(f"repository {backend.location} is read-only: {reason}; "
                                 f"{command} changes it (readers such as list, restore, cat, "
                                 f"mount and check work)")
