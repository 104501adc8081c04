"""Which snapshot a file target holds, as far as this host knows: a completed restore
remembers (``$XDG_STATE_HOME/diskvault/restored/``, one small file per target) the snapshot
it left in a file, with the file's change stamp. The next delta restore onto the same,
unchanged file then compares manifests instead of hashing the whole file.

The stamp is (device, inode, size, mtime_ns, ctime_ns): any write, truncate, chmod, rename
or replacement of the file changes its ctime, which no program can set back. Anything in
doubt (no record, another repository, a changed stamp, an interrupted restore in place, a
snapshot since deleted) means "not known": the caller hashes the target as before. Block
devices are never remembered: a device has no stamp that every write changes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .durable import PRIVATE_FOLDER_MODE, atomic_replacement, write_all
from .restore_marks import interrupted_restore
from .user_folders import user_state_folder


def known_folder() -> Path:
    return user_state_folder() / "restored"


def _stamp(status: os.stat_result) -> list[int]:
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns]


def _record_path(status: os.stat_result) -> Path:
    return known_folder() / f"file-{status.st_dev}-{status.st_ino}.json"


def _regular_file(target: Path) -> os.stat_result | None:
    try:
        status = os.stat(target, follow_symlinks=False)
    except OSError:
        return None
    return status if stat.S_ISREG(status.st_mode) else None


def remember(target: Path, repository_id: str, snapshot_id: str) -> None:
    """Note that the file ``target`` now holds ``snapshot_id`` (call once it is durable).
    Best effort: a note that cannot be written only costs the next restore a full
    comparison, so it never fails the restore that is done."""
    status = _regular_file(target)
    if status is None:
        return
    path = _record_path(status)
    record = {"target": os.path.abspath(target), "repository_id": repository_id,
              "snapshot_id": snapshot_id, "stamp": _stamp(status)}
    try:
        path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        with atomic_replacement(path) as fd:
            write_all(fd, json.dumps(record).encode())
        _drop_stale_records()
    except OSError:
        pass


def _drop_stale_records() -> None:
    """Remove the records of files no longer at their path (deleted, renamed, replaced by
    another program), so the folder does not grow with every image ever restored."""
    for path in known_folder().glob("file-*.json"):
        try:
            record = json.loads(path.read_text())
            status = _regular_file(Path(record["target"]))
            stale = status is None or _record_path(status) != path
        except (OSError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def forget(target: Path) -> None:
    """Drop what is known of ``target`` (before it is changed in place)."""
    status = _regular_file(target)
    if status is not None:
        try:
            _record_path(status).unlink(missing_ok=True)
        except OSError:  # no state folder we may use: nothing was remembered there
            pass


def held_snapshot(target: Path, repository_id: str) -> str | None:
    """The id of the snapshot of ``repository_id`` that the file ``target`` is known to hold
    unchanged since a restore wrote it, or None."""
    status = _regular_file(target)
    if status is None or interrupted_restore(target):
        return None
    try:
        record = json.loads(_record_path(status).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("stamp") != _stamp(status) \
            or record.get("repository_id") != repository_id:
        return None
    snapshot_id = record.get("snapshot_id")
    return snapshot_id if isinstance(snapshot_id, str) else None
