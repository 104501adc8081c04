"""What check reports: the problems, the snapshots that cannot be restored in full (and
from which byte), and what is not damage (orphans, unused chunks, strays); the CLI prints
it and repair returns it after its rebuild."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...store.format.snapshots import SnapshotRecord
from ..usage import Unused

LOST = "lost"
UNINDEXED = "unindexed"  # intact in a pack the index lacks: repair re-indexes it


@dataclass(frozen=True)
class Problem:
    where: str    # "pack <id>", "index", "snapshot record <file>"
    message: str


@dataclass
class SnapshotDamage:
    record: SnapshotRecord
    lost_chunks: int = 0        # chunks (or whole manifest blocks) that cannot be read
    lost_bytes: int = 0         # image bytes they cover
    unindexed_chunks: int = 0   # intact but missing from the index: repair recovers them
    first_offset: int | None = None

    def note(self, offset: int, length: int, kind: str) -> None:
        if kind == LOST:
            self.lost_chunks += 1
            self.lost_bytes += length
        else:
            self.unindexed_chunks += 1
        self.first_offset = offset if self.first_offset is None else min(self.first_offset,
                                                                          offset)


@dataclass
class CheckReport:
    read_data: bool
    snapshots: int = 0
    manifest_blocks: int = 0
    chunks_referenced: int = 0
    packs: int = 0
    stored_bytes: int = 0        # bytes of the pack files on disk
    records_read: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    damaged_snapshots: list[SnapshotDamage] = field(default_factory=list)
    orphan_packs: list[str] = field(default_factory=list)       # on disk, not indexed
    half_deleted_packs: list[str] = field(default_factory=list)  # gone, nothing indexed in it
    unused: Unused = field(default_factory=Unused)  # indexed chunks no snapshot uses
    damaged_unused_records: int = 0  # damaged copies the index does not point at
    stray_entries: list[str] = field(default_factory=list)  # not ours: not damage, left alone
    duration_s: float = 0.0

    @property
    def damaged(self) -> bool:
        return bool(self.problems or self.damaged_snapshots)

    @property
    def unreferenced_chunks(self) -> int:
        return self.unused.chunks

    @property
    def unreferenced_bytes(self) -> int:
        return self.unused.stored_bytes

    @property
    def reclaimable_chunks(self) -> int:
        """Of the unreferenced chunks, those a compact at its default threshold frees."""
        return self.unused.reclaimable_chunks

    @property
    def reclaimable_bytes(self) -> int:
        return self.unused.reclaimable_bytes
