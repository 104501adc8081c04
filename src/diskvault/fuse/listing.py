"""The repository's snapshots as the mount sees them, re-read incrementally.

The mount re-lists every second or so while in use; reading every record each time would
cost a year of nightly records of a big image (hundreds of KiB each) per listing, so only
ids are listed and only new records are read. Records are written atomically and temp
files are not ids, so a half-written snapshot is never seen.
"""

from __future__ import annotations

import logging

from ..errors import CorruptData
from ..store.format.snapshots import SnapshotRecord
from ..store.repository import Repository

log = logging.getLogger(__name__)


class SnapshotListing:
    """Not thread-safe: the caller serialises ``current``."""

    def __init__(self, repository: Repository):
        self._repository = repository
        self._records: dict[str, SnapshotRecord] = {}
        self._unreadable: set[str] = set()  # reported once, not re-read every listing

    def current(self) -> list[SnapshotRecord]:
        """The snapshots now in the repository: new ones added, deleted ones gone."""
        ids = self._repository.snapshot_ids()
        for gone in self._records.keys() - ids:
            del self._records[gone]
        self._unreadable &= ids
        for snapshot_id in ids - self._records.keys() - self._unreadable:
            try:
                record = self._repository.load_snapshot(snapshot_id)
            except FileNotFoundError:
                continue  # deleted since the listing
            except CorruptData as error:
                log.error("snapshot %s is not shown: %s", snapshot_id, error)
                self._unreadable.add(snapshot_id)
                continue
            problem = unshowable(record, snapshot_id)
            if problem:
                log.error("snapshot %s is not shown: its record %s; run 'diskvault check'",
                          snapshot_id, problem)
                self._unreadable.add(snapshot_id)
                continue
            self._records[snapshot_id] = record
        return list(self._records.values())


def unshowable(record: SnapshotRecord, snapshot_id: str) -> str | None:
    """Why the mount cannot give a record a path of its own, or None: the tree is built
    from every record at once, so one that breaks it would hide all the others."""
    if record.id != snapshot_id:
        return f"names another id ({record.id!r})"
    for field_name in ("name", "source"):
        if not isinstance(getattr(record, field_name), str):
            return f"has a {field_name} that is not text"
    return None
