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
from . import locking, space
from .backend import Backend, LocalBackend
from .chunks import ChunkReader, Codec
from .config import (FORMAT_VERSION, PLAINTEXT_MODE, ChunkerParams, Compression,
                     RepositoryConfig, read_config, write_config)
from .crypto import Keys, NoEncryption, RecordCipher
from .durable import make_private_folder
from .encryption import Passphrase, create_cipher, open_cipher, passphrase_text
from .index import ChunkIndex
from .packs import PackStore, read_footer
from .pipeline import new_pool
from .snapshots import SnapshotStore

log = logging.getLogger(__name__)

PACKS_DIR = "packs"
INDEX_DIR = "index"
SNAPSHOTS_DIR = "snapshots"


class Storage:
    """An open repository's parts. Readers may use it while another process writes; a
    writer takes ``writer_lock()`` first."""

    def __init__(self, root: Path, config: RepositoryConfig,
                 cipher: RecordCipher | None = None):
        self.root = root
        self.config = config
        self.cipher: RecordCipher = cipher or NoEncryption()
        if config.encrypted != self.cipher.encrypted:
            raise ValueError("an encrypted repository needs its Encrypted cipher")
        self.backend = LocalBackend(root)
        repository_id = config.repository_id
        self.packs = PackStore(self.backend, self.cipher, repository_id)
        # The index is a local cache, not part of the backend: its folder is chosen here.
        self.index = ChunkIndex(index_path(root))
        self.snapshots = SnapshotStore(self.backend, self.cipher, repository_id)
        self.codec = Codec(config.compression, self.cipher, repository_id)
        self.chunks = ChunkReader(self.packs, self.index, self.codec)
        self.space_folders = space_folders(root)
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, chunk_size: int | None = None, compression: str = "zstd:3",
               encryption: str = PLAINTEXT_MODE, passphrase: Passphrase = None,
               version: int = FORMAT_VERSION,
               chunker: ChunkerParams | None = None) -> "Storage":
        """A new, empty repository at ``root`` (missing, or an empty folder). ``encryption``
        is a config mode (``repokey-aes-256-gcm`` or ``none``); ``version`` 1 only to test
        that old repositories still work; ``chunker`` (another repository's parameters)
        stands in for ``chunk_size``."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise BadInput(f"cannot init {root}: it exists and is not an empty folder")
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
            raise BadInput(f"cannot init {root}: {error}") from None
        root.parent.mkdir(parents=True, exist_ok=True)
        # Resolved once (the user may name it through a link); inside, nothing is followed.
        root = root.resolve()
        make_private_folder(root)  # an empty folder made by the user keeps its mode
        for folder in (PACKS_DIR, SNAPSHOTS_DIR):
            make_private_folder(root / folder)
        backend = LocalBackend(root)
        locking.prepare_lock_files(backend)
        space.allocate_reserve(backend)
        config, cipher = create_cipher(backend, config, passphrase)
        write_config(backend, config)  # last: a folder without config is not a repository
        return cls(root, config, cipher)

    @classmethod
    def open(cls, root: Path, passphrase: Passphrase = None,
             keys: Keys | None = None) -> "Storage":
        """The repository at ``root``. ``passphrase`` (text, or a callable giving it; None:
        the environment or a terminal) is asked for only if the repository is encrypted;
        ``keys`` already unlocked (the mount's daemon) stand in for it."""
        root = locate(root)
        backend = LocalBackend(root)
        try:
            config = read_config(backend)
            cipher = open_cipher(backend, config, passphrase, keys)
        finally:
            backend.close()
        return cls(root, config, cipher)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The shared worker pool (hashing, reading, verifying), started on first use."""
        if self._pool is None:
            self._pool = new_pool("diskvault")
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
        return writer_lock(self.backend, command, lock_wait_s)

    def reader_lock(self) -> locking.ReaderLock:
        return locking.ReaderLock(self.backend)

    def readers_excluded(self) -> AbstractContextManager[bool]:
        """A context yielding whether no reader runs (and none may start) inside it."""
        return locking.readers_excluded(self.backend)

    def break_lock(self) -> locking.LockHolder | None:
        return locking.break_lock(self.backend)

    # -- space -------------------------------------------------------------------------
    def disk_full_reported(self, outcome: str) -> AbstractContextManager[None]:
        """A context in which a full disk becomes RepositoryFull (exit 74) ending in
        ``outcome``."""
        return space.disk_full_reported(self.space_folders, outcome)

    def release_reserve_if_full(self) -> None:
        space.release_reserve_if_full(self.backend, self.space_folders)

    def allocate_reserve(self) -> None:
        space.allocate_reserve(self.backend)

    # -- packs -------------------------------------------------------------------------
    def recover_unindexed_packs(self) -> int:
        """Index packs that reached disk but not the index (a writer died in between), and
        remove temp files of packs that never finished. Call with the writer lock held."""
        self.packs.discard_unfinished()
        known = self.index.known_packs()
        recovered = 0
        for pack_id in self.packs.list():
            if pack_id in known:
                continue
            try:
                entries = read_footer(self.packs, pack_id)
            except CorruptData as error:
                log.warning("pack %s is damaged and was not indexed: %s", pack_id, error)
                continue
            self.index.add_pack(pack_id, entries, self.packs.size(pack_id))
            recovered += 1
        return recovered


def read_config_at(root: Path) -> RepositoryConfig:
    """The config of the repository at ``root``, unauthenticated (no passphrase asked):
    enough for settings that are not secret, such as its chunker parameters."""
    backend = LocalBackend(locate(root))
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


def index_path(root: Path) -> Path:
    return root / INDEX_DIR


def space_folders(root: Path) -> list[Path]:
    """The folders whose filesystems a writer fills (the index may be a mount of its own)."""
    return [root, root / INDEX_DIR, root / PACKS_DIR]


def writer_lock(backend: Backend, command: str,
                lock_wait_s: float = 0.0) -> locking.WriterLock:
    """The writer lock of the repository behind ``backend``, for ``command``; needs no open
    index (repair takes it before it looks at the index)."""
    ensure_writable(backend, command)
    return locking.WriterLock(backend, command, lock_wait_s)


def ensure_writable(backend: Backend, command: str) -> None:
    """RepositoryReadOnly, at once and in one line, where a writer could not finish."""
    reason = backend.read_only_reason()
    if reason is not None:
        raise RepositoryReadOnly(f"repository {backend.location} is read-only: {reason}; "
                                 f"{command} changes it (readers such as list, restore, cat, "
                                 f"mount and check work)")
