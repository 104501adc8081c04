"""Which snapshot a dirty bitmap's changes count from (backup --dirty-bitmap).

A bitmap marks what changed since it was started (or reset, or rotated); diskvault knows
that instant only as "the read of a snapshot recorded with this bitmap". So the base is the
series' latest snapshot, and only when that snapshot says it was read from the same source
with the same bitmap, was held still, and has the image's size; and when the source knows
which snapshot the bitmap counts from (a bitmap diskvault rotates), only that one. Pure:
records in, a decision out."""

from __future__ import annotations

from dataclasses import dataclass

from ..format.snapshots import SnapshotRecord
from .source import UNCHECKED


@dataclass(frozen=True)
class BitmapBase:
    """The base snapshot, or None and, in words, why the whole source is read instead."""
    record: SnapshotRecord | None
    why_not: str = ""


def bitmap_base(latest: SnapshotRecord | None, source: str, bitmap: str, size: int,
                counts_from: str | None = None) -> BitmapBase:
    """Whether ``latest`` (the series' latest snapshot) is the base of a read of ``source``
    of ``size`` bytes that takes only what ``bitmap`` marks (counting since snapshot
    ``counts_from``, when known)."""
    if latest is None:
        return BitmapBase(None, "the series has no snapshot yet")
    if counts_from is not None and counts_from != latest.id:
        return BitmapBase(None, f"dirty bitmap {bitmap} counts the changes since snapshot "
                                f"{counts_from[:8]}, and the series' latest is "
                                f"{latest.short_id} (the newer one was deleted?)")
    if latest.dirty_bitmap != bitmap or latest.source != source:
        made = (f"with dirty bitmap {latest.dirty_bitmap}" if latest.dirty_bitmap
                else "without a dirty bitmap")
        return BitmapBase(None, f"the series' latest snapshot {latest.short_id} was made "
                                f"from {latest.source} {made}, not from {source} with "
                                f"{bitmap}")
    if latest.consistency == UNCHECKED:
        return BitmapBase(None, f"the series' latest snapshot {latest.short_id} was not held "
                                f"still while it was read")
    if latest.size != size:
        return BitmapBase(None, f"the source's size changed since snapshot "
                                f"{latest.short_id} ({latest.size} -> {size} bytes)")
    return BitmapBase(latest)
