"""An index that cannot be read is set aside (``index.damaged-<time>``, kept for
inspection), never deleted and never a dead end: a new one is begun in its place and filled
from the pack footers, as any index catching up is (index_cache.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..host.durable import fsync_dir
from .probe import EVERYTHING, ROOTS, probe_exit_code


def set_aside_unreadable_index(folder: Path, thorough: bool = False) -> Path | None:
    """Move the index at ``folder`` to ``index.damaged-<time>`` if it cannot be opened (or,
    ``thorough``, if any page or value of it fails to read); returns where it went, or None
    if it reads."""
    if not folder.exists() or _index_reads(folder, thorough):
        return None
    return set_aside_index(folder)


def set_aside_index(folder: Path) -> Path:
    """Move the index at ``folder`` to ``index.damaged-<time>``; returns where it went."""
    target = folder.with_name(f"{folder.name}.damaged-{time.time_ns()}")
    os.rename(folder, target)
    fsync_dir(folder.parent)
    return target


def _index_reads(folder: Path, thorough: bool) -> bool:
    """Tried in a fresh interpreter (probe.py): a damaged page may kill the reader."""
    return probe_exit_code(folder, readonly=False, depth=EVERYTHING if thorough else ROOTS) == 0
