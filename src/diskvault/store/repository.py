"""The facade the CLI and the FUSE layer talk to: init/open, lock, backup, snapshots,
images. Orchestration only: the work is done by the modules it calls."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInput, CorruptData, LockHolder
from .backends.location import LocationLike, as_location
from .backup.change_map import ChangeMap, check_fits
from .backup.request import BackupRequest, ChangedRead
from .backup.source import ImageSource, SourceOpener
from .backup.stream_source import StreamSource
from .backup_reads import bitmap_read, change_map_read, hints_for
from .coordination.locking import WriterLock
from .coordination.readers import ReaderLock
from .format.config import FORMAT_VERSION, PLAINTEXT_MODE, ChunkerParams, ObjectLockSettings
from .format.crypto import Keys
from .format.manifest import decode_block
from .format.snapshots import SnapshotRecord, series_name
from .keys.encryption import Passphrase, change_key_passphrase, export_key_file, import_key_file
from .read.diff import changed_ranges
from .restore import known_contents
from .restore.restore_marks import refuse_interrupted_target
from .storage import Storage, read_config_at

# Flows that load native libraries (fastcdc, zstd) or the restore machinery (chunker,
# backup, copy, reader, restore) are imported in the methods that run them, so that
# `list` and `info` load none of it; annotations still name their types (never evaluated).

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
        self.root = storage.backend.root  # a local repository's folder; None on an object store
        self.location = storage.location  # either, for messages
        self.config = storage.config

    @classmethod
    def init(cls, location: LocationLike, chunk_size: int | None = None,
             compression: str = "zstd:3", encryption: str = PLAINTEXT_MODE,
             passphrase: Passphrase = None, version: int = FORMAT_VERSION,
             chunker: ChunkerParams | None = None, append_only: bool = False,
             object_lock: ObjectLockSettings | None = None) -> "Repository":
        return cls(Storage.create(location, chunk_size, compression, encryption, passphrase,
                                  version, chunker, append_only, object_lock))

    @staticmethod
    def chunker_params(location: LocationLike) -> ChunkerParams:
        """The chunker parameters of the repository at ``location``, read without its
        passphrase (``init --copy-chunker-params-from``)."""
        return read_config_at(location).chunker

    @classmethod
    def open(cls, location: LocationLike, passphrase: Passphrase = None,
             keys: Keys | None = None, writer: bool = False,
             reader: bool = False) -> "Repository":
        """``passphrase`` is asked for only if the repository is encrypted (see Storage);
        a ``writer`` catches the index up under its lock only; a ``reader`` (a command that
        uses the index only under reader_lock(), or not at all) an object store's cache
        under its registration only."""
        return cls(Storage.open(location, passphrase, keys, catch_up=not writer,
                                reader=reader))

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (existing or not) lies inside this repository, reached through
        any symbolic link or bind mount (never: a repository on an object store)."""
        return self.storage.backend.contains(path)

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
        with closing(as_location(location).open_backend()) as backend:
            import_key_file(backend, export)

    def change_passphrase(self, old: Passphrase, new: Passphrase,
                          lock_wait_s: float = 0.0) -> None:
        """Under the exclusive lock: a key change is an administrator's, never beside a
        backup, and never from credentials that may not delete."""
        self._require_key()
        with self.writer_lock("key change-passphrase", lock_wait_s):
            change_key_passphrase(self.storage.backend, old, new)

    # -- writing -----------------------------------------------------------------------
    def backup(self, source_path: Path, name: str | None = None, tags: tuple[str, ...] = (),
               lock_wait_s: float = 0.0, progress: Progress | None = None,
               changes: ChangeMap | None = None, verify_unchanged: int = 0,
               open_source: SourceOpener = ImageSource,
               on_new_series: Callable[[str], None] | None = None) -> SnapshotRecord:
        """Back up one image; the snapshot record is written only once all it references
        is durable. On any failure nothing is recorded and earlier snapshots are intact.
        With ``changes`` only the changed ranges are read (docs/change-maps.md).
        ``open_source`` opens the path, by default in place (checked for changes after the
        read); sources/ gives point-in-time views (docs/point-in-time.md).
        ``on_new_series(name)`` is told, as the backup starts, when the series has no
        snapshot yet (the listing that finds the previous snapshot's chunks tells)."""
        started = time.monotonic()
        self.check_backup_source(Path(source_path))
        request = BackupRequest(series_name(source_path, name), tuple(tags), started,
                                progress)
        with open_source(Path(source_path)) as source:
            if changes is None:
                return self._back_up(source, request, lock_wait_s, on_new_series)
            check_fits(changes, source.size)
            return self._back_up(source, request, lock_wait_s,
                                 changed=functools.partial(change_map_read, self.storage, source,
                                                           request, changes, verify_unchanged))

    def check_backup_source(self, path: Path) -> None:
        """BadInput if the file ``path`` may not be backed up: it is inside the repository,
        or the target of a restore that was interrupted (it holds a mix of two images)."""
        self.refuse_inside(path, "backup source")
        refuse_interrupted_target(path)

    def backup_stream(self, stream: BinaryIO, name: str, tags: tuple[str, ...] = (),
                      size: int | None = None, lock_wait_s: float = 0.0,
                      progress: Progress | None = None,
                      allow_shrink: bool = False,
                      on_new_series: Callable[[str], None] | None = None) -> SnapshotRecord:
        """Back up an image read once from ``stream`` (standard input), in order. Without
        ``size`` or ``allow_shrink``, a stream shorter than the series' latest snapshot is
        refused: that is how a producer killed half way shows in a pipe."""
        started = time.monotonic()
        minimum = 1
        if size is None and not allow_shrink:
            latest = self.latest_of_series(name)
            minimum = latest.size if latest else 1
        return self._back_up(StreamSource(stream, size, minimum),
                             BackupRequest(name, tuple(tags), started, progress),
                             lock_wait_s, on_new_series)

    def backup_source(self, source, name: str, tags: tuple[str, ...] = (),
                      lock_wait_s: float = 0.0, progress: Progress | None = None,
                      on_new_series: Callable[[str], None] | None = None,
                      bitmap: str | None = None, verify_unchanged: int = 0
                      ) -> SnapshotRecord:
        """Back up an opened source that is neither a plain file nor a stream (diskvault's
        sources/: an NBD export, a disk-image format read as the guest sees it): anything
        with ``size``, ``label``, ``pieces()`` and ``check_unchanged()`` like ImageSource.
        With a dirty ``bitmap`` (the source then also has ``changes``, ``counts_from`` and
        ``read_buffers``), only what it marks is read when the series' latest snapshot was
        made with it (store/backup/bitmap_base.py); else the whole source, with a warning."""
        request = BackupRequest(name, tuple(tags), time.monotonic(), progress,
                                dirty_bitmap=bitmap)
        changed = None
        if bitmap is not None:
            changed = functools.partial(bitmap_read, self.storage, source, request,
                                        verify_unchanged)
        return self._back_up(source, request, lock_wait_s, on_new_series, changed)

    def _back_up(self, source, request: BackupRequest, lock_wait_s: float,
                 on_new_series: Callable[[str], None] | None = None,
                 changed: Callable[[], ChangedRead] | None = None) -> SnapshotRecord:
        """The backup under its backup lock (beside other backups), the previous
        snapshot's chunks as hints; ``changed`` is asked under it how a change map's backup
        reads (default: a full read)."""
        storage = self.storage
        with storage.disk_full_reported("the backup was abandoned and earlier snapshots are "
                                        "intact: free space, then rerun it"), \
                storage.backup_lock(f"backup {source.label}", lock_wait_s) as lock:
            storage.catch_up_before_backup()
            from .backup.back_up import back_up

            request = replace(request, hints=hints_for(storage, request.name, on_new_series),
                              changed=changed() if changed else None)
            return back_up(storage, source, request, before_record=lock.ensure_held)

    def copy_from(self, source: "Repository", selectors: tuple[str, ...] = (),
                  lock_wait_s: float = 0.0, progress: Progress | None = None):
        """Copy the selected snapshots of ``source`` (default: all) that this repository
        lacks, ids and all, and their protection marks; only missing chunks are written
        (store/copy.py). Returns a ``copy.CopyReport``."""
        if source.config.repository_id == self.config.repository_id:
            raise BadInput(f"{source.location} and {self.location} have the same repository id (one "
                           f"repository, or a copy of its folder): copy between two "
                           f"repositories made by separate inits")
        from .copy import copy_snapshots, marks_to_carry, pending_copies  # on use (above)

        storage = self.storage
        to_copy, report = pending_copies(source.storage, storage, selectors)
        if not to_copy and not marks_to_carry(source.storage, storage, report.skipped):
            return report  # nothing to send: no lock, no registration, no catching up
        with storage.disk_full_reported("the copy stopped; snapshots already copied are "
                                        "whole: free space, then rerun it"), \
                source.reader_lock(), \
                storage.backup_lock(f"copy from {source.location}", lock_wait_s) as lock:
            storage.catch_up_before_backup()
            return copy_snapshots(source.storage, storage, selectors, progress,
                                  before_record=lock.ensure_held)

    # -- snapshots ---------------------------------------------------------------------
    def list_snapshots(self, name: str | None = None) -> list[SnapshotRecord]:
        """The readable snapshots' headers (records without their block lists: load one
        to read it), oldest first."""
        headers = self.storage.snapshots.all().headers
        return [r for r in headers if r.name == name] if name else headers

    def latest_of_series(self, name: str) -> SnapshotRecord | None:
        """The series' newest snapshot, None if it has none: one record read where this
        host's catalogue knows the others (host/snapshot_catalogue.py)."""
        return self.storage.snapshots.latest_of_series(name)

    def accept_missing_snapshots(self) -> list:
        """Forget the snapshots this host saw that the repository no longer holds (an older
        copy put back, or snapshots deleted from another host, on purpose); returns them
        (``seen_snapshots.SeenSnapshot``)."""
        return self.storage.snapshots.accept_missing()

    def scan_snapshots(self):
        """(readable snapshots' headers oldest first, errors of damaged records)."""
        records, damaged = self.storage.snapshots.scan()
        return records.headers, damaged

    def find_snapshot(self, selector: str) -> SnapshotRecord:
        return self.storage.snapshots.find(selector)

    def snapshot_ids(self) -> set[str]:
        """Ids of the complete snapshots, without reading any record: cheap enough to poll
        (the mount re-lists with it). Temp files of a record being written are not ids."""
        return set(self.storage.snapshots.ids())

    def load_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        return self.storage.snapshots.load(snapshot_id)

    def totals(self) -> RepositoryTotals:
        """Sizes over the readable snapshots (damaged records are reported elsewhere)."""
        records = self.storage.snapshots.scan()[0].headers
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

    def open_image(self, record: SnapshotRecord, **cache_sizes):
        """A ``reader.ImageReader``: random-access reads of the snapshot's image."""
        from .read.reader import ImageReader  # on use (see the imports above)

        return ImageReader(self.storage.chunks, self._whole(record), self.storage.pool,
                           **cache_sizes)

    def _whole(self, record: SnapshotRecord) -> SnapshotRecord:
        """``record`` with its block list: a header (list_snapshots) is read in full."""
        return record if record.blocks is not None else self.storage.snapshots.load(record.id)

    def restore(self, record: SnapshotRecord, target: Path, force: bool = False,
                full: bool = False, in_place: bool = False,
                progress: Progress | None = None):
        """The snapshot written to ``target`` (docs/restore.md); a ``restore.RestoreResult``."""
        from .restore.restore import restore_to_path  # on use (see the imports above)

        self.refuse_inside(Path(target), "restore target")
        repository_id = self.config.repository_id
        with self.reader_lock():
            held = self._held_snapshot(Path(target)) if force and not full else None
            known_contents.forget(Path(target))
            result = restore_to_path(self.storage.chunks, self._whole(record),
                                     self.storage.pool, Path(target), force, full, in_place,
                                     progress, held)
            known_contents.remember(Path(target), repository_id, record.id)
            return result

    def _held_snapshot(self, target: Path) -> SnapshotRecord | None:
        """The snapshot the file ``target`` is known to hold unchanged (see
        store/restore/known_contents.py), if it is still in this repository and readable."""
        held = known_contents.held_snapshot(target, self.config.repository_id)
        if held is None or not self.storage.snapshots.exists(held):
            return None
        try:
            return self.storage.snapshots.load(held)
        except CorruptData:
            return None

    def cat(self, record: SnapshotRecord, out: BinaryIO, progress: Progress | None = None) -> None:
        from .restore.restore import image_pieces, write_stream  # on use (see the imports above)

        with self.reader_lock():
            write_stream(image_pieces(self.storage.chunks, self._whole(record),
                                      self.storage.pool), out, progress)

    def diff(self, a: SnapshotRecord, b: SnapshotRecord) -> list[tuple[int, int]]:
        return changed_ranges(self._whole(a), self._whole(b), self.storage.chunks.get)

    def browse(self, record: SnapshotRecord, **cache_sizes):
        """The volumes and filesystems inside a snapshot's image (`ls`, `pull`, the mount's
        .files/: a ``browse.SnapshotFiles``), each filesystem opened on first use. Hold
        reader_lock() while using it."""
        # On use: it loads the image parsers, which only ls, pull and the mount need.
        from .read.browse import BROWSE_READAHEAD_BYTES, SnapshotFiles

        options = {"readahead_max_bytes": BROWSE_READAHEAD_BYTES, **cache_sizes}
        return SnapshotFiles(self.open_image(record, **options))
