"""delete and prune: forgetting snapshot records. Their space comes back with compact.

Removing a record is one durable unlink, so a kill leaves each snapshot either whole or
gone. The writer lock is checked before each record is removed (``WriterLock.ensure_held``):
once another host has taken it over, nothing more is removed. Which snapshots prune keeps
is decided by retention.select_kept; this module adds the one rule on top of it: a series
is never emptied by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import BadInput, SnapshotProtected
from ..store.coordination.locking import WriterLock
from ..store.format.snapshot_selection import select_snapshot
from ..store.format.snapshot_store import SnapshotRecords
from ..store.format.snapshots import SnapshotRecord
from ..store.index.sorted_runs import DigestSet
from ..store.storage import Storage
from .append_only import refuse_if_append_only
from .liveness import Liveness
from .object_lock import date_label, locked_records, refuse_locked
from .record_blocks import records_with_blocks
from .retention import KeepPolicy, SnapshotTime, select_kept
from .safety import refuse_if_damaged

INTACT_OUTCOME = "snapshots listed by 'diskvault list' are intact: rerun the {}"
PROTECTED_REASON = "newest of its series (protected: the rules keep none of it)"
MARKED_REASON = "protected"  # marked with 'diskvault protect'
LOCKED_REASON = "locked by S3 Object Lock until {}"


@dataclass(frozen=True)
class PruneDecision:
    record: SnapshotRecord
    reason: str | None  # why it is kept; None: it is removed


@dataclass
class PrunePlan:
    decisions: list[PruneDecision]
    protected_series: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def kept(self) -> list[SnapshotRecord]:
        return [d.record for d in self.decisions if d.reason is not None]

    @property
    def removed(self) -> list[SnapshotRecord]:
        return [d.record for d in self.decisions if d.reason is None]


def plan_prune(records: Sequence[SnapshotRecord], policy: KeepPolicy, now: datetime,
               name: str | None = None, allow_delete_all: bool = False,
               protected: frozenset[str] = frozenset()) -> PrunePlan:
    """Decide, per series, what to keep and why; ordered by series, then oldest first, the
    order of ``list``. The ``protected`` ids (``diskvault protect``) are always kept.

    A series that the rules would empty keeps its newest snapshot (listed in
    ``protected_series``) unless ``allow_delete_all``: a nightly job that failed for a
    week must not turn ``--keep-within 7d`` into the loss of every backup.
    """
    if policy.is_empty() and not allow_delete_all:
        raise BadInput("prune needs at least one --keep-* rule: with none it would delete "
                       "every snapshot (add --allow-delete-all if that is what you want)")
    chosen = [r for r in records if name is None or r.name == name]
    if name is not None and not chosen:
        raise BadInput(f"no snapshots in series {name!r} (see 'diskvault list')")
    kept = select_kept([SnapshotTime(r.id, r.name, r.time, frozenset(r.tags)) for r in chosen],
                       policy, now)
    for record_id in protected & kept.keys():
        kept[record_id] += f", {MARKED_REASON}"
    kept.update((r.id, MARKED_REASON) for r in chosen if r.id in protected - kept.keys())
    by_series: dict[str, list[SnapshotRecord]] = {}
    for record in chosen:
        by_series.setdefault(record.name, []).append(record)
    decisions, protected = [], []
    for series in sorted(by_series):
        newest_first = sorted(by_series[series], key=lambda r: (r.time, r.id), reverse=True)
        reasons = {r.id: kept.get(r.id) for r in newest_first}
        if not any(reasons.values()) and not allow_delete_all:
            reasons[newest_first[0].id] = PROTECTED_REASON
            protected.append(series)
        decisions.extend(PruneDecision(r, reasons[r.id]) for r in reversed(newest_first))
    return PrunePlan(decisions, protected)


def prune(storage: Storage, policy: KeepPolicy, name: str | None = None,
          dry_run: bool = False, allow_delete_all: bool = False, now: datetime | None = None,
          lock_wait_s: float = 0.0) -> PrunePlan:
    """Plan (and unless ``dry_run``, apply) a prune under the writer lock."""
    now = now or datetime.now(timezone.utc)
    if dry_run:
        plan = _keep_locked(storage, plan_prune(storage.snapshots.all().headers, policy, now,
                                                name, allow_delete_all,
                                                storage.protection.ids()))
        plan.dry_run = True
        return plan
    with storage.disk_full_reported(INTACT_OUTCOME.format("prune")), \
            storage.writer_lock("prune", lock_wait_s) as lock:
        refuse_if_append_only(storage, "prune")
        with records_with_blocks(storage) as (records, blocks):
            plan = _keep_locked(storage, plan_prune(records.headers, policy, now, name,
                                                    allow_delete_all,
                                                    storage.protection.ids()))
            _refuse_if_damaged(storage, "prune", records, blocks)
        forget_records(storage, plan.removed, lock)
    return plan


def delete_snapshots(storage: Storage, selectors: Sequence[str], lock_wait_s: float = 0.0,
                     all_of_series: bool = False, dry_run: bool = False
                     ) -> list[SnapshotRecord]:
    """Delete the snapshots the selectors name (see ``select_deleted``); every selector is
    resolved before any record is removed, so a typo deletes nothing. ``dry_run``: only
    say which."""
    if dry_run:
        chosen = _refuse_protected(storage, select_deleted(storage.snapshots.all().headers,
                                                           selectors, all_of_series))
        refuse_locked(storage, chosen)
        return chosen
    with storage.disk_full_reported(INTACT_OUTCOME.format("delete")), \
            storage.writer_lock(f"delete {' '.join(selectors)}", lock_wait_s) as lock:
        refuse_if_append_only(storage, "delete")
        with records_with_blocks(storage) as (records, blocks):
            chosen = _refuse_protected(storage, select_deleted(records.headers, selectors,
                                                               all_of_series))
            refuse_locked(storage, chosen)
            _refuse_if_damaged(storage, "delete", records, blocks)
        forget_records(storage, chosen, lock)
    return chosen


def select_deleted(records: Sequence[SnapshotRecord], selectors: Sequence[str],
                   all_of_series: bool) -> list[SnapshotRecord]:
    """The snapshots to delete, oldest first. A series name deletes the whole series with
    ``all_of_series`` and is refused without it: read as "its latest", as elsewhere, it would
    silently leave the rest of the series."""
    chosen: dict[str, SnapshotRecord] = {}
    for selector in selectors:
        record = select_snapshot(records, selector)
        if record.name == selector != record.id:
            series = [r for r in records if r.name == selector]
            if not all_of_series:
                count = f"{len(series)} snapshot" + ("" if len(series) == 1 else "s")
                raise BadInput(f"{selector!r} is a series name ({count}): "
                               f"give the ids to delete (see 'diskvault list --name "
                               f"{selector}'), or --all-of-series to delete the whole series")
            chosen.update((r.id, r) for r in series)
        else:
            chosen[record.id] = record
    return sorted(chosen.values(), key=lambda r: (r.time, r.id))


def _keep_locked(storage: Storage, plan: PrunePlan) -> PrunePlan:
    """The plan, with the snapshots S3 Object Lock still holds kept, saying until when: a
    later prune removes them."""
    locked = locked_records(storage, plan.removed)
    if locked:
        plan.decisions = [PruneDecision(d.record, LOCKED_REASON.format(
            date_label(locked[d.record.id]))) if d.record.id in locked else d
            for d in plan.decisions]
    return plan


def _refuse_protected(storage: Storage, chosen: list[SnapshotRecord]) -> list[SnapshotRecord]:
    """``chosen``, or SnapshotProtected if any of it is marked: then nothing is deleted."""
    protected = storage.protection.ids()
    marked = [r for r in chosen if r.id in protected]
    if marked:
        shown = ", ".join(f"{r.short_id} ({r.name})" for r in marked[:5])
        which = "snapshot {} is" if len(marked) == 1 else "snapshots {} are"
        raise SnapshotProtected(f"{which.format(shown)} protected: nothing was deleted; run "
                                f"'diskvault unprotect {marked[0].short_id}' first if it is "
                                f"to go")
    return chosen


def _refuse_if_damaged(storage: Storage, command: str, records: SnapshotRecords,
                       blocks: DigestSet) -> None:
    """Forget nothing in a damaged repository (safety.py); packs a killed writer left, or a
    lost index, are indexed first: that is not damage."""
    storage.recover_unindexed_packs()
    refuse_if_damaged(storage, command, records, blocks, Liveness.existing(storage.index))


def forget_records(storage: Storage, records: Iterable[SnapshotRecord],
                   lock: WriterLock) -> None:
    """Remove the records under ``lock`` (held by the caller), checking before each that it is
    still ours: once another host has taken it over, nothing more is removed (LockLost)."""
    removed = []
    for record in records:
        lock.ensure_held()
        storage.snapshots.delete(record.id)
        removed.append(record.short_id)
    if removed:
        storage.snapshots.committed(f"removed {len(removed)} snapshots: {' '.join(removed)}")
