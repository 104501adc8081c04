"""What one check has found so far, shared by its passes: each pass reads what the earlier
ones noted (damaged footers, lost chunks, intact copies the index lacks) and adds its own.
Memory follows the packs, the manifest blocks and the damage found, not the chunks: the
chunks in use are kept in a DigestSet on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ...store.format.packs import PackEntry
from ...store.format.snapshots import SnapshotRecord
from ...store.index.records import ChunkLocation, PackStats
from ...store.index.sorted_runs import DigestSet
from ...store.storage import Storage
from .report import CheckReport, Problem

Progress = Callable[[int, int], None]  # (bytes read so far, bytes to read)
SHOWN_DIGESTS = 5  # chunks named per problem line; the count says how many there are


@dataclass
class BlockDamage:
    whole: bool = False                       # the block itself cannot be read
    unindexed: bool = False                   # the block is intact but not indexed
    entries: list[tuple[int, int, str]] = field(default_factory=list)  # (rel. offset, len, kind)


def short(digests) -> str:
    """The first few digests, shortened, and how many more there are."""
    shown = ", ".join(d.hex()[:16] for d in list(digests)[:SHOWN_DIGESTS])
    more = len(digests) - SHOWN_DIGESTS
    return shown + (f" and {more} more" if more > 0 else "")


class CheckState:
    """The storage checked, the report filled in, and the findings the passes share."""

    def __init__(self, storage: Storage, read_data: bool, progress: Progress | None,
                 referenced: DigestSet):
        self.storage = storage
        self.index = storage.index
        self.packs = storage.packs
        self.report = CheckReport(read_data)
        self.progress = progress
        self.records: list[SnapshotRecord] = []
        self.index_readable = True
        self.fingerprints: dict[str, tuple[int, int]] = {}  # pack -> its index entries
        self.stats: dict[str, PackStats] = {}
        self.sizes: dict[str, int] = {}
        self.damaged_footers: set[str] = set()
        self.lost: dict[bytes, str] = {}                       # digest -> why it is lost
        # digest -> an intact record the index does not point at (an orphan pack's, a copy)
        self.unindexed: dict[bytes, tuple[str, PackEntry]] = {}
        self.blocks: dict[bytes, BlockDamage] = {}
        self.readable: list[bytes] = []  # manifest blocks that may be read
        self.block_lengths: dict[bytes, int] = {}  # readable block -> bytes it covers
        self.referenced = referenced
        self.recoverable: set[bytes] = set()  # used, missing from the index, intact elsewhere
        self.nowhere: list[bytes] = []  # used, but in no pack and not in the index

    def problem(self, where: str, message: str) -> None:
        self.report.problems.append(Problem(where, message))

    def locations(self, digests) -> Iterator[tuple[bytes, ChunkLocation | None]]:
        """Where the index puts each digest (an index that cannot be read puts none)."""
        if not self.index_readable:
            return ((digest, None) for digest in digests)
        return self.index.locate_many(digests)

    def location(self, digest: bytes) -> ChunkLocation | None:
        return self.index.lookup(digest) if self.index_readable else None
