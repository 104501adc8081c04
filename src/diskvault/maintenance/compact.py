"""Compaction: give the space of chunks no snapshot uses back to the filesystem.

1. Bring the reference counts in step with the snapshot records (liveness.reconcile:
   reads only manifest blocks added or dropped since the last run).
2. Plan (compact_plan.py): review only the packs that may hold garbage: new since the
   last run, home of a chunk that died, doomed, or last seen with more unused bytes than
   the threshold given now.
   A pack with nothing live is doomed. A pack with more unused bytes than the threshold
   is emptied. The plan is then carried out: the review outcomes are saved and packs with
   nothing live are doomed and deleted (3.) before any copy is written, so that compact
   gives space back first on a full disk; then the live records of the packs to empty are
   read, verified, and copied into new packs, which are made durable and indexed
   (locations switched) before the old pack is marked doomed in LMDB.
3. Delete doomed packs, but only while no reader (restore, cat, mount, check) runs: a
   reader may still hold a location in them. Otherwise they wait for a later compact.
4. Trim ``generations/`` to the highest few (store/format/generations.py): the counter
   is the highest, which stays, and no one adds while compact holds the lock.

A kill at any instant is safe: a copy is indexed only once durable; a pack is doomed only
after its live records are indexed elsewhere; index entries into a doomed pack go before
its file does. A rerun reviews doomed packs again, so a chunk that a backup reused in the
meantime is copied out before its pack is deleted.

``compact --dry-run`` makes the same plan as a reader, from the reference counts a
reconcile would give (liveness.preview), and writes nothing.

On a bucket with S3 Object Lock (maintenance/object_lock.py), packs the lock still holds are
neither emptied nor deleted (they stay doomed for a later run, and the result says until
when), and every pack left in use is retained the repository's days from now.

A compaction that lost its writer lock (another host judged it stale and took it over) must
change nothing more: the lock is checked (``WriterLock.ensure_held``, one read) before each
step that changes the index or deletes a pack, and LockLost ends the run there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import CorruptData
from ..store.backup.packing import PackFiller
from ..store.coordination.locking import WriterLock
from ..store.format.manifest import ManifestEntry, decode_block
from ..store.format.packs import PackEntry, pack_name
from ..store.format.snapshot_store import SnapshotRecords
from ..store.pipeline import batches
from ..store.storage import Storage
from .append_only import refuse_if_append_only
from .compact_plan import (DEFAULT_THRESHOLD, CompactionPlan, live_records, pack_footer,
                           plan_compaction, record_cost, validate_threshold)
from .compact_requests import PlannedRequests, planned_requests
from .liveness import Liveness, preview
from .object_lock import extend_retention, locked_until
from .record_blocks import records_with_blocks
from .safety import refuse_if_damaged
from .sweep_choice import listed_digests
from .verify import verify_pack

log = logging.getLogger(__name__)

SAVE_EVERY_PACKS = 256  # review outcomes and deletions per LMDB transaction
DELETE_PACKS_PER_GROUP = 32  # pack files deleted between two checks of the lock
FULL_DISK_OUTCOME = ("compact stopped and lost nothing: delete snapshots, or free space "
                     "elsewhere on that disk, then rerun it")


@dataclass
class CompactResult:
    threshold: float
    blocks_added: int = 0          # manifest blocks newly accounted (new backups)
    blocks_released: int = 0       # manifest blocks no snapshot lists any more
    packs_reviewed: int = 0
    packs_rewritten: int = 0       # packs whose live records were copied out
    packs_deleted: int = 0
    packs_written: int = 0         # new packs holding the copies
    chunks_copied: int = 0
    bytes_written: int = 0         # file bytes of the new packs
    bytes_freed: int = 0           # file bytes of the deleted packs
    packs_waiting: int = 0         # doomed packs kept because readers run
    bytes_waiting: int = 0
    packs_damaged: list[str] = field(default_factory=list)  # left alone: run check
    packs_kept_as_last_copy: list[str] = field(default_factory=list)  # doomed, not deleted
    packs_locked: int = 0          # S3 Object Lock holds them: left for a later compact
    locked_until: str | None = None  # the latest date among those (ISO, UTC)
    packs_retained: int = 0        # packs in use whose retention was extended
    duration_s: float = 0.0


def compact(storage: Storage, threshold: float = DEFAULT_THRESHOLD,
            lock_wait_s: float = 0.0) -> CompactResult:
    """Reclaim unused space; holds the writer lock. See the module docstring."""
    validate_threshold(threshold)
    with storage.disk_full_reported(FULL_DISK_OUTCOME), \
            storage.writer_lock("compact", lock_wait_s) as lock:
        return compact_holding(storage, lock, threshold)


def compact_holding(storage: Storage, lock: WriterLock,
                    threshold: float = DEFAULT_THRESHOLD) -> CompactResult:
    """The compaction itself, under ``lock`` (held by the caller): LockLost, with nothing
    more changed, once the lock is found in other hands."""
    refuse_if_append_only(storage, "compact")
    storage.release_reserve_if_full()
    started = time.monotonic()
    lock.ensure_held()
    storage.recover_unindexed_packs()  # may rebuild the index: before any count is read
    with storage.keeping_index():  # a rebuild from here on would empty the counts
        result = _compact_counted(storage, lock, threshold)
    result.duration_s = round(time.monotonic() - started, 3)
    storage.allocate_reserve()
    return result


def _compact_counted(storage: Storage, lock: WriterLock, threshold: float) -> CompactResult:
    liveness = Liveness(storage.index)
    with records_with_blocks(storage, intact=True) as (records, live):
        lock.ensure_held()
        stats = liveness.reconcile(live, _block_reader(storage, records), storage.pool)
        refuse_if_damaged(storage, "compact", records, live, liveness)
    plan = plan_compaction(storage, liveness, threshold)
    executor = _Executor(storage, liveness, plan, lock.ensure_held)
    executor.locked.update(_without_locked_rewrites(storage, plan))
    result = executor.run()
    if executor.locked:
        result.packs_locked = len(executor.locked)
        result.locked_until = max(executor.locked.values()).isoformat()
    if storage.backend.object_lock is not None:
        lock.ensure_held()
        result.packs_retained = extend_retention(
            storage, {pack_id for pack_id, _ in storage.index.pack_stats()} - liveness.doomed())
    lock.ensure_held()
    storage.snapshots.generations.trim()  # exclusive: no one adds, so the highest stays
    result.blocks_added = stats.blocks_added
    result.blocks_released = stats.blocks_released
    return result


def _without_locked_rewrites(storage: Storage, plan: CompactionPlan) -> dict[str, datetime]:
    """Leave out of ``plan`` the packs to empty that S3 Object Lock holds (their copies would
    only add space until the lock lets the pack go); returns them, with their dates."""
    locked = locked_until(storage, [pack_name(fate.pack_id) for fate in plan.rewrite])
    plan.rewrite = [fate for fate in plan.rewrite if pack_name(fate.pack_id) not in locked]
    return locked


def plan_only(storage: Storage, threshold: float = DEFAULT_THRESHOLD) -> CompactionPlan:
    """compact --dry-run: the plan a compact would carry out now. Runs as a reader and
    writes nothing (packs left by a killed writer are indexed by the real run first)."""
    validate_threshold(threshold)
    with storage.reader_lock():
        with records_with_blocks(storage, intact=True) as (records, live):
            pending = preview(storage.index, live, _block_reader(storage, records),
                              storage.pool)
        return plan_compaction(storage, pending, threshold)


def plan_requests(storage: Storage, plan: CompactionPlan) -> PlannedRequests | None:
    """The object-store requests carrying out ``plan`` makes; None where requests are not
    counted (a local folder: Backend.requests_made)."""
    if storage.requests_made() is None:
        return None
    return planned_requests(plan, storage.config.pack_target_bytes,
                            storage.backend.part_bytes)


def _block_reader(storage: Storage, records: SnapshotRecords):
    """What reconcile reads blocks with: a block that cannot be read is named with the
    snapshot it belongs to (found when it happens: rare)."""

    def read_block(digest: bytes) -> list[ManifestEntry]:
        try:
            return decode_block(storage.chunks.get(digest))
        except CorruptData as error:
            owner = next((r for r in records if any(b.digest == digest for b in r.blocks)),
                         None)
            if owner is None:
                raise
            raise CorruptData(
                f"manifest block {digest.hex()[:16]} of snapshot {owner.short_id} "
                f"({owner.name}, {owner.time_label}) cannot be read ({error}); compact "
                f"needs every snapshot's manifest to know what is in use: run "
                f"'diskvault check', then repair or delete that snapshot") from None

    return read_block


class _Executor:
    """Carries out a plan under the writer lock, in the order the module docstring gives."""

    def __init__(self, storage: Storage, liveness: Liveness, plan: CompactionPlan,
                 ensure_held: Callable[[], None]):
        self.storage = storage
        self.ensure_held = ensure_held  # raises LockLost: called before every change
        self.packs = storage.packs
        self.index = storage.index
        self.liveness = liveness
        self.plan = plan
        self.result = CompactResult(plan.threshold, packs_reviewed=plan.packs_reviewed,
                                    packs_damaged=list(plan.damaged))
        self._copies = PackFiller(self.packs, storage.config.pack_target_bytes,
                                  self._index_copies)
        self._copied_sources: list[str] = []  # sources whose copies are not all durable yet
        # Review outcomes wait here and are saved in one transaction: losing them to a
        # kill only means reviewing those packs again.
        self._reviewed: dict[str, tuple[int, int]] = {}
        self._doomed: list[str] = []
        self._to_empty = {fate.pack_id for fate in plan.rewrite}
        self.locked: dict[str, datetime] = {}  # pack name -> until: S3 Object Lock holds it

    def run(self) -> CompactResult:
        self._forget_vanished()
        self._record_plan()
        self._delete_doomed()  # space back before any copy is written: a disk may be full
        self._empty_all()
        self._delete_doomed()
        return self.result

    def _record_plan(self) -> None:
        try:
            for pack_id, usage in self.plan.keep.items():
                self._reviewed[pack_id] = usage
                self._save_reviews_every_so_often()
            for fate in self.plan.delete:
                self._doomed.append(fate.pack_id)
                self._save_reviews_every_so_often()
        finally:
            self._save_reviews()

    # -- copy ----------------------------------------------------------------------------
    def _empty_all(self) -> None:
        try:
            for fate in self.plan.rewrite:
                self._empty(fate.pack_id)
                self._save_reviews_every_so_often()
            self._finish_pack()
        except BaseException:
            self._copies.abort()
            raise
        finally:
            self._save_reviews()
        self._to_empty = set()

    def _empty(self, pack_id: str) -> None:
        """Copy out the live records of a pack that the plan chose to empty."""
        entries = pack_footer(self.storage, pack_id)
        if entries is None:
            self.result.packs_damaged.append(pack_id)
            return
        if self._copy_out(pack_id, live_records(self.storage, self.liveness, pack_id,
                                                entries)):
            self.result.packs_rewritten += 1

    def _copy_out(self, pack_id: str, live: list[PackEntry]) -> bool:
        """Copy the live records into new packs; the source is doomed once all of them
        are durable and indexed. A damaged record leaves the source untouched."""
        records = list(verify_pack(self.packs, self.storage.codec, pack_id, live,
                                   self.storage.pool))
        damaged = [entry for entry, _, problem in records if problem]
        if damaged:
            log.warning("pack %s holds %d damaged records in use and was not rewritten; "
                        "run 'diskvault check --read-data'", pack_id, len(damaged))
            self.result.packs_damaged.append(pack_id)
            return False
        for entry, stored, _ in records:
            self._copies.add(entry.digest, stored, entry.raw_size, entry.flags)
            self.result.chunks_copied += 1
        self._copied_sources.append(pack_id)
        return True

    def _finish_pack(self) -> None:
        """Make the open pack durable and indexed; then every copied source is doomed."""
        self._copies.finish()
        self._doom_copied_sources()

    def _index_copies(self, pack_id: str, entries: list[PackEntry], file_size: int) -> None:
        """Point the chunks of a durable pack of copies at it (packing.seal calls this);
        only then may the sources whose live records are all in finished packs be doomed."""
        self.ensure_held()
        self.index.add_relocated_pack(pack_id, entries, file_size)
        self._reviewed[pack_id] = (0, sum(record_cost(e) for e in entries))
        self.result.packs_written += 1
        self.result.bytes_written += file_size
        self._doom_copied_sources()

    def _doom_copied_sources(self) -> None:
        self._doomed.extend(self._copied_sources)
        self._copied_sources = []

    def _save_reviews_every_so_often(self) -> None:
        if len(self._reviewed) + len(self._doomed) >= SAVE_EVERY_PACKS:
            self._save_reviews()

    def _save_reviews(self) -> None:
        if self._reviewed or self._doomed:
            self.ensure_held()
            self.liveness.record_reviews(self._reviewed, self._doomed)
            self._reviewed, self._doomed = {}, []

    # -- delete --------------------------------------------------------------------------
    def _delete_doomed(self) -> None:
        # A doomed pack still to be emptied holds live records (a backup reused them).
        doomed = sorted(self.liveness.doomed() - set(self.result.packs_damaged)
                        - self._to_empty)
        if not doomed:
            return
        with self.storage.readers_excluded() as excluded:
            if not excluded:
                self.result.packs_waiting = len(doomed)
                self.result.bytes_waiting = sum(self.packs.size(p) for p in doomed)
                return
            self._delete(doomed)

    def _delete(self, pack_ids: list[str]) -> None:
        """Index entries first (no backup may reuse them), then the files, then the packs'
        rows: a kill in between leaves doomed packs that the next run finishes. The entries
        go in one pass over the index, or, when these packs hold few records beside it, by
        a lookup of each digest their footers list (sweep_choice.py); a pack that holds the
        indexed copy of a chunk in use is kept (see _keep_last_copies)."""
        locked = locked_until(self.storage, [pack_name(p) for p in pack_ids])
        self.locked.update(locked)
        going = [p for p in pack_ids if pack_name(p) not in locked]
        if not going:
            return
        self.ensure_held()
        with listed_digests(self.storage, going) as listed:
            kept = self.liveness.remove_unused_locations(going, self.ensure_held, listed)
        self._keep_last_copies(kept)
        going = [p for p in going if p not in kept]
        for group in batches(going, DELETE_PACKS_PER_GROUP):
            self.ensure_held()
            for pack_id in group:
                self.result.bytes_freed += self.packs.size(pack_id)
                self.packs.delete(pack_id)
                self.result.packs_deleted += 1
            self.index.remove_packs(group)
            self.liveness.forget_packs(group)

    def _keep_last_copies(self, kept: set[str]) -> None:
        """Packs about to go whose records are still the indexed copy of a chunk in use (a
        backup reused it after the plan, or the copy the index named elsewhere was lost and
        the index rebuilt): they stay, doomed, so that the next compaction copies those
        records out first. Each is named once, though both rounds of deletion keep it."""
        for pack_id in sorted(kept - set(self.result.packs_kept_as_last_copy)):
            log.warning("pack %s holds the last copy of chunks in use: it is kept for the next "
                        "compaction to copy them out; run 'diskvault check'", pack_id)
            self.result.packs_kept_as_last_copy.append(pack_id)

    def _forget_vanished(self) -> None:
        """Finish deletions a kill interrupted after the unlink: any index entry left
        pointing into such a pack goes too (refuse_if_damaged has shown that no chunk in use
        is indexed there), in one pass over the index."""
        if not self.plan.vanished:
            return
        self.ensure_held()
        self.index.sweep_out(self.plan.vanished, before_each=self.ensure_held)
        self.index.remove_packs(self.plan.vanished)
        self.liveness.forget_packs(self.plan.vanished)
