"""Compaction: give the space of chunks no snapshot uses back to the filesystem.

1. Bring the reference counts in step with the snapshot records (liveness.reconcile:
   reads only manifest blocks added or dropped since the last run).
2. Review only the packs that may hold garbage: new since the last run, home of a chunk
   that died, doomed, or last seen with more unused bytes than the threshold given now.
   A pack with nothing live is doomed. A pack with more unused bytes than the threshold
   is emptied: its live records are read, verified, and copied into new packs, which are
   made durable and indexed (locations switched) before the old pack is marked doomed in
   LMDB. Packs with nothing live are deleted (3.) before any copy is written, so that
   compact gives space back first on a full disk.
3. Delete doomed packs, but only while no reader (restore, cat, mount, check) runs: a
   reader may still hold a location in them. Otherwise they wait for a later compact.

A kill at any instant is safe: a copy is indexed only once durable; a pack is doomed only
after its live records are indexed elsewhere; index entries into a doomed pack go before
its file does. A rerun reviews doomed packs again, so a chunk that a backup reused in the
meantime is copied out before its pack is deleted.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..store import locking, space
from ..errors import BadInput, CorruptData
from .liveness import Liveness, batches
from ..store.manifest import ManifestEntry, decode_block
from ..store.packs import ENTRY, PackEntry, PackWriter, read_footer
from ..store.snapshots import SnapshotRecord
from .verify import verify_pack

if TYPE_CHECKING:
    from ..store.repository import Repository

log = logging.getLogger(__name__)

# Rewrite a pack once more than this share of it is unused. A record counts with its footer
# entry, so after compact: pack bytes <= a fresh repository's / (1 - threshold) + 52 per pack.
DEFAULT_THRESHOLD = 0.2
SAVE_EVERY_PACKS = 256  # review outcomes and deletions per LMDB transaction


@dataclass
class CompactResult:
    threshold: float
    blocks_added: int = 0          # manifest blocks newly accounted (new backups)
    blocks_released: int = 0       # manifest blocks no snapshot lists any more
    packs_reviewed: int = 0
    packs_rewritten: int = 0       # packs whose live records were copied out
    packs_deleted: int = 0
    packs_written: int = 0         # new packs holding the copies
    chunks_copied: int = 0
    bytes_written: int = 0         # file bytes of the new packs
    bytes_freed: int = 0           # file bytes of the deleted packs
    packs_waiting: int = 0         # doomed packs kept because readers run
    bytes_waiting: int = 0
    packs_damaged: list[str] = field(default_factory=list)  # left alone: run check
    duration_s: float = 0.0


def _cost(entry: PackEntry) -> int:
    """What a record takes in its pack: its bytes and its footer entry."""
    return entry.stored_size + ENTRY.size


def validate_threshold(threshold: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise BadInput(f"compaction threshold must be at least 0 % and below 100 %, "
                       f"got {threshold * 100:g} %")


class _Compactor:
    def __init__(self, repository: Repository, threshold: float):
        self.repository = repository
        self.backend = repository.packs
        self.index = repository.index
        self.liveness = Liveness(repository.index)
        self.threshold = threshold
        self.result = CompactResult(threshold)
        self._writer: PackWriter | None = None
        self._copied_sources: list[str] = []  # every live record already in self._writer
        # Review outcomes wait here and are saved in one transaction: losing them to a
        # kill only means reviewing those packs again.
        self._reviewed: dict[str, tuple[int, int]] = {}
        self._doomed: list[str] = []
        self._to_empty: list[str] = []  # reviewed packs whose live records are to be copied

    def run(self) -> CompactResult:
        started = time.monotonic()
        self.repository.recover_unindexed_packs()
        self._reconcile()
        self._forget_vanished()
        self._review_all()
        self._delete_doomed()  # space back before any copy is written: a disk may be full
        self._empty_all()
        self._delete_doomed()
        self.result.duration_s = round(time.monotonic() - started, 3)
        return self.result

    # -- 1. what is in use ---------------------------------------------------------------
    def _reconcile(self) -> None:
        owners: dict[bytes, SnapshotRecord] = {}
        for record in self.repository.snapshots.all_intact():
            for block in record.blocks:
                owners.setdefault(block.digest, record)

        def read_block(digest: bytes) -> list[ManifestEntry]:
            try:
                return decode_block(self.repository.chunks.get(digest))
            except CorruptData as error:
                owner = owners.get(digest)
                if owner is None:
                    raise
                raise CorruptData(
                    f"manifest block {digest.hex()[:16]} of snapshot {owner.short_id} "
                    f"({owner.name}, {owner.time_label}) cannot be read ({error}); compact "
                    f"needs every snapshot's manifest to know what is in use: run "
                    f"'diskvault check', then repair or delete that snapshot") from None

        stats = self.liveness.reconcile(owners.keys(), read_block, self.repository.pool)
        self.result.blocks_added = stats.blocks_added
        self.result.blocks_released = stats.blocks_released

    # -- 2. review and copy --------------------------------------------------------------
    def _review_all(self) -> None:
        doomed = self.liveness.doomed()
        try:
            for pack_id in self.liveness.packs_to_review(self.index.known_packs(),
                                                         self.threshold):
                self._review(pack_id, pack_id in doomed)
                self._save_reviews_every_so_often()
        finally:
            self._save_reviews()

    def _empty_all(self) -> None:
        try:
            for pack_id in self._to_empty:
                self._empty(pack_id)
                self._save_reviews_every_so_often()
            self._finish_pack()
        except BaseException:
            if self._writer is not None:
                self._writer.abort()
            raise
        finally:
            self._save_reviews()
        self._to_empty = []

    def _review(self, pack_id: str, doomed: bool) -> None:
        entries = self._footer(pack_id)
        if entries is None:
            return
        self.result.packs_reviewed += 1
        live = self._live(pack_id, entries)
        total = sum(_cost(e) for e in entries)
        unused = total - sum(_cost(e) for e in live)
        if live and not doomed and unused <= self.threshold * total:
            self._reviewed[pack_id] = (unused, total)
        elif not live:
            self._doomed.append(pack_id)
        else:
            self._to_empty.append(pack_id)

    def _empty(self, pack_id: str) -> None:
        """Copy out the live records of a pack that the review chose to empty."""
        entries = self._footer(pack_id)
        if entries is not None and self._copy_out(pack_id, self._live(pack_id, entries)):
            self.result.packs_rewritten += 1

    def _footer(self, pack_id: str) -> list[PackEntry] | None:
        """The pack's entries, or None for a damaged or missing pack (left alone)."""
        try:
            return read_footer(self.backend, pack_id)
        except (CorruptData, FileNotFoundError) as error:
            log.warning("pack %s was left as it is: %s; run 'diskvault check'", pack_id,
                        error if isinstance(error, CorruptData) else "it is missing")
            self.result.packs_damaged.append(pack_id)
            return None

    def _live(self, pack_id: str, entries: list[PackEntry]) -> list[PackEntry]:
        with self.liveness.read_txn() as txn:
            return [e for e in entries if self._is_live(txn, pack_id, e)]

    def _is_live(self, txn, pack_id: str, entry: PackEntry) -> bool:
        """The record is the indexed copy of its chunk, and some snapshot uses the chunk."""
        location = self.index.lookup(entry.digest, txn)
        return (location is not None and location.pack_id == pack_id
                and location.offset == entry.offset
                and self.liveness.is_used(txn, entry.digest))

    def _copy_out(self, pack_id: str, live: list[PackEntry]) -> bool:
        """Copy the live records into new packs; the source is doomed once all of them
        are durable and indexed. A damaged record leaves the source untouched."""
        records = list(verify_pack(self.backend, self.repository.codec, pack_id, live,
                                   self.repository.pool))
        damaged = [entry for entry, _, problem in records if problem]
        if damaged:
            log.warning("pack %s holds %d damaged records in use and was not rewritten; "
                        "run 'diskvault check --read-data'", pack_id, len(damaged))
            self.result.packs_damaged.append(pack_id)
            return False
        for entry, stored, _ in records:
            if self._writer is None:
                self._writer = PackWriter(self.backend, secrets.token_hex(16))
            self._writer.add(entry.digest, stored, entry.raw_size, entry.flags)
            self.result.chunks_copied += 1
            if self._writer.size >= self.repository.config.pack_target_bytes:
                self._finish_pack()
        self._copied_sources.append(pack_id)
        return True

    def _finish_pack(self) -> None:
        """Make the open pack durable and point its chunks at it; only then may the
        sources whose live records are all in finished packs be doomed."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            entries = writer.finish()  # fsync + rename + fsync dir before the index moves
            self.index.add_relocated_pack(writer.pack_id, entries, writer.size)
            self._reviewed[writer.pack_id] = (0, sum(_cost(e) for e in entries))
            self.result.packs_written += 1
            self.result.bytes_written += writer.size
        self._doomed.extend(self._copied_sources)
        self._copied_sources = []

    def _save_reviews_every_so_often(self) -> None:
        if len(self._reviewed) + len(self._doomed) >= SAVE_EVERY_PACKS:
            self._save_reviews()

    def _save_reviews(self) -> None:
        if self._reviewed or self._doomed:
            self.liveness.record_reviews(self._reviewed, self._doomed)
            self._reviewed, self._doomed = {}, []

    # -- 3. delete -----------------------------------------------------------------------
    def _delete_doomed(self) -> None:
        # A doomed pack still to be emptied holds live records (a backup reused them).
        doomed = sorted(self.liveness.doomed() - set(self.result.packs_damaged)
                        - set(self._to_empty))
        if not doomed:
            return
        with locking.readers_excluded(self.repository.backend) as excluded:
            if not excluded:
                self.result.packs_waiting = len(doomed)
                self.result.bytes_waiting = sum(self.backend.size(p) for p in doomed)
                return
            for group in batches(doomed, SAVE_EVERY_PACKS):
                self._delete(group)

    def _delete(self, pack_ids: list[str]) -> None:
        """Index entries first (no backup may reuse them), then the files, then the packs'
        rows: a kill in between leaves doomed packs that the next run finishes."""
        self.index.remove_locations({p: read_footer(self.backend, p) for p in pack_ids})
        for pack_id in pack_ids:
            self.result.bytes_freed += self.backend.size(pack_id)
            self.backend.delete(pack_id)
            self.result.packs_deleted += 1
        self.index.remove_packs(pack_ids)
        self.liveness.forget_packs(pack_ids)

    def _forget_vanished(self) -> None:
        """Finish deletions a kill interrupted after the unlink. Any index entry left
        pointing into such a pack goes too (found by one scan of the index: this is rare)."""
        vanished = [p for p in sorted(self.liveness.doomed()) if not self._exists(p)]
        if not vanished:
            return
        stale: dict[str, list[PackEntry]] = {p: [] for p in vanished}
        for digest, loc in self.index.iter_chunks():
            if loc.pack_id in stale:
                stale[loc.pack_id].append(
                    PackEntry(digest, loc.offset, loc.stored_size, loc.raw_size, loc.flags))
        self.index.remove_locations(stale)
        self.index.remove_packs(vanished)
        self.liveness.forget_packs(vanished)

    def _exists(self, pack_id: str) -> bool:
        try:
            self.backend.size(pack_id)
            return True
        except FileNotFoundError:
            return False


def compact(repository: Repository, threshold: float = DEFAULT_THRESHOLD,
            lock_wait_s: float = 0.0) -> CompactResult:
    """Reclaim unused space; holds the writer lock. See the module docstring."""
    validate_threshold(threshold)
    with repository.writer_lock("compact", lock_wait_s):
        space.release_reserve_if_full(repository.backend, repository.space_folders)
        result = _Compactor(repository, threshold).run()
        space.allocate_reserve(repository.backend)
        return result
