"""check --repair: rebuild the index from what is on disk, and keep every intact byte.

The index is rebuilt from pack footers alone, in one LMDB transaction, so deleting the
index folder is recoverable. With ``read_data`` every record is verified first and the
damaged ones are left out: a later backup that meets the same data stores it again, and
the snapshots that lacked it restore in full once more. A pack whose footer is damaged
(truncated, overwritten) cannot be listed; its intact records that the old index still
locates are verified and copied into a new pack, then the damaged pack is moved to
``damaged/`` -- set aside for inspection, never deleted. What cannot be recovered is
reported as the snapshots that can no longer be restored in full.

The repository is opened as by every command (``Storage.open``: an index that cannot even
be opened is set aside there). The writer lock is checked (``WriterLock.ensure_held``)
before an index that does not read in full is set aside, before it is rebuilt and before
damaged packs are moved: a repair whose lock another host took over changes nothing more.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptData
from ..store.backends.location import LocationLike
from ..store.backup.packing import PackFiller
from ..store.format.packs import PackEntry, read_footer
from ..store.index.bulk_load import rebuild
from ..store.index.chunk_index import ChunkIndex
from ..store.keys.encryption import Passphrase
from ..store.storage import Storage
from .append_only import is_append_only
from .check import CheckReport, check
from .verify import read_verified, verify_pack

PackList = tuple[str, list[PackEntry], int]  # pack id, its records, its file size


@dataclass
class RepairReport:
    index_set_aside: Path | None = None    # an unreadable index, moved aside
    chunks_before: int = 0
    chunks_indexed: int = 0
    packs_indexed: int = 0
    missing_packs: list[str] = field(default_factory=list)         # indexed, not on disk
    dropped_records: list[tuple[str, bytes, str]] = field(default_factory=list)
    damaged_packs: list[tuple[str, str]] = field(default_factory=list)  # footer unreadable
    set_aside_packs: list[str] = field(default_factory=list)       # moved to damaged/
    kept_in_place: str | None = None  # why damaged packs were not moved (nothing deleted)
    chunks_salvaged: int = 0
    after: CheckReport | None = None
    duration_s: float = 0.0


def repair_repository(location: LocationLike, read_data: bool = False,
                      lock_wait_s: float = 0.0, passphrase: Passphrase = None) -> RepairReport:
    """check --repair, under the writer lock: the storage opened as for any command (an
    index that cannot be opened is set aside there), one that does not read in full set
    aside too, then the index is rebuilt from the packs."""
    with Storage.open(location, passphrase, catch_up=False) as storage, \
            storage.disk_full_reported("the repair stopped: free space on that disk, then "
                                       "rerun it"), \
            storage.writer_lock("check --repair", lock_wait_s) as lock:
        storage.release_reserve_if_full()
        lock.ensure_held()
        set_aside = storage.set_aside_unreadable_index() or storage.index_set_aside
        return repair(storage, set_aside, lock.ensure_held, read_data)


class _Salvage:
    """New packs for the intact records rescued from packs without a usable footer."""

    def __init__(self, storage: Storage):
        self.finished: list[PackList] = []  # durable; the rebuilt index takes them in
        self.digests: set[bytes] = set()
        self._packs = PackFiller(storage.packs, storage.config.pack_target_bytes, self._keep)

    def add(self, entry: PackEntry, stored) -> None:
        if entry.digest in self.digests:
            return
        self.digests.add(entry.digest)
        self._packs.add(entry.digest, stored, entry.raw_size, entry.flags)

    def finish(self) -> None:
        self._packs.finish()

    def abort(self) -> None:
        self._packs.abort()

    def _keep(self, pack_id: str, entries: list[PackEntry], file_size: int) -> None:
        self.finished.append((pack_id, entries, file_size))


def _old_locations(index: ChunkIndex) -> tuple[dict[str, list[PackEntry]], set[str], int]:
    """What the current index says, grouped by pack: the only map into a pack whose footer
    is lost. An index that cannot be read says nothing."""
    by_pack: dict[str, list[PackEntry]] = defaultdict(list)
    count = 0
    try:
        for digest, location in index.iter_chunks():
            by_pack[location.pack_id].append(location.entry(digest))
            count += 1
        return by_pack, index.known_packs(), count
    except CorruptData:
        return defaultdict(list), set(), 0


def repair(storage: Storage, index_set_aside: Path | None, ensure_held: Callable[[], None],
           read_data: bool = False) -> RepairReport:
    """Rebuild the index of ``storage``; call with the writer lock held, whose
    ``ensure_held`` raises LockLost once it is in other hands."""
    started = time.monotonic()
    report = RepairReport(index_set_aside=index_set_aside)
    backend, codec, pool = storage.packs, storage.codec, storage.pool
    old, old_packs, report.chunks_before = _old_locations(storage.index)
    backend.discard_unfinished()
    packs: list[PackList] = []
    salvage = _Salvage(storage)
    on_disk = list(backend.list())
    try:
        for pack_id in on_disk:
            try:
                entries = read_footer(backend, pack_id)
            except CorruptData as error:
                report.damaged_packs.append((pack_id, str(error)))
                for entry, stored, problem in verify_pack(backend, codec, pack_id,
                                                          old.get(pack_id, []), pool):
                    if problem is None:
                        salvage.add(entry, stored)
                continue
            if read_data:
                checked = list(verify_pack(backend, codec, pack_id, entries, pool))
                entries = [entry for entry, _, problem in checked if problem is None]
                report.dropped_records.extend((pack_id, entry.digest, problem)
                                              for entry, _, problem in checked if problem)
            packs.append((pack_id, entries, backend.size(pack_id)))
        salvage.finish()  # durable before the index points into it
    except BaseException:
        salvage.abort()
        raise
    packs.extend(salvage.finished)
    report.chunks_salvaged = len(salvage.digests)
    if not read_data:
        packs = _without_damaged_duplicates(storage, packs, report)
    report.missing_packs = sorted(old_packs - set(on_disk))
    ensure_held()
    try:
        rebuild(storage.index, packs, storage.identity)  # maintenance's counts start anew too
    except CorruptData:  # damage the full read did not meet (a free page): begin anew
        report.index_set_aside = storage.replace_damaged_index()
        rebuild(storage.index, packs, storage.identity)
    report.packs_indexed = len(packs)
    report.chunks_indexed = storage.index.chunk_count()
    _set_aside_damaged_packs(storage, report, ensure_held)
    report.after = check(storage)
    report.duration_s = round(time.monotonic() - started, 3)
    return report


def _without_damaged_duplicates(storage: Storage, packs: list[PackList],
                                report: RepairReport) -> list[PackList]:
    """A chunk with several copies (a compaction's copy beside its doomed source, a
    salvage) is verified copy by copy in pack order, so that the rebuilt index, which keeps
    the first copy it meets, never points at a damaged one while an intact one exists."""
    first: dict[bytes, tuple[str, PackEntry]] = {}
    copies: dict[bytes, list[tuple[str, PackEntry]]] = {}
    for pack_id, entries, _ in packs:
        for entry in entries:
            if entry.digest in first:
                copies.setdefault(entry.digest, [first[entry.digest]]).append((pack_id, entry))
            else:
                first[entry.digest] = (pack_id, entry)
    damaged: set[tuple[str, int]] = set()
    for digest, candidates in copies.items():
        for pack_id, entry in candidates:
            try:
                read_verified(storage.packs, storage.codec, pack_id, entry)
                break
            except CorruptData as error:
                damaged.add((pack_id, entry.offset))
                report.dropped_records.append((pack_id, digest, str(error)))
    return [(pack_id, [e for e in entries if (pack_id, e.offset) not in damaged], size)
            for pack_id, entries, size in packs]


def _set_aside_damaged_packs(storage: Storage, report: RepairReport,
                             ensure_held: Callable[[], None]) -> None:
    """Move packs without a usable footer to damaged/, once no reader may use them; in an
    append-only repository, or under S3 Object Lock, they stay where they are (a move
    deletes the old name)."""
    if not report.damaged_packs:
        return
    if is_append_only(storage):
        report.kept_in_place = "the repository is append-only"
    elif storage.backend.object_lock is not None:
        report.kept_in_place = "S3 Object Lock keeps packs where they are"
    if report.kept_in_place:
        return
    ensure_held()
    with storage.readers_excluded() as excluded:
        if not excluded:
            return  # a later repair moves them; the index no longer points into them
        for pack_id, _ in report.damaged_packs:
            storage.packs.set_aside(pack_id)
            report.set_aside_packs.append(pack_id)
