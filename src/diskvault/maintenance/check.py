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

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptData
from ..store.format.manifest import BlockRef, block_ends, block_length, decode_block, fill_problem
from ..store.format.packs import PackEntry, read_footer
from ..store.format.snapshots import SnapshotRecord
from ..store.host.durable import make_private_folder
from ..store.host.user_folders import user_cache_folder
from ..store.index.chunk_index import ChunkLocation, DigestSet, PackStats, fingerprint
from ..store.pipeline import ordered_map, worker_count
from ..store.read.image_map import damage_context
from ..store.storage import Storage
from .check_report import LOST, UNINDEXED, CheckReport, Problem, SnapshotDamage
from .usage import PackUsage, merged
from .verify import read_verified, verify_pack

Progress = Callable[[int, int], None]  # (bytes read so far, bytes to read)
SHOWN_DIGESTS = 5  # chunks named per problem line; the count says how many there are


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
    """One check. Memory follows the packs, the manifest blocks and the damage found, not
    the chunks: locations are looked up in the index as they are needed, a pack's footer
    is compared and let go, and the chunks in use are kept in a DigestSet on disk."""

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
        self.blocks: dict[bytes, _BlockDamage] = {}
        self.readable: list[bytes] = []  # manifest blocks that may be read
        self.block_lengths: dict[bytes, int] = {}  # readable block -> bytes it covers
        self.referenced = referenced
        self.recoverable: set[bytes] = set()  # used, missing from the index, intact elsewhere
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
        self.report.duration_s = round(time.monotonic() - started, 3)
        return self.report

    def _note_strays(self) -> None:
        self.report.stray_entries += self.storage.snapshots.strays() + self.packs.strays()

    def _load_records(self) -> None:
        self.records, damaged = self.storage.snapshots.scan()
        for path, error in damaged:
            self.problem(f"snapshot record {path.name}", str(error))
        self.report.snapshots = len(self.records)

    # -- index lookups -------------------------------------------------------------------
    def _locations(self, digests) -> Iterator[tuple[bytes, ChunkLocation | None]]:
        """Where the index puts each digest (an index that cannot be read puts none)."""
        if not self.index_readable:
            return ((digest, None) for digest in digests)
        return self.index.locate_many(digests)

    def _location(self, digest: bytes) -> ChunkLocation | None:
        return self.index.lookup(digest) if self.index_readable else None

    # -- packs and index -----------------------------------------------------------------
    def _scan_packs(self) -> None:
        try:
            self.fingerprints = self.index.pack_fingerprints()
            self.stats = dict(self.index.pack_stats())
        except CorruptData as error:
            self.problem("index", str(error))
            self.index_readable = False
            self.fingerprints, self.stats = {}, {}
        mismatched = []
        for pack_id in self.packs.list():
            self.sizes[pack_id] = self.packs.size(pack_id)
            try:
                footer = read_footer(self.packs, pack_id)
            except CorruptData as error:
                self._footer_damaged(pack_id, str(error), pack_id in self.stats)
                self.damaged_footers.add(pack_id)
                continue
            if pack_id not in self.stats:
                self.report.orphan_packs.append(pack_id)
                for entry, (_, location) in zip(footer, self._locations(
                        e.digest for e in footer)):
                    if location is None:
                        self.unindexed.setdefault(entry.digest, (pack_id, entry))
            if (pack_id in self.stats or pack_id in self.fingerprints) and not self._agrees(
                    pack_id, footer):
                mismatched.append(pack_id)
        self.report.packs = len(self.sizes)
        self.report.stored_bytes = sum(self.sizes.values())
        self._compare_one_by_one(mismatched)

    def _agrees(self, pack_id: str, footer: list[PackEntry]) -> bool:
        """Whether the index entries into this pack are exactly its footer's records: one
        fingerprint compared, or a lookup per record when the footer holds records the
        index does not point at (copies)."""
        count, total = self.fingerprints.get(pack_id, (0, 0))
        if count == len(footer):
            return fingerprint(pack_id, footer) == total
        pointed_at = 0
        for entry, (_, location) in zip(footer, self._locations(e.digest for e in footer)):
            if location is not None and location.pack_id == pack_id \
                    and location.entry(entry.digest) == entry:
                pointed_at += 1
            else:  # a copy beside the indexed one: repair indexes it if that one is lost
                self.unindexed.setdefault(entry.digest, (pack_id, entry))
        return pointed_at == count

    def _compare_one_by_one(self, mismatched: list[str]) -> None:
        """The packs whose index entries and footer disagree, the packs that are missing or
        truncated: their entries are fetched by one pass over the index (damage is rare)."""
        missing = [p for p in set(self.stats) | set(self.fingerprints) if p not in self.sizes]
        damaged = [p for p in self.damaged_footers if p in self.fingerprints]
        named = self.index.locations_in(mismatched + missing + damaged) if (
            mismatched or missing or damaged) else {}
        for pack_id in sorted(set(self.stats) | set(self.fingerprints)):
            if pack_id not in self.sizes:
                self._pack_missing(pack_id, named[pack_id])
                continue
            if pack_id in self.stats and self.stats[pack_id].file_size != self.sizes[pack_id]:
                self.problem(f"pack {pack_id}", f"is {self.sizes[pack_id]} bytes but was "
                             f"{self.stats[pack_id].file_size} when indexed (truncated or "
                             f"overwritten)")
            if pack_id in named:
                self._compare_with_footer(pack_id, named[pack_id])

    def _footer_damaged(self, pack_id: str, reason: str, indexed: bool) -> None:
        if indexed:
            hint = ("its records are checked through the index" if self.report.read_data
                    else "--read-data checks its records through the index")
            self.problem(f"pack {pack_id}", f"{reason}; the index still locates its chunks "
                         f"({hint}); repair rescues the intact ones")
        else:
            self.problem(f"pack {pack_id}", f"{reason}; it is not indexed, so its chunks "
                         f"cannot be located")

    def _pack_missing(self, pack_id: str, entries: list[tuple[bytes, ChunkLocation]]) -> None:
        if not entries:  # a compact was stopped between the unlink and its bookkeeping
            self.report.half_deleted_packs.append(pack_id)
            return
        for digest, _ in entries:
            self.lost[digest] = f"its pack {pack_id} is missing"
        self.problem(f"pack {pack_id}", f"is missing: the {len(entries)} chunks indexed in it "
                     f"are lost ({_short([d for d, _ in entries])})")

    def _compare_with_footer(self, pack_id: str,
                             entries: list[tuple[bytes, ChunkLocation]]) -> None:
        size = self.sizes[pack_id]
        if pack_id in self.damaged_footers:
            cut = [d for d, loc in entries if loc.offset + loc.stored_size > size]
            for digest in cut:
                self.lost[digest] = f"cut off: pack {pack_id} is truncated"
            if cut:
                self.problem(f"pack {pack_id}", f"ends before {len(cut)} indexed chunks, "
                             f"which are lost ({_short(cut)})")
            return
        listed = {e.offset: e for e in read_footer(self.packs, pack_id)}
        wrong = []
        for digest, loc in entries:
            if listed.get(loc.offset) != loc.entry(digest):
                wrong.append(digest)
                self.lost[digest] = f"its index entry does not match pack {pack_id}'s footer"
        if wrong:
            self.problem(f"pack {pack_id}", f"{len(wrong)} index entries do not match its "
                         f"footer ({_short(wrong)}); repair rebuilds them")

    # -- read-data -----------------------------------------------------------------------
    def _read_all_records(self) -> None:
        for pack_id in sorted(self.sizes):
            if pack_id in self.damaged_footers:
                named = self.index.locations_in([pack_id]) if self.index_readable else {}
                entries = [loc.entry(d) for d, loc in named.get(pack_id, [])]
            else:
                entries = read_footer(self.packs, pack_id)
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
        location = self._location(entry.digest)
        if location and (location.pack_id, location.offset) == (pack_id, entry.offset):
            self.lost[entry.digest] = f"its record in pack {pack_id} {problem}"
            return True
        if self.unindexed.get(entry.digest) == (pack_id, entry):
            del self.unindexed[entry.digest]
        self.report.damaged_unused_records += 1
        return False

    # -- manifests -----------------------------------------------------------------------
    def _block_statuses(self, digests: list[bytes]) -> list[str | None]:
        """LOST, UNINDEXED or None (sound) for each manifest block, looked up one by one
        (there are few of them)."""
        found = []
        for digest, location in self._locations(digests):
            if digest in self.lost:
                found.append(self._lost_kind(digest))
            elif location is not None:
                found.append(None)
            else:
                found.append(self._not_indexed(digest))
        return found

    def _lost_kind(self, digest: bytes) -> str:
        """A chunk in use whose indexed copy is lost: UNINDEXED if another copy is intact
        in a pack (repair indexes it), else LOST."""
        if digest in self.unindexed:
            self.recoverable.add(digest)
            return UNINDEXED
        return LOST

    def _not_indexed(self, digest: bytes) -> str:
        """A chunk in use that the index lacks: intact in a pack it lacks, or lost."""
        if digest in self.unindexed:
            self.recoverable.add(digest)
            return UNINDEXED
        self.lost[digest] = "it is in no pack and not in the index"
        self.nowhere.append(digest)
        return LOST

    def _load_block(self, digest: bytes) -> bytes | str:
        """The block's bytes, or why it cannot be read."""
        try:
            if digest in self.unindexed and (digest in self.lost
                                             or self._location(digest) is None):
                pack_id, entry = self.unindexed[digest]
                stored = read_verified(self.packs, self.storage.codec, pack_id, entry)
                return self.storage.codec.decompress(stored, entry, digest)
            return self.storage.chunks.get(digest)
        except CorruptData as error:
            return str(error)

    def _walk_manifests(self) -> None:
        """Read every manifest block once: note the chunks in use (on disk), the blocks
        that cannot be read, and the entries whose chunk is already known to be lost. Then
        one ordered pass over the index and the chunks in use finds those the index lacks;
        only if there are any are the blocks read again, to say where they are."""
        unique = sorted({ref.digest for record in self.records for ref in record.blocks})
        self.report.manifest_blocks = len(unique)
        status = dict(zip(unique, self._block_statuses(unique)))
        self.readable = [d for d in unique if status[d] != LOST]
        for digest in unique:
            self.referenced.add(digest)
            if status[digest] == LOST:
                self.blocks[digest] = _BlockDamage(whole=True)
            elif status[digest] == UNINDEXED:
                self.blocks[digest] = _BlockDamage(unindexed=True)
        bad = {digest: UNINDEXED if digest in self.unindexed else LOST
               for digest in self.lost}
        for digest, entries in self._blocks_read():
            self.block_lengths[digest] = block_length(entries)
            for entry in entries:
                if entry.digest is not None:
                    self.referenced.add(entry.digest)
            self._note_entries(digest, entries, bad)
        missing = self._cross_index(status)
        if missing:
            for digest, entries in self._blocks_read(report=False):
                self._note_entries(digest, entries, missing)
        self.report.chunks_referenced = len(self.referenced)
        if self.nowhere:
            self.problem("index", f"{len(self.nowhere)} chunks that snapshots use are neither "
                         f"in the index nor intact in a pack it lacks "
                         f"({_short(self.nowhere)})")
        if self.recoverable:
            packs = {self.unindexed[d][0] for d in self.recoverable}
            self.problem("index", f"{len(self.recoverable)} chunks that snapshots use are "
                         f"not indexed where they are intact (in {len(packs)} packs); "
                         f"'diskvault check --repair' indexes them again")

    def _blocks_read(self, report: bool = True) -> Iterator[tuple[bytes, list]]:
        """The decoded entries of every readable block; a block that cannot be read or
        decoded is damage (noted when ``report``) and skipped."""
        for digest, loaded in ordered_map(self.storage.pool, self._load_block, self.readable,
                                          window=4 * worker_count()):
            try:
                if isinstance(loaded, str):
                    raise CorruptData(loaded)
                entries = decode_block(loaded)
            except CorruptData as error:
                if report:
                    self.problem(f"manifest block {digest.hex()[:16]}", str(error))
                    self.lost[digest] = str(error)
                    self.blocks[digest] = _BlockDamage(whole=True)
                continue
            yield digest, entries

    def _note_entries(self, block: bytes, entries: list, bad: dict[bytes, str]) -> None:
        """Note the entries of ``block`` whose chunk is in ``bad`` (digest -> kind)."""
        if not bad:
            return
        offset = 0
        for entry in entries:
            kind = bad.get(entry.digest) if entry.digest is not None else None
            if kind:
                self.blocks.setdefault(block, _BlockDamage()).entries.append(
                    (offset, entry.length, kind))
                if kind == UNINDEXED:
                    self.recoverable.add(entry.digest)
            offset += entry.length

    def _cross_index(self, block_status: dict[bytes, str | None]) -> dict[bytes, str]:
        """One ordered pass over the chunks in use and the index together: the chunks in
        use the index lacks (returned with their kind), and the index entries no snapshot
        uses (counted, with those a compact at its default threshold frees)."""
        missing: dict[bytes, str] = {}
        usage = PackUsage()
        indexed = self.index.iter_chunks() if self.index_readable else iter(())
        for digest, in_use, location in merged(iter(self.referenced), indexed):
            if location is not None:
                usage.add(digest, location, in_use)
            elif digest not in block_status and digest not in self.lost:
                missing[digest] = self._not_indexed(digest)
        self.report.unused = usage.summed(self.stats)
        return missing

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

def _scratch_parent() -> Path:
    """Where check keeps the set of chunks in use: this user's cache folder (on a disk,
    where /tmp may be memory), or the temporary folder for a user with no usable cache."""
    cache = user_cache_folder()
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private_folder(cache)
        return cache
    except OSError:
        return Path(tempfile.gettempdir())


def check(storage: Storage, read_data: bool = False,
          progress: Progress | None = None) -> CheckReport:
    """Check the repository as a reader (compaction will not delete packs meanwhile)."""
    with storage.reader_lock(), DigestSet(_scratch_parent()) as referenced:
        return _Checker(storage, read_data, progress, referenced).run()
