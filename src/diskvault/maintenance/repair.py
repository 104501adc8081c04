"""check --repair: rebuild the index from what is on disk, and keep every intact byte.

The index is rebuilt from pack footers alone (store/index/bulk_load.py), so deleting the
index folder is recoverable; the footers are read once and kept on disk in between
(footer_spool.py), so memory does not grow with the chunks. With ``read_data`` every record is verified first and the
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptData
from ..store.backends.location import LocationLike
from ..store.backup.packing import PackFiller
from ..store.format.packs import PackEntry, read_footer
from ..store.index.bulk_load import PackFooter, rebuild
from ..store.index.chunk_index import ChunkIndex
from ..store.keys.encryption import Passphrase
from ..store.storage import Storage
from .append_only import is_append_only
from .check import CheckReport, check
from .footer_spool import FooterSpool
from .verify import read_verified, verify_pack

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
        self.finished: list[PackFooter] = []  # durable; the rebuilt index takes them in
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


def repair(storage: Storage, index_set_aside: Path | None, ensure_held: Callable[[], None],
           read_data: bool = False) -> RepairReport:
    """Rebuild the index of ``storage``; call with the writer lock held, whose
    ``ensure_held`` raises LockLost once it is in other hands. Footers are read once, one
    pack at a time, and kept on disk (FooterSpool) until the rebuild reads them back:
    memory follows the packs and the damage found, not the chunks."""
    started = time.monotonic()
    report = RepairReport(index_set_aside=index_set_aside)
    old_packs, report.chunks_before = _old_summary(storage.index)
    storage.packs.discard_unfinished()
    on_disk = list(storage.packs.list())
    with FooterSpool(storage.index.path) as spool:
        dropped = _read_footers(storage, on_disk, spool, report, read_data)
        salvage = _Salvage(storage)
        try:
            _salvage_damaged_packs(storage, salvage, report)
            salvage.finish()  # durable before the index points into it
        except BaseException:
            salvage.abort()
            raise
        for pack_id, entries, file_size in salvage.finished:
            spool.add(pack_id, entries, file_size)
        report.chunks_salvaged = len(salvage.digests)
        if not read_data:
            dropped |= _damaged_duplicates(storage, spool, report)
        report.missing_packs = sorted(old_packs - set(on_disk))
        ensure_held()
        try:
            rebuild(storage.index, spool.packs(dropped), storage.identity)
        except CorruptData:  # damage the full read did not meet (a free page): begin anew
            report.index_set_aside = storage.replace_damaged_index()
            rebuild(storage.index, spool.packs(dropped), storage.identity)
        report.packs_indexed = spool.pack_count
    report.chunks_indexed = storage.index.chunk_count()
    _set_aside_damaged_packs(storage, report, ensure_held)
    report.after = check(storage)
    report.duration_s = round(time.monotonic() - started, 3)
    return report


def _old_summary(index: ChunkIndex) -> tuple[set[str], int]:
    """The packs and the number of chunks the current index knows (an index that cannot
    be read knows none)."""
    try:
        return index.known_packs(), index.chunk_count()
    except CorruptData:
        return set(), 0


def _read_footers(storage: Storage, on_disk: list[str], spool: FooterSpool,
                  report: RepairReport, read_data: bool) -> set[tuple[str, int]]:
    """Every readable footer into ``spool``, one pack at a time; packs without a usable
    footer noted in the report. With ``read_data`` every record is verified: returns the
    damaged ones (pack, offset), which the index leaves out."""
    dropped: set[tuple[str, int]] = set()
    for pack_id in on_disk:
        try:
            entries = read_footer(storage.packs, pack_id)
        except CorruptData as error:
            report.damaged_packs.append((pack_id, str(error)))
            continue
        if read_data:
            for entry, _, problem in verify_pack(storage.packs, storage.codec, pack_id,
                                                 entries, storage.pool):
                if problem:
                    dropped.add((pack_id, entry.offset))
                    report.dropped_records.append((pack_id, entry.digest, problem))
        spool.add(pack_id, entries, storage.packs.size(pack_id))
    return dropped


def _salvage_damaged_packs(storage: Storage, salvage: _Salvage, report: RepairReport) -> None:
    """The intact records that the current index locates in packs without a usable
    footer, copied into new packs (one pass over the index names them)."""
    damaged = [pack_id for pack_id, _ in report.damaged_packs]
    if not damaged:
        return
    try:
        located = storage.index.locations_in(damaged)
    except CorruptData:  # an index that cannot be read locates nothing
        return
    for pack_id in damaged:
        entries = [location.entry(digest) for digest, location in located[pack_id]]
        for entry, stored, problem in verify_pack(storage.packs, storage.codec, pack_id,
                                                  entries, storage.pool):
            if problem is None:
                salvage.add(entry, stored)


def _damaged_duplicates(storage: Storage, spool: FooterSpool,
                        report: RepairReport) -> set[tuple[str, int]]:
    """A chunk with several copies (a compaction's copy beside its doomed source, a
    salvage) is verified copy by copy in pack order, so that the rebuilt index, which keeps
    the first copy it meets, never points at a damaged one while an intact one exists.
    Returns the damaged copies (pack, offset) met before an intact one."""
    damaged: set[tuple[str, int]] = set()
    for digest, candidates in spool.duplicates():
        for pack_id, entry in candidates:
            try:
                read_verified(storage.packs, storage.codec, pack_id, entry)
                break
            except CorruptData as error:
                damaged.add((pack_id, entry.offset))
                report.dropped_records.append((pack_id, digest, str(error)))
    return damaged


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
