"""An index that cannot be read is set aside (``index.damaged-<time>``, kept for
inspection), never deleted and never a dead end: a new one is begun in its place and filled
from the pack footers, as any index catching up is (index_cache.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..host.durable import fsync_dir
from .chunk_index import ChunkIndex
from .probe import exit_code_in_fresh_interpreter

THOROUGH = "thorough"


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
    depth = THOROUGH if thorough else "roots"
    return exit_code_in_fresh_interpreter(__name__, str(folder), depth) == 0


def _read(folder: Path, thorough: bool) -> None:
    """Open the index as a ChunkIndex, which also refuses what it would (a planted link, a
    cut-off file), and read its roots, or ``thorough``, every page and value."""
    index = ChunkIndex(folder, probe=False)
    if thorough:
        index.read_everything()
    else:
        index.table_sizes()
    index.close()


if __name__ == "__main__":
    _read(Path(sys.argv[1]), thorough=sys.argv[2] == THOROUGH)
