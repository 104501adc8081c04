"""The facade the CLI and the FUSE layer talk to: init/open, lock, backup, snapshots,
images. Orchestration only: the work is done by the modules it calls."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from ..maintenance import check as checking
from ..maintenance import compact as compaction
from ..maintenance import prune as pruning
from ..maintenance import repair as repairing
from . import locking, space
from .backend import LocalBackend
from .backup import make_record, record_image
from .browse import BROWSE_READAHEAD_BYTES, SnapshotFiles
from .chunker import Hint, hints_from_spans
from .chunks import ChunkReader, ChunkWriter, Codec
from .config import ChunkerParams, Compression, RepositoryConfig, read_config, write_config
from .diff import changed_ranges
from .durable import make_private_folder
from ..errors import BadInput, CorruptData, RepositoryNotFound, RepositoryReadOnly
from .index import ChunkIndex
from .manifest import decode_block
from .packs import PackStore, read_footer
from .pipeline import new_pool
from .reader import ImageReader
from .restore import image_pieces, image_spans, restore_to_path, write_stream
from ..maintenance.retention import KeepPolicy
from .snapshots import (BackupStats, SnapshotRecord, SnapshotStore, is_snapshot_id,
                        select_snapshot)
from .source import ImageSource

log = logging.getLogger(__name__)

PACKS_DIR = "packs"
INDEX_DIR = "index"
SNAPSHOTS_DIR = "snapshots"
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
    """An open repository. Readers may use it while another process writes."""

    def __init__(self, root: Path, config: RepositoryConfig):
        self.root = root
        self.config = config
        self.backend = LocalBackend(root)
        self.packs = PackStore(self.backend)
        # The index is a local cache, not part of the backend: its folder is chosen here.
        self.index = ChunkIndex(root / INDEX_DIR)
        self.snapshots = SnapshotStore(self.backend)
        self.codec = Codec(config.compression)
        self.chunks = ChunkReader(self.packs, self.index, self.codec)
        self.space_folders = space_folders(root)
        self._pool = None

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def init(cls, root: Path, chunk_size: int | None = None,
             compression: str = "zstd:3") -> "Repository":
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise BadInput(f"cannot init {root}: it exists and is not an empty folder")
        chunker = ChunkerParams() if chunk_size is None else ChunkerParams.from_average(chunk_size)
        chunker.validate()
        config = RepositoryConfig(chunker=chunker, compression=Compression.parse(compression))
        root.parent.mkdir(parents=True, exist_ok=True)
        # Resolved once (the user may name it through a link); inside, nothing is followed.
        root = root.resolve()
        make_private_folder(root)  # an empty folder made by the user keeps its mode
        for folder in (PACKS_DIR, SNAPSHOTS_DIR):
            make_private_folder(root / folder)
        backend = LocalBackend(root)
        locking.prepare_lock_files(backend)
        space.allocate_reserve(backend)
        write_config(backend, config)  # last: a folder without config is not a repository
        return cls(root, config)

    @classmethod
    def open(cls, root: Path) -> "Repository":
        root = Path(root)
        if not root.exists():
            raise RepositoryNotFound(f"repository {root} does not exist; create it with "
                                     f"'diskvault init -r {root}'")
        if not root.is_dir():
            raise RepositoryNotFound(f"repository {root} is not a folder")
        # Resolved once: inside, folders are opened without following any link.
        root = root.resolve()
        return cls(root, read_config(LocalBackend(root)))

    @property
    def pool(self):
        if self._pool is None:
            self._pool = new_pool("diskvault")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.backend.close()
        self.index.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (existing or not) lies inside this repository, reached through
        any symbolic link or bind mount: its real path is under the root's, or one of its
        folders is the root folder itself (same device and inode)."""
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
            raise BadInput(f"{role} {path} is inside the repository {self.root}; diskvault "
                           f"never reads or writes its own files as data: choose a path "
                           f"outside it")

    def disk_full_reported(self, outcome: str):
        """A context in which a full disk becomes RepositoryFull (exit 74) ending in
        ``outcome``."""
        return space.disk_full_reported(self.space_folders, outcome)

    # -- locks -------------------------------------------------------------------------
    def writer_lock(self, command: str, lock_wait_s: float = 0.0) -> locking.WriterLock:
        ensure_writable(self.backend, command)
        return locking.WriterLock(self.backend, command, lock_wait_s)

    def reader_lock(self) -> locking.ReaderLock:
        return locking.ReaderLock(self.backend)

    def break_lock(self) -> locking.LockHolder | None:
        return locking.break_lock(self.backend)

    # -- writing -----------------------------------------------------------------------
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

    def backup(self, source_path: Path, name: str | None = None, tags: tuple[str, ...] = (),
               lock_wait_s: float = 0.0, progress: Progress | None = None) -> SnapshotRecord:
        """Back up one image; the snapshot record is written only once all it references
        is durable. On any failure nothing is recorded and earlier snapshots are intact."""
        started = time.monotonic()
        self.refuse_inside(Path(source_path), "backup source")
        with self.disk_full_reported("the backup was abandoned and earlier snapshots are "
                                     "intact: free space, then rerun it"), \
                ImageSource(Path(source_path)) as source, \
                self.writer_lock(f"backup {source_path}", lock_wait_s):
            self.recover_unindexed_packs()
            stats = BackupStats()
            # Compression gets threads of its own: on the shared pool, the hashing that
            # the chunker waits for would queue behind it.
            compress_pool = new_pool("compress")
            writer = ChunkWriter(self.packs, self.index, self.codec,
                                 self.config.pack_target_bytes, compress_pool, stats)
            try:
                manifest = record_image(source, self.config.chunker, writer, self.index,
                                        self.pool, stats, self._hints_for(name or
                                        Path(source_path).name), progress)
                source.check_unchanged()
                writer.flush()
                record = make_record(source, manifest, name or Path(source_path).name,
                                     list(tags), stats, started)
                self.snapshots.save(record)
            except BaseException:
                writer.abort()
                raise
            finally:
                compress_pool.shutdown(cancel_futures=True)
            writer.close()
            return record

    def _hints_for(self, name: str) -> Iterator[Hint]:
        """The chunks of the series' latest snapshot, as cutting hints; a damaged previous
        manifest only costs speed (the hints stop), never the backup."""
        series = self.list_snapshots(name)
        if not series:
            return
        try:
            yield from hints_from_spans(image_spans(self.chunks, series[-1]))
        except CorruptData as error:
            log.warning("previous snapshot of %s unreadable, chunking without hints: %s",
                        name, error)

    # -- snapshots ---------------------------------------------------------------------
    def list_snapshots(self, name: str | None = None) -> list[SnapshotRecord]:
        records = self.snapshots.all()
        return [r for r in records if r.name == name] if name else records

    def scan_snapshots(self):
        """(readable records oldest first, errors of damaged records)."""
        return self.snapshots.scan()

    def find_snapshot(self, selector: str) -> SnapshotRecord:
        if is_snapshot_id(selector) and self.snapshots.exists(selector):
            # A full id: read just that record, even if another one is damaged.
            return self.snapshots.load(selector)
        return select_snapshot(self.snapshots.all(), selector)

    def snapshot_ids(self) -> set[str]:
        """Ids of the complete snapshots, without reading any record: cheap enough to poll
        (the mount re-lists with it). Temp files of a record being written are not ids."""
        return set(self.snapshots.ids())

    def load_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        return self.snapshots.load(snapshot_id)

    def totals(self) -> RepositoryTotals:
        """Sizes over the readable snapshots (damaged records are reported elsewhere)."""
        records, _ = self.snapshots.scan()
        stats = list(self.index.pack_stats())
        return RepositoryTotals(
            snapshots=len(records), logical_bytes=sum(r.size for r in records),
            zero_bytes=sum(r.stats.zero_bytes for r in records),
            stored_bytes=sum(s.file_size for _, s in stats), chunks=self.index.chunk_count(),
            packs=len(stats))

    # -- reading -----------------------------------------------------------------------
    def load_manifest_block(self, digest: bytes):
        return decode_block(self.chunks.get(digest))

    def open_image(self, record: SnapshotRecord, **cache_sizes) -> ImageReader:
        return ImageReader(self.chunks, record, self.pool, **cache_sizes)

    def restore(self, record: SnapshotRecord, target: Path, force: bool = False,
                progress: Progress | None = None) -> None:
        self.refuse_inside(Path(target), "restore target")
        lock = self.reader_lock()
        try:
            restore_to_path(image_pieces(self.chunks, record, self.pool), record, Path(target),
                            force, progress)
        finally:
            lock.release()

    def cat(self, record: SnapshotRecord, out: BinaryIO, progress: Progress | None = None) -> None:
        lock = self.reader_lock()
        try:
            write_stream(image_pieces(self.chunks, record, self.pool), out, progress)
        finally:
            lock.release()

    def diff(self, a: SnapshotRecord, b: SnapshotRecord) -> list[tuple[int, int]]:
        return changed_ranges(a, b, self.chunks.get)

    def browse(self, record: SnapshotRecord, **cache_sizes) -> SnapshotFiles:
        """The volumes and filesystems inside a snapshot's image (`ls`, `pull`, the mount's
        .files/), each filesystem opened on first use. Hold reader_lock() while using it."""
        options = {"readahead_max_bytes": BROWSE_READAHEAD_BYTES, **cache_sizes}
        return SnapshotFiles(self.open_image(record, **options))

    # -- maintenance: delete, prune, compact, check, repair ------------------------------
    def delete_snapshots(self, selectors: Sequence[str],
                         lock_wait_s: float = 0.0) -> list[SnapshotRecord]:
        with self.disk_full_reported("snapshots listed by 'diskvault list' are intact: "
                                     "rerun the delete"):
            return pruning.delete_snapshots(self, selectors, lock_wait_s)

    def prune(self, policy: KeepPolicy, name: str | None = None, dry_run: bool = False,
              allow_delete_all: bool = False, now: datetime | None = None,
              lock_wait_s: float = 0.0) -> pruning.PrunePlan:
        with self.disk_full_reported("snapshots listed by 'diskvault list' are intact: "
                                     "rerun the prune"):
            return pruning.prune(self, policy, name, dry_run, allow_delete_all, now,
                                 lock_wait_s)

    def compact(self, threshold: float = compaction.DEFAULT_THRESHOLD,
                lock_wait_s: float = 0.0) -> compaction.CompactResult:
        with self.disk_full_reported("compact stopped and lost nothing: delete snapshots, "
                                     "or free space elsewhere on that disk, then rerun it"):
            return compaction.compact(self, threshold, lock_wait_s)

    def check(self, read_data: bool = False,
              progress: checking.Progress | None = None) -> checking.CheckReport:
        return checking.check(self, read_data, progress)

    @classmethod
    def repair(cls, root: Path, read_data: bool = False,
               lock_wait_s: float = 0.0) -> repairing.RepairReport:
        """check --repair, under the writer lock: an index that cannot be read is set aside
        before the repository is opened, then the index is rebuilt from the packs."""
        root = Path(root).resolve()
        backend = LocalBackend(root)
        config = read_config(backend)
        ensure_writable(backend, "check --repair")
        with space.disk_full_reported(space_folders(root), "the repair stopped: free space "
                                      "on that disk, then rerun it"), \
                locking.WriterLock(backend, "check --repair", lock_wait_s):
            space.release_reserve_if_full(backend, space_folders(root))
            set_aside = repairing.set_aside_unreadable_index(root / INDEX_DIR)
            with cls(root, config) as repository:
                return repairing.repair(repository, set_aside, read_data)


def space_folders(root: Path) -> list[Path]:
    """The folders whose filesystems a writer fills (the index may be a mount of its own)."""
    return [root, root / INDEX_DIR, root / PACKS_DIR]


def ensure_writable(backend: LocalBackend, command: str) -> None:
    """RepositoryReadOnly, at once and in one line, where a writer could not finish."""
    reason = backend.read_only_reason()
    if reason is not None:
        raise RepositoryReadOnly(f"repository {backend.location} is read-only: {reason}; "
                                 f"{command} changes it (readers such as list, restore, cat, "
                                 f"mount and check work)")


# "scheme://…", "scheme:…", "user@host:path": a colon before the first slash. A local
# name with such a colon is still reachable as ./name.
_REMOTE_LOOKING = re.compile(r"^[^/]*:")


def repository_path(value: str | os.PathLike | None) -> Path:
    """The local folder named by -r/DISKVAULT_REPO. What looks like a URL or a remote spec
    is refused rather than taken for a local folder with an odd name."""
    if not value:
        raise BadInput("no repository given: use -r/--repo PATH or set DISKVAULT_REPO")
    text = os.fspath(value)
    if isinstance(text, str) and _REMOTE_LOOKING.match(text):
        local_hint = "" if "://" in text else f", or ./{text} for a local name with a colon"
        raise BadInput(f"repository {text!r} looks like a URL or a remote location; this "
                       f"diskvault supports local folders only: give a path such as "
                       f"/backups/vm1{local_hint}")
    return Path(text)
