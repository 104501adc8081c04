"""check: is every snapshot restorable, and is everything stored what it claims to be?

Structure: every snapshot record -> its manifest blocks (read and verified) -> every chunk
they name -> an index entry -> a pack on disk whose footer lists that very record. Pack
footers are read and compared with the index (packs.py); packs the index lacks (orphans)
and index entries no snapshot uses (unreferenced) are reported (manifests.py). With
``read_data`` every record of every pack is also read, decompressed and hashed (data.py).

Damage is tied back to what a user cares about (attribution.py): which pack, which chunks,
and which snapshots (by name and time) can no longer be restored in full, from which byte
offset. Check is a reader: it runs beside a backup, and compaction defers deletions until
it ends.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from ...store.storage import Storage
from ..scratch import scratch_folder
from .attribution import attribute
from .data import read_all_records
from .manifests import walk_manifests
from .packs import scan_packs
from .report import CheckReport
from .state import CheckState, Progress


def check(storage: Storage, read_data: bool = False,
          progress: Progress | None = None) -> CheckReport:
    """Check the repository as a reader (compaction will not delete packs meanwhile)."""
    with storage.reader_lock(), ExitStack() as closing:
        state = CheckState(storage, read_data, progress, scratch_folder(), closing)
        started = time.monotonic()
        _note_strays(state)
        _load_records(state)
        scan_packs(state)
        if read_data:
            read_all_records(state)
        walk_manifests(state)
        attribute(state)
        state.report.duration_s = round(time.monotonic() - started, 3)
        return state.report


def _note_strays(state: CheckState) -> None:
    state.report.stray_entries += state.storage.snapshots.strays() + state.packs.strays()


def _load_records(state: CheckState) -> None:
    state.records, damaged = state.storage.snapshots.scan()
    for path, error in damaged:
        state.problem(f"snapshot record {path.name}", str(error))
    state.report.snapshots = len(state.records)

