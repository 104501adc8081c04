"""Restores onto block devices in progress, remembered on this host
(``$XDG_STATE_HOME/diskvault/restores/``, one small file per device): a device restore
cannot be atomic, so a killed one leaves a mix of two images; the mark lets the next
restore or backup of that device say so."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SourceError
from .durable import PRIVATE_FOLDER_MODE, atomic_replacement, fsync_dir, write_all
from .snapshots import SnapshotRecord


def marks_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "diskvault" / "restores"


def _mark_path(device: Path) -> Path:
    # Keyed by device number: the same device under any of its names (/dev/disk/by-id/...).
    number = os.stat(device).st_rdev
    return marks_folder() / f"{os.major(number)}-{os.minor(number)}.json"


def interrupted_restore(device: Path) -> str | None:
    """A sentence describing the unfinished restore onto ``device``, or None."""
    try:
        mark = json.loads(_mark_path(device).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return (f"a restore of snapshot {mark['snapshot']} ({mark['name']}) onto {mark['device']}, "
            f"started {mark['started']}, was interrupted")


def refuse_interrupted_device(device: Path) -> None:
    """SourceError if ``device`` holds the mix an interrupted restore left."""
    interrupted = interrupted_restore(device)
    if interrupted:
        raise SourceError(f"source {device}: {interrupted}, so it holds a mix of two images; "
                          f"restore it again (diskvault restore --force), then back it up")


@contextmanager
def restore_in_progress(device: Path, record: SnapshotRecord) -> Iterator[None]:
    """Marked durably before the first write; unmarked only when the body completes."""
    path = _mark_path(device)
    path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    mark = {"device": str(device), "snapshot": record.short_id, "name": record.name,
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    with atomic_replacement(path) as fd:
        write_all(fd, json.dumps(mark).encode())
    yield
    path.unlink()
    fsync_dir(path.parent)
