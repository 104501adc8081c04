"""Maintenance on a bucket with S3 Object Lock (docs/object-lock.md): nothing tries to
delete an object version the lock still holds, and packs that kept snapshots use stay locked.

- ``locked_until``: which of some objects the lock holds now (a HEAD each), and until when:
  prune keeps those snapshots (saying until when), delete refuses them, compact leaves
  such packs doomed or unrewritten for a later run. A GOVERNANCE retention counts as
  lifted when the command was given ``--bypass-governance``; COMPLIANCE and legal holds
  never are.
- ``extend_retention``: every pack still in use is retained the repository's days (plus
  the pack margin) from now, so a snapshot that reuses an old pack never outlives the
  pack's lock while compact (or ``diskvault extend-retention``, after each backup) runs
  more often than the retention is long.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from ..errors import BadInput, ObjectLocked
from ..store.format.config import LEGAL_HOLD_UNTIL, PACK_RETENTION_MARGIN
from ..store.format.packs import pack_name
from ..store.format.snapshots import SnapshotRecord, record_name
from ..store.storage import Storage
from .liveness import Liveness


def allow_bypass(storage: Storage, bypass: bool) -> None:
    """Let this command's deletes lift GOVERNANCE retention; BadInput where it means
    nothing (no Object Lock, or COMPLIANCE, which nobody lifts)."""
    if not bypass:
        return
    settings = storage.config.object_lock
    if settings is None:
        raise BadInput(f"--bypass-governance: repository {storage.location} has no Object Lock")
    if settings.mode != "governance":
        raise BadInput(f"--bypass-governance: repository {storage.location} is locked in "
                       f"{settings.mode} mode, which nobody can lift before it runs out")
    storage.backend.object_lock.bypass_governance = True


def locked_until(storage: Storage, names: Iterable[str]) -> dict[str, datetime]:
    """The objects among ``names`` that the lock keeps now, with the date it lets go (a
    legal hold: LEGAL_HOLD_UNTIL). Empty without Object Lock."""
    lock = storage.backend.object_lock
    if lock is None:
        return {}
    names = list(names)
    found = {}
    for name, retention in zip(names, storage.pool.map(lock.retention, names)):
        if retention is None:
            continue
        until = retention.locked_until
        lifted = (lock.bypass_governance and not retention.held
                  and retention.mode == "GOVERNANCE")
        if until is not None and not lifted:
            found[name] = until
    return found


def date_label(until: datetime) -> str:
    if until == LEGAL_HOLD_UNTIL:
        return "its legal hold is lifted ('diskvault unprotect')"
    return f"{until.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def extend_retention(storage: Storage, pack_ids: Iterable[str]) -> int:
    """Retain each of these packs (those still in use) until the repository's days plus
    the pack margin from now; returns how many. The store only ever lengthens: the date
    grows with now, and never falls below what a put gave."""
    lock = storage.backend.object_lock
    if lock is None:
        return 0
    until = storage.config.object_lock.until(datetime.now(timezone.utc)) + PACK_RETENTION_MARGIN
    names = [pack_name(pack_id) for pack_id in pack_ids]
    return sum(storage.pool.map(lambda name: _extend(lock, name, until), names))


def _extend(lock, name: str, until: datetime) -> bool:
    """False if the pack is gone (a compaction elsewhere deleted it meanwhile)."""
    try:
        lock.extend(name, until)
    except FileNotFoundError:
        return False
    return True


def extend_packs_in_use(storage: Storage) -> int:
    """``diskvault extend-retention``: as a reader, beside backups, extend every pack the
    index knows except those a compaction on this host doomed (a pack whose data died
    since is extended too: that only holds its space longer). Needs s3:PutObjectRetention,
    no delete right."""
    if storage.config.object_lock is None:
        raise BadInput(f"repository {storage.location} has no Object Lock: nothing to extend")
    with storage.reader_lock():
        counts = Liveness.existing(storage.index)
        doomed = counts.doomed() if counts is not None else set()
        return extend_retention(storage, {pack_id for pack_id, _ in storage.index.pack_stats()}
                                - doomed)


def locked_records(storage: Storage, records: Iterable[SnapshotRecord]
                   ) -> dict[str, datetime]:
    """Snapshot id -> the date the lock lets its record go, for the locked ones."""
    by_name = {record_name(record.id): record.id for record in records}
    return {by_name[name]: until for name, until in locked_until(storage, by_name).items()}


def refuse_locked(storage: Storage, records: list[SnapshotRecord]) -> None:
    """ObjectLocked (exit 77) naming the snapshots whose records the lock holds: then
    nothing is deleted."""
    locked = locked_records(storage, records)
    if not locked:
        return
    shown = ", ".join(f"{r.short_id} ({r.name})" for r in records if r.id in locked)
    latest = max(locked.values())
    hint = ("rerun with --bypass-governance, with credentials allowed to bypass it"
            if storage.config.object_lock.mode == "governance" and latest != LEGAL_HOLD_UNTIL
            else "it can be deleted after that")
    raise ObjectLocked(f"{len(locked)} snapshot(s) locked by S3 Object Lock until "
                       f"{date_label(latest)}: {shown}; nothing was deleted ({hint})")
