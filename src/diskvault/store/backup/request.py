"""What one backup is asked to do, as plain values: the facade builds it and back_up.py
carries it out. Apart from back_up.py so that the facade names it without loading the write
path (the chunker, FastCDC, the write session): read-only commands never load those."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ChangedRead:
    """A change map's backup: ``record`` reads only the changed ranges, the rest is taken
    from snapshot ``base_id``; ``holes_as_zeros`` is False when its chunks may have ended
    at holes (a base made before holes were chunked as zeros)."""
    record: Callable  # (WriteSession, BackupStats) -> ManifestBuilder
    base_id: str
    holes_as_zeros: bool


@dataclass(frozen=True)
class BackupRequest:
    """One backup: its series ``name`` and ``tags``, the monotonic time the command began
    (for the record's duration), the previous snapshot's chunks as ``hints``, and how the
    image is read: whole, or only what a change map names (``changed``); ``dirty_bitmap``
    names the bitmap that counts the source's changes since this read began."""
    name: str
    tags: tuple[str, ...]
    started: float
    progress: Progress | None = None
    hints: Iterable = ()  # chunker.Hint, the previous snapshot's chunks
    changed: ChangedRead | None = None
    dirty_bitmap: str | None = None
