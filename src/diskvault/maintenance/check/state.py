"""What one check has found so far, shared by its passes: each pass reads what the earlier
ones noted (damaged footers, lost chunks, intact copies the index lacks) and adds its own.
Memory follows the damage found, not the chunks, packs or manifest blocks: those are kept in
sorted runs on disk (the chunks in use, the packs listed and indexed, the manifest blocks
the records name) and walked in order."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ...store.format.packs import PackEntry
from ...store.format.snapshots import SnapshotRecord
from ...store.index.records import PACK_STATS, ChunkLocation, PackStats
from ...store.index.sorted_runs import DigestSet, KeyedSums, SortedRuns
from ...store.storage import Storage
from .report import CheckReport, Problem

Progress = Callable[[int, int], None]  # (bytes read so far, bytes to read)
SHOWN_DIGESTS = 5  # chunks named per problem line; the count says how many there are
PACK_KEY_BYTES = 16
SORTED_RUNS_AT_ONCE = 8  # check fills up to this many: each sorts 1/8 of a lone one's run
INDEXED_PACK = struct.Struct("<16s" + PACK_STATS.format.lstrip("<"))  # key, statistics


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
                 scratch: Path, closing: ExitStack):
        self._scratch = scratch
        self._closing = closing
        self.storage = storage
        self.index = storage.index
        self.packs = storage.packs
        self.report = CheckReport(read_data)
        self.progress = progress
        self.records: list[SnapshotRecord] = []
        self.index_readable = True
        self.indexed_packs: Iterable[bytes] = ()  # INDEXED_PACK rows, in key order
        self.listed_packs = self.sorted_runs(PACK_KEY_BYTES)  # the keys of the packs listed
        self.damaged_footers: set[str] = set()
        self.lost: dict[bytes, str] = {}                       # digest -> why it is lost
        # digest -> an intact record the index does not point at (an orphan pack's, a copy)
        self.unindexed: dict[bytes, tuple[str, PackEntry]] = {}
        self.blocks: dict[bytes, BlockDamage] = {}
        # (block, bytes a record places it over) -> bytes it covers, where the two differ
        self.misfits: dict[tuple[bytes, int], int] = {}
        self.referenced = closing.enter_context(DigestSet(scratch, SORTED_RUNS_AT_ONCE))
        self.recoverable: set[bytes] = set()  # used, missing from the index, intact elsewhere
        self.nowhere: list[bytes] = []  # used, but in no pack and not in the index

    def sorted_runs(self, record_size: int) -> SortedRuns:
        """Records kept on disk for this check, read back in order; gone when it ends."""
        return self._closing.enter_context(SortedRuns(record_size, self._scratch,
                                                      SORTED_RUNS_AT_ONCE))

    def sums_per_pack(self, values: int) -> KeyedSums:
        """``values`` integers summed per pack key for this check; gone when it ends."""
        return self._closing.enter_context(KeyedSums(PACK_KEY_BYTES, values, self._scratch,
                                                     SORTED_RUNS_AT_ONCE))

    def pack_stats(self) -> Iterator[tuple[str, PackStats]]:
        """The index's statistics of every pack, in key order (as read when check began)."""
        for row in self.indexed_packs:
            pack_key, *stats = INDEXED_PACK.unpack(row)
            yield pack_key.hex(), PackStats(*stats)

    def problem(self, where: str, message: str) -> None:
        self.report.problems.append(Problem(where, message))

    def locations(self, digests) -> Iterator[tuple[bytes, ChunkLocation | None]]:
        """Where the index puts each digest (an index that cannot be read puts none)."""
        if not self.index_readable:
            return ((digest, None) for digest in digests)
        return self.index.locate_many(digests)

    def location(self, digest: bytes) -> ChunkLocation | None:
        return self.index.lookup(digest) if self.index_readable else None
