"""Restores in place in progress (block devices, files patched with --in-place), remembered
on this host (``$XDG_STATE_HOME/diskvault/restores/``, one small file per target): such a
restore cannot be atomic, so a killed one leaves a mix of two images; the mark lets the next
restore or backup of that target say so."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ...errors import SourceError
from ..format.snapshots import SnapshotRecord
from ..host.durable import PRIVATE_FOLDER_MODE, atomic_replacement, fsync_dir, write_all
from ..host.user_folders import user_state_folder


def marks_folder() -> Path:
    return user_state_folder() / "restores"


def _mark_path(target: Path) -> Path:
    # Keyed by device number (a device under any of its names, /dev/disk/by-id/...) or, for
    # a file, by filesystem and inode (the file under any name, until it is replaced).
    status = os.stat(target)
    if stat.S_ISBLK(status.st_mode):
        key = f"{os.major(status.st_rdev)}-{os.minor(status.st_rdev)}"
    else:
        key = f"file-{status.st_dev}-{status.st_ino}"
    return marks_folder() / f"{key}.json"


def interrupted_restore(target: Path) -> str | None:
    """A sentence describing the unfinished restore onto ``target``, or None."""
    try:
        mark = json.loads(_mark_path(target).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return (f"a restore of snapshot {mark['snapshot']} ({mark['name']}) onto {mark['target']}, "
            f"started {mark['started']}, was interrupted")


def refuse_interrupted_target(source: Path) -> None:
    """SourceError if ``source`` holds the mix an interrupted restore in place left."""
    interrupted = interrupted_restore(source)
    if interrupted:
        raise SourceError(f"source {source}: {interrupted}, so it holds a mix of two images; "
                          f"restore it again (diskvault restore --force), then back it up")


@contextmanager
def restore_in_progress(target: Path, record: SnapshotRecord) -> Iterator[None]:
    """Marked durably before the first write; unmarked only when the body completes."""
    path = _mark_path(target)
    path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    mark = {"target": str(target), "snapshot": record.short_id, "name": record.name,
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    with atomic_replacement(path) as fd:
        write_all(fd, json.dumps(mark).encode())
    yield
    path.unlink()
    fsync_dir(path.parent)


@contextmanager
def replacing(target: Path) -> Iterator[str | None]:
    """For a file about to be replaced whole: the interrupted restore it holds, if any; that
    mark is dropped once the body (the replacement) completes."""
    if not os.path.exists(target) or not (note := interrupted_restore(target)):
        yield None
        return
    path = _mark_path(target)
    yield note
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
