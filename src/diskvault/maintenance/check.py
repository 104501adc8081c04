"""check: is every snapshot restorable, and is everything stored what it claims to be?

Structure: every snapshot record -> its manifest blocks (read and verified) -> every chunk
they name -> an index entry -> a pack on disk whose footer lists that very record. Pack
footers are read and compared with the index; packs the index lacks (orphans) and index
entries no snapshot uses (unreferenced) are reported. With ``read_data`` every record of
every pack is also read, decompressed and hashed.

Damage is tied back to what a user cares about: which pack, which chunks, and which
snapshots (by name and time) can no longer be restored in full, from which byte offset.
Check is a reader: it runs beside a backup, and compaction defers deletions until it ends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CorruptData
from ..store.image_map import damage_context
from ..store.index import ChunkLocation
from ..store.manifest import BlockRef, block_ends, block_length, decode_block, fill_problem
from ..store.packs import PackEntry, read_footer
from ..store.pipeline import ordered_map, worker_count
from ..store.snapshots import SnapshotRecord
from ..store.storage import Storage
from .verify import read_verified, verify_pack

Progress = Callable[[int, int], None]  # (bytes read so far, bytes to read)
SHOWN_DIGESTS = 5  # chunks named per problem line; the count says how many there are

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
    unreferenced_chunks: int = 0
    unreferenced_bytes: int = 0
    damaged_unused_records: int = 0  # damaged copies the index does not point at
    stray_entries: list[str] = field(default_factory=list)  # not ours: not damage, left alone
    duration_s: float = 0.0

    @property
    def damaged(self) -> bool:
        return bool(self.problems or self.damaged_snapshots)


@dataclass
class _BlockDamage:
    whole: bool = False                       # the block itself cannot be read
    unindexed: bool = False                   # the block is intact but not indexed
    entries: list[tuple[int, int, str]] = field(default_factory=list)  # (rel. offset, len, kind)


def _short(digests) -> str:
    shown = ", ".join(d.hex()[:16] for d in list(digests)[:SHOWN_DIGESTS])
    more = len(digests) - SHOWN_DIGESTS
    return shown + (f" and {more} more" if more > 0 else "")


class _Checker:
    def __init__(self, storage: Storage, read_data: bool, progress: Progress | None):
        self.storage = storage
        self.packs = storage.packs
        self.report = CheckReport(read_data)
        self.progress = progress
        self.records: list[SnapshotRecord] = []
        self.locations: dict[bytes, ChunkLocation] = {}
        self.by_pack: dict[str, list[tuple[bytes, ChunkLocation]]] = defaultdict(list)
        self.footers: dict[str, list[PackEntry]] = {}
        self.sizes: dict[str, int] = {}
        self.lost: dict[bytes, str] = {}                       # digest -> why it is lost
        self.unindexed: dict[bytes, tuple[str, PackEntry]] = {}  # digest -> orphan record
        self.blocks: dict[bytes, _BlockDamage] = {}
        self.block_lengths: dict[bytes, int] = {}  # readable block -> bytes it covers
        self.referenced: set[bytes] = set()
        self.nowhere: list[bytes] = []  # used, but in no pack and not in the index

    def problem(self, where: str, message: str) -> None:
        self.report.problems.append(Problem(where, message))

    def run(self) -> CheckReport:
        started = time.monotonic()
        self._note_strays()
        self._load_records()
        self._scan_packs()
        if self.report.read_data:
            self._read_all_records()
        self._walk_manifests()
        self._attribute()
        self._count_unreferenced()
        self.report.duration_s = round(time.monotonic() - started, 3)
        return self.report

    def _note_strays(self) -> None:
        self.report.stray_entries += self.storage.snapshots.strays() + self.packs.strays()

    def _load_records(self) -> None:
        self.records, damaged = self.storage.snapshots.scan()
        for path, error in damaged:
            self.problem(f"snapshot record {path.name}", str(error))
        self.report.snapshots = len(self.records)

    # -- packs and index -----------------------------------------------------------------
    def _scan_packs(self) -> None:
        index = self.storage.index
        try:
            self.locations = dict(index.iter_chunks())
            stats = dict(index.pack_stats())
        except CorruptData as error:
            self.problem("index", str(error))
            stats = {}
        for digest, location in self.locations.items():
            self.by_pack[location.pack_id].append((digest, location))
        for pack_id in self.packs.list():
            self.sizes[pack_id] = self.packs.size(pack_id)
            try:
                self.footers[pack_id] = read_footer(self.packs, pack_id)
            except CorruptData as error:
                self._footer_damaged(pack_id, str(error), pack_id in stats)
        self.report.packs = len(self.sizes)
        self.report.stored_bytes = sum(self.sizes.values())
        for pack_id in sorted(set(stats) | set(self.by_pack)):
            if pack_id not in self.sizes:
                self._pack_missing(pack_id)
                continue
            if pack_id in stats and stats[pack_id].file_size != self.sizes[pack_id]:
                self.problem(f"pack {pack_id}", f"is {self.sizes[pack_id]} bytes but was "
                             f"{stats[pack_id].file_size} when indexed (truncated or "
                             f"overwritten)")
            self._compare_with_footer(pack_id)
        for pack_id in sorted(set(self.sizes) - set(stats)):
            self.report.orphan_packs.append(pack_id)
            for entry in self.footers.get(pack_id, []):
                if entry.digest not in self.locations:
                    self.unindexed.setdefault(entry.digest, (pack_id, entry))

    def _footer_damaged(self, pack_id: str, reason: str, indexed: bool) -> None:
        if indexed:
            hint = ("its records are checked through the index" if self.report.read_data
                    else "--read-data checks its records through the index")
            self.problem(f"pack {pack_id}", f"{reason}; the index still locates its chunks "
                         f"({hint}); repair rescues the intact ones")
        else:
            self.problem(f"pack {pack_id}", f"{reason}; it is not indexed, so its chunks "
                         f"cannot be located")

    def _pack_missing(self, pack_id: str) -> None:
        entries = self.by_pack.get(pack_id, [])
        if not entries:  # a compact was stopped between the unlink and its bookkeeping
            self.report.half_deleted_packs.append(pack_id)
            return
        for digest, _ in entries:
            self.lost[digest] = f"its pack {pack_id} is missing"
        self.problem(f"pack {pack_id}", f"is missing: the {len(entries)} chunks indexed in it "
                     f"are lost ({_short([d for d, _ in entries])})")

    def _compare_with_footer(self, pack_id: str) -> None:
        entries = self.by_pack.get(pack_id, [])
        footer = self.footers.get(pack_id)
        size = self.sizes[pack_id]
        if footer is None:
            cut = [d for d, loc in entries if loc.offset + loc.stored_size > size]
            for digest in cut:
                self.lost[digest] = f"cut off: pack {pack_id} is truncated"
            if cut:
                self.problem(f"pack {pack_id}", f"ends before {len(cut)} indexed chunks, "
                             f"which are lost ({_short(cut)})")
            return
        listed = {e.offset: e for e in footer}
        wrong = []
        for digest, loc in entries:
            entry = listed.get(loc.offset)
            if entry is None or (entry.digest, entry.stored_size, entry.raw_size,
                                 entry.flags) != (digest, loc.stored_size, loc.raw_size,
                                                  loc.flags):
                wrong.append(digest)
                self.lost[digest] = f"its index entry does not match pack {pack_id}'s footer"
        if wrong:
            self.problem(f"pack {pack_id}", f"{len(wrong)} index entries do not match its "
                         f"footer ({_short(wrong)}); repair rebuilds them")

    # -- read-data -----------------------------------------------------------------------
    def _read_all_records(self) -> None:
        for pack_id in sorted(self.sizes):
            entries = self.footers.get(pack_id) or [
                loc.entry(d) for d, loc in self.by_pack.get(pack_id, [])]
            damaged = []
            for entry, _, problem in verify_pack(self.packs, self.storage.codec, pack_id,
                                                 entries, self.storage.pool):
                self.report.records_read += 1
                self.report.bytes_read += entry.stored_size
                if self.progress:
                    self.progress(self.report.bytes_read, self.report.stored_bytes)
                if problem and self._record_damaged(pack_id, entry, problem):
                    damaged.append((entry, problem))
            if damaged:
                detail = "; ".join(f"chunk {e.digest.hex()[:16]} at offset {e.offset} {why}"
                                   for e, why in damaged[:SHOWN_DIGESTS])
                more = len(damaged) - SHOWN_DIGESTS
                self.problem(f"pack {pack_id}", f"{len(damaged)} damaged records: {detail}"
                             + (f"; and {more} more" if more > 0 else ""))

    def _record_damaged(self, pack_id: str, entry: PackEntry, problem: str) -> bool:
        """Note a damaged record; True if the index uses it (damage), False if it is a
        copy nothing points at (harmless: repair left it out, or another copy is used)."""
        location = self.locations.get(entry.digest)
        if location and (location.pack_id, location.offset) == (pack_id, entry.offset):
            self.lost[entry.digest] = f"its record in pack {pack_id} {problem}"
            return True
        if self.unindexed.get(entry.digest) == (pack_id, entry):
            del self.unindexed[entry.digest]
        self.report.damaged_unused_records += 1
        return False

    # -- manifests -----------------------------------------------------------------------
    def _status(self, digest: bytes) -> str | None:
        if digest in self.lost:
            return LOST
        if digest in self.locations:
            return None
        if digest in self.unindexed:
            return UNINDEXED
        self.lost[digest] = "it is in no pack and not in the index"
        self.nowhere.append(digest)
        return LOST

    def _load_block(self, digest: bytes) -> bytes | str:
        """The block's bytes, or why it cannot be read."""
        try:
            if digest in self.unindexed:
                pack_id, entry = self.unindexed[digest]
                stored = read_verified(self.packs, self.storage.codec, pack_id, entry)
                return self.storage.codec.decompress(stored, entry, digest)
            return self.storage.chunks.get(digest)
        except CorruptData as error:
            return str(error)

    def _walk_manifests(self) -> None:
        unique = {ref.digest for record in self.records for ref in record.blocks}
        self.report.manifest_blocks = len(unique)
        self.referenced |= unique
        readable = [d for d in sorted(unique) if self._status(d) != LOST]
        for digest in unique.difference(readable):
            self.blocks[digest] = _BlockDamage(whole=True)
        for digest, loaded in ordered_map(self.storage.pool, self._load_block, readable,
                                          window=4 * worker_count()):
            if isinstance(loaded, str):
                self.problem(f"manifest block {digest.hex()[:16]}", loaded)
                self.lost[digest] = loaded
                self.blocks[digest] = _BlockDamage(whole=True)
                continue
            try:
                entries = decode_block(loaded)
                self.block_lengths[digest] = block_length(entries)
            except CorruptData as error:
                self.problem(f"manifest block {digest.hex()[:16]}", str(error))
                self.lost[digest] = str(error)
                self.blocks[digest] = _BlockDamage(whole=True)
                continue
            damage = _BlockDamage(unindexed=self._status(digest) == UNINDEXED)
            offset = 0
            for entry in entries:
                if entry.digest is not None:
                    self.referenced.add(entry.digest)
                    kind = self._status(entry.digest)
                    if kind:
                        damage.entries.append((offset, entry.length, kind))
                offset += entry.length
            if damage.unindexed or damage.entries:
                self.blocks[digest] = damage
        self.report.chunks_referenced = len(self.referenced)
        if self.nowhere:
            self.problem("index", f"{len(self.nowhere)} chunks that snapshots use are neither "
                         f"in the index nor intact in a pack it lacks "
                         f"({_short(self.nowhere)})")
        recoverable = [d for d in self.referenced if d in self.unindexed]
        if recoverable:
            packs = {self.unindexed[d][0] for d in recoverable}
            self.problem("index", f"{len(recoverable)} chunks that snapshots use are missing "
                         f"from the index but intact in {len(packs)} packs it does not list; "
                         f"'diskvault check --repair' indexes them again")

    def _attribute(self) -> None:
        for record in self.records:
            damage = SnapshotDamage(record)
            for ref, end in zip(record.blocks, block_ends(record.blocks, record.size)):
                if self._misplaced(record, ref, end):
                    damage.note(ref.offset, end - ref.offset, LOST)
                    continue
                found = self.blocks.get(ref.digest)
                if found is None:
                    continue
                if found.whole:
                    damage.note(ref.offset, end - ref.offset, LOST)
                    continue
                if found.unindexed:
                    damage.note(ref.offset, 0, UNINDEXED)
                for offset, length, kind in found.entries:
                    damage.note(ref.offset + offset, length, kind)
            if damage.first_offset is not None:
                self.report.damaged_snapshots.append(damage)

    def _misplaced(self, record: SnapshotRecord, ref: BlockRef, end: int) -> bool:
        """A readable block that does not fill the range the record gives it: the record
        (or the block) is damaged, and every offset from there on would be wrong."""
        covered = self.block_lengths.get(ref.digest)
        problem = None if covered is None else fill_problem(covered, ref.offset, end)
        if problem:
            self.problem(f"snapshot record {record.id}.json",
                         str(damage_context(record, ref.offset, CorruptData(problem))))
        return problem is not None

    def _count_unreferenced(self) -> None:
        for digest, location in self.locations.items():
            if digest not in self.referenced:
                self.report.unreferenced_chunks += 1
                self.report.unreferenced_bytes += location.stored_size


def check(storage: Storage, read_data: bool = False,
          progress: Progress | None = None) -> CheckReport:
    """Check the repository as a reader (compaction will not delete packs meanwhile)."""
    with storage.reader_lock():
        return _Checker(storage, read_data, progress).run()
