"""The facade the CLI and the FUSE layer talk to: init/open, lock, backup, snapshots,
images. Orchestration only: the work is done by the modules it calls."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInput, CorruptData, LockHolder
from .backup import back_up
from .browse import BROWSE_READAHEAD_BYTES, SnapshotFiles
from .chunker import Hint, hints_from_spans
from .config import FORMAT_VERSION, PLAINTEXT_MODE
from .crypto import Keys
from .diff import changed_ranges
from .encryption import (Passphrase, change_key_passphrase, export_key_file,
                         import_key_file)
from .image_map import image_spans
from .locking import ReaderLock, WriterLock
from .manifest import decode_block
from .reader import ImageReader
from .restore import image_pieces, restore_to_path, write_stream
from .snapshots import SnapshotRecord, is_snapshot_id, select_snapshot
from .source import ImageSource
from .location import LocationLike, as_location
from .storage import Storage, open_backend

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RepositoryTotals:
    snapshots: int
    logical_bytes: int   # sum of all snapshots' image sizes
    zero_bytes: int      # the part of logical_bytes in zero runs (never stored)
    stored_bytes: int    # bytes of all pack files
    chunks: int
    packs: int


class Repository:
    """An open repository, as the CLI and the mount see it: it opens a Storage and hands
    it to the flows (backup, restore, cat, diff, browse). Maintenance takes ``storage``.
    Readers may use it while another process writes."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.root = storage.root  # a local repository's folder; None on an object store
        self.location = storage.location  # either, for messages
        self.config = storage.config

    @classmethod
    def init(cls, location: LocationLike, chunk_size: int | None = None,
             compression: str = "zstd:3", encryption: str = PLAINTEXT_MODE,
             passphrase: Passphrase = None, version: int = FORMAT_VERSION) -> "Repository":
        return cls(Storage.create(location, chunk_size, compression, encryption, passphrase,
                                  version))

    @classmethod
    def open(cls, location: LocationLike, passphrase: Passphrase = None,
             keys: Keys | None = None) -> "Repository":
        """``passphrase`` is asked for only if the repository is encrypted (see Storage)."""
        return cls(Storage.open(location, passphrase, keys))

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (existing or not) lies inside this repository, reached through
        any symbolic link or bind mount: its real path is under the root's, or one of its
        folders is the root folder itself (same device and inode). Nothing local is inside
        a repository on an object store."""
        if self.root is None:
            return False
        root = os.stat(self.root)
        absolute = Path(os.path.abspath(path))
        real = Path(os.path.realpath(absolute))
        if real == self.root or self.root in real.parents:
            return True
        for folder in {*absolute.parents, *real.parents, absolute, real}:
            try:
                status = os.stat(folder)
            except OSError:
                continue
            if (status.st_dev, status.st_ino) == (root.st_dev, root.st_ino):
                return True
        return False

    def refuse_inside(self, path: Path, role: str) -> None:
        """BadInput if ``path`` is inside the repository: only the repository writes there."""
        if self.contains(path):
            raise BadInput(f"{role} {path} is inside the repository {self.location}; diskvault "
                           f"never reads or writes its own files as data: choose a path "
                           f"outside it")

    # -- locks: a flow runs under one, maintenance takes them on the storage ------------
    def writer_lock(self, command: str, lock_wait_s: float = 0.0) -> WriterLock:
        return self.storage.writer_lock(command, lock_wait_s)

    def reader_lock(self) -> ReaderLock:
        return self.storage.reader_lock()

    def break_lock(self) -> LockHolder | None:
        return self.storage.break_lock()

    # -- the key -----------------------------------------------------------------------
    @property
    def encryption(self) -> str:
        """The config's encryption mode: ``repokey-aes-256-gcm`` or ``none``."""
        return self.config.encryption

    def unlocked_keys(self) -> Keys | None:
        """The keys this process unlocked (None: plaintext), to hand to a child process."""
        return getattr(self.storage.cipher, "keys", None)

    def _require_key(self) -> None:
        if not self.config.encrypted:
            raise BadInput(f"repository {self.location} is not encrypted: it has no key")

    def export_key(self) -> str:
        self._require_key()
        return export_key_file(self.storage.backend, self.config)

    @staticmethod
    def import_key(location: LocationLike, export: str) -> None:
        """Put back the key file of the repository at ``location`` from an export of its
        key; needs no passphrase and no readable key file (that is what it repairs)."""
        backend, _ = open_backend(as_location(location))
        with closing(backend):
            import_key_file(backend, export)

    def change_passphrase(self, old: Passphrase, new: Passphrase) -> None:
        self._require_key()
        change_key_passphrase(self.storage.backend, old, new)

    # -- writing -----------------------------------------------------------------------
    def backup(self, source_path: Path, name: str | None = None, tags: tuple[str, ...] = (),
               lock_wait_s: float = 0.0, progress: Progress | None = None) -> SnapshotRecord:
        """Back up one image; the snapshot record is written only once all it references
        is durable. On any failure nothing is recorded and earlier snapshots are intact."""
        started = time.monotonic()
        self.refuse_inside(Path(source_path), "backup source")
        storage = self.storage
        with storage.disk_full_reported("the backup was abandoned and earlier snapshots are "
                                        "intact: free space, then rerun it"), \
                ImageSource(Path(source_path)) as source, \
                self.writer_lock(f"backup {source_path}", lock_wait_s):
            storage.recover_unindexed_packs()
            series = name or Path(source_path).name
            return back_up(source, series, list(tags), packs=storage.packs,
                           index=storage.index, codec=storage.codec, config=self.config,
                           pool=storage.pool, snapshots=storage.snapshots,
                           hints=self._hints_for(series), progress=progress, started=started)

    def _hints_for(self, name: str) -> Iterator[Hint]:
        """The chunks of the series' latest snapshot, as cutting hints; a damaged previous
        manifest only costs speed (the hints stop), never the backup."""
        series = self.list_snapshots(name)
        if not series:
            return
        try:
            yield from hints_from_spans(image_spans(self.storage.chunks, series[-1]))
        except CorruptData as error:
            log.warning("previous snapshot of %s unreadable, chunking without hints: %s",
                        name, error)

    # -- snapshots ---------------------------------------------------------------------
    def list_snapshots(self, name: str | None = None) -> list[SnapshotRecord]:
        records = self.storage.snapshots.all()
        return [r for r in records if r.name == name] if name else records

    def scan_snapshots(self):
        """(readable records oldest first, errors of damaged records)."""
        return self.storage.snapshots.scan()

    def find_snapshot(self, selector: str) -> SnapshotRecord:
        if is_snapshot_id(selector) and self.storage.snapshots.exists(selector):
            # A full id: read just that record, even if another one is damaged.
            return self.storage.snapshots.load(selector)
        return select_snapshot(self.storage.snapshots.all(), selector)

    def snapshot_ids(self) -> set[str]:
        """Ids of the complete snapshots, without reading any record: cheap enough to poll
        (the mount re-lists with it). Temp files of a record being written are not ids."""
        return set(self.storage.snapshots.ids())

    def load_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        return self.storage.snapshots.load(snapshot_id)

    def totals(self) -> RepositoryTotals:
        """Sizes over the readable snapshots (damaged records are reported elsewhere)."""
        records, _ = self.storage.snapshots.scan()
        stats = list(self.storage.index.pack_stats())
        return RepositoryTotals(
            snapshots=len(records), logical_bytes=sum(r.size for r in records),
            zero_bytes=sum(r.stats.zero_bytes for r in records),
            stored_bytes=sum(s.file_size for _, s in stats),
            chunks=self.storage.index.chunk_count(),
            packs=len(stats))

    # -- reading -----------------------------------------------------------------------
    def load_manifest_block(self, digest: bytes):
        return decode_block(self.storage.chunks.get(digest))

    def open_image(self, record: SnapshotRecord, **cache_sizes) -> ImageReader:
        return ImageReader(self.storage.chunks, record, self.storage.pool, **cache_sizes)

    def restore(self, record: SnapshotRecord, target: Path, force: bool = False,
                progress: Progress | None = None) -> None:
        self.refuse_inside(Path(target), "restore target")
        with self.reader_lock():
            restore_to_path(image_pieces(self.storage.chunks, record, self.storage.pool),
                            record, Path(target), force, progress)

    def cat(self, record: SnapshotRecord, out: BinaryIO, progress: Progress | None = None) -> None:
        with self.reader_lock():
            write_stream(image_pieces(self.storage.chunks, record, self.storage.pool), out,
                         progress)

    def diff(self, a: SnapshotRecord, b: SnapshotRecord) -> list[tuple[int, int]]:
        return changed_ranges(a, b, self.storage.chunks.get)

    def browse(self, record: SnapshotRecord, **cache_sizes) -> SnapshotFiles:
        """The volumes and filesystems inside a snapshot's image (`ls`, `pull`, the mount's
        .files/), each filesystem opened on first use. Hold reader_lock() while using it."""
        options = {"readahead_max_bytes": BROWSE_READAHEAD_BYTES, **cache_sizes}
        return SnapshotFiles(self.open_image(record, **options))
