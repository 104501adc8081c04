"""protect and unprotect: mark snapshots that prune and delete must leave alone.

The mark is an object of its own (store/format/protection.py). It is set and removed under
the writer lock, so a prune or delete running at the same time either saw it or finished
before it was set.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..store.format.snapshot_selection import select_snapshot
from ..store.format.snapshots import SnapshotRecord
from ..store.storage import Storage
from .append_only import refuse_if_append_only


def set_protection(storage: Storage, selectors: Sequence[str], protect: bool,
                   lock_wait_s: float = 0.0) -> list[tuple[SnapshotRecord, bool]]:
    """Protect (or unprotect) the snapshots the selectors name; every selector is resolved
    before any mark changes. Each snapshot comes back with whether its mark changed."""
    verb = "protect" if protect else "unprotect"
    with storage.writer_lock(f"{verb} {' '.join(selectors)}", lock_wait_s) as lock:
        if not protect:
            refuse_if_append_only(storage, "unprotect")
        records = storage.snapshots.all().headers
        chosen = {r.id: r for r in (select_snapshot(records, s) for s in selectors)}
        changed = []
        for record in chosen.values():
            lock.ensure_held()
            mark = storage.protection.protect if protect else storage.protection.unprotect
            changed.append((record, mark(record.id)))
        marked = [record.short_id for record, did in changed if did]
        if marked:
            storage.snapshots.committed(f"{verb}ed {' '.join(marked)}")
    return changed
