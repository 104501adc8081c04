"""Which bytes of a source a backup reads, decided under its backup lock: the whole source,
guided by the chunks of the series' latest snapshot, or only the ranges a change map or a
dirty bitmap marks, the rest taken from the snapshot they count changes from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from ..errors import BadInput
from .backup.bitmap_base import bitmap_base
from .backup.change_map import ChangedRanges, ChangeMap
from .backup.request import BackupRequest, ChangedRead
from .backup.source import ImageSource
from .format.snapshots import SnapshotRecord
from .read.image_map import cutting_hints, image_spans
from .storage import Storage

log = logging.getLogger(__name__)


def hints_for(storage: Storage, name: str,
              on_new_series: Callable[[str], None] | None = None) -> Iterator:
    """The chunks of the series' latest snapshot, as cutting hints (read once the backup
    holds its backup lock). A series with no snapshot yet is told to ``on_new_series``:
    the listing is made here once."""
    latest = storage.snapshots.latest_of_series(name)
    if latest is not None:
        yield from cutting_hints(storage.chunks, latest)
    elif on_new_series is not None:
        on_new_series(name)


def change_map_read(storage: Storage, source: ImageSource, request: BackupRequest,
                    changes: ChangeMap, verify_unchanged: int) -> ChangedRead:
    """Only the changed ranges read; the rest taken from the map's base, which must be the
    series' latest snapshot."""
    base = _change_map_base(storage, request.name, changes)
    return _read_only_changes(storage, source, request, base, changes, verify_unchanged)


def bitmap_read(storage: Storage, source, request: BackupRequest,
                verify_unchanged: int) -> ChangedRead | None:
    """Only what the dirty bitmap marks read, when the series' latest snapshot is its base;
    None (a full read) with a warning saying why not."""
    base = bitmap_base(storage.snapshots.latest_of_series(request.name), source.label,
                       request.dirty_bitmap, source.size, source.counts_from)
    if base.record is None:
        log.warning("%s: the whole of %s is read; the next backup with dirty bitmap %s "
                    "reads only what it marks", base.why_not, source.label,
                    request.dirty_bitmap)
        return None
    return _read_only_changes(storage, source, request, base.record, source.changes,
                              verify_unchanged)


def _read_only_changes(storage: Storage, source, request: BackupRequest, base: SnapshotRecord,
                       changes: ChangeMap, verify_unchanged: int) -> ChangedRead:
    from .backup.changed_backup import PreviousEntries, record_changed  # on use: fastcdc

    changed = ChangedRanges(changes.ranges, base.size, source.size)
    previous = PreviousEntries(image_spans(storage.chunks, base), base.size, changed,
                               source.size)

    def record(session, stats):
        return record_changed(source, previous, changed, storage.config.chunker, session,
                              storage.pool, stats, verify_unchanged, request.progress)
    return ChangedRead(record, base.id, base.holes_as_zeros)


def _change_map_base(storage: Storage, series: str, changes: ChangeMap) -> SnapshotRecord:
    if changes.base is None:
        raise BadInput("the change map names no base snapshot: give --changed-since "
                       "SNAPSHOT (the snapshot the map counts changes from)")
    latest = storage.snapshots.latest_of_series(series)
    if latest is None:
        raise BadInput(f"series {series!r} has no snapshot for the change map to build "
                       f"on: run a full backup (without --changed-ranges) first")
    base = storage.snapshots.find(changes.base)
    if base.id != latest.id:
        raise BadInput(f"the change map counts changes since snapshot {base.short_id}, "
                       f"but the latest snapshot of series {series!r} is "
                       f"{latest.short_id}: use a map made since "
                       f"{latest.short_id}, or back up without --changed-ranges")
    return base
