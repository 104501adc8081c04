"""Copying snapshots from one repository into another (``diskvault copy``): only the chunks
the destination lacks are written, every byte read is verified, and each snapshot record
is written last, sealed by the destination, once everything it references is durable there.

Three ways, chosen by whether both repositories cut chunks alike (the same sizes, neither
keyed: a keyed chunker's key is its repository's own) and name them alike (both plaintext
blake3, or one chunk-id key):

- **same ids**: the record is kept as it is; a chunk id the destination already has is not
  even read from the source (a manifest block it has is read from the destination);
- **new ids**: every chunk is read, verified, named by the destination's chunk-id function
  and stored if missing; the manifest is rebuilt with those ids (its blocks may cut in
  other places: their boundaries depend on the ids);
- **cut anew**: the repositories cut differently, so the image is read and cut again by the
  destination's chunker, as a backup into it would cut it (its next backup's hints, and its
  deduplication, rest on that).

A snapshot protected in the source (``diskvault protect``) is protected in the destination
too, once its record is there (also when it was copied before it was protected); a copy
never removes a mark.

A copy killed at any moment leaves the destination consistent (the write session's packs
are sealed before the index learns of them; records come last) and a rerun writes only
what is still missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import CorruptData
from .backup.back_up import ImageRecorder, parallel_hasher
from .backup.chunker import Chunker
from .backup.write_session import WriteSession
from .format.block_list import BlockRef
from .format.codec import Codec
from .format.manifest import ManifestBuilder, ManifestEntry, placed_entries, spans
from .format.snapshot_selection import select_snapshot
from .format.snapshots import BackupStats, SnapshotRecord
from .pipeline import batches, ordered_map
from .read.image_map import cutting_hints, damage_context
from .restore.restore import FETCH_WINDOW, image_pieces
from .storage import Storage

# Any fixed bytes do: two chunk-id functions that agree on them are the same function
# (different blake3 keys collide here with probability 2^-256).
CHUNK_ID_PROBE = b"diskvault copy: do both repositories name chunks alike?"
STORE_BATCH = 64  # chunks handed to the write session at once
Progress = Callable[[int], None]


@dataclass
class CopyReport:
    """What a copy did; ``chunks_sent`` and the byte counts include manifest blocks."""

    copied: list[SnapshotRecord] = field(default_factory=list)   # as the destination has them
    skipped: list[SnapshotRecord] = field(default_factory=list)  # it had them already
    same_chunk_ids: bool = True
    same_cuts: bool = True   # False: the images were cut anew by the destination's chunker
    chunks_sent: int = 0
    bytes_sent: int = 0      # raw bytes of the chunks written to the destination
    stored_bytes: int = 0    # what they take in its packs
    chunks_skipped: int = 0  # data chunk references not sent: had, or sent already
    protected: list[SnapshotRecord] = field(default_factory=list)  # marks carried over


def names_chunks_alike(source: Codec, destination: Codec) -> bool:
    return source.chunk_id(CHUNK_ID_PROBE) == destination.chunk_id(CHUNK_ID_PROBE)


def cuts_chunks_alike(source: Storage, destination: Storage) -> bool:
    """The same sizes and the same (or no) keyed permutation: two keyed repositories never
    share one, as each has its own key."""
    return (source.config.chunker == destination.config.chunker
            and source.cipher.chunk_permutation == destination.cipher.chunk_permutation)


def select_for_copy(records: Sequence[SnapshotRecord], present: set[str],
                    selectors: Sequence[str]) -> tuple[list[SnapshotRecord], list[SnapshotRecord]]:
    """(records to copy, records the destination has), oldest first: the selected ones, or
    all of ``records`` when no selector is given. A snapshot named twice is copied once."""
    chosen = records if not selectors else [select_snapshot(records, s) for s in selectors]
    unique = sorted({r.id: r for r in chosen}.values(), key=lambda r: (r.time, r.id))
    return ([r for r in unique if r.id not in present], [r for r in unique if r.id in present])


def pending_copies(source: Storage, destination: Storage, selectors: Sequence[str] = ()
                   ) -> tuple[list[SnapshotRecord], CopyReport]:
    """(the selected snapshots the destination lacks, a report naming those it has): two
    listings of snapshot records, which an object store's cache answers without a GET."""
    to_copy, present = select_for_copy(source.snapshots.all().headers,
                                       set(destination.snapshots.ids()), selectors)
    return to_copy, CopyReport(skipped=present,
                               same_chunk_ids=names_chunks_alike(source.codec, destination.codec),
                               same_cuts=cuts_chunks_alike(source, destination))


def marks_to_carry(source: Storage, destination: Storage,
                   records: Sequence[SnapshotRecord]) -> list[SnapshotRecord]:
    """Those of ``records`` protected in the source and not (yet) in the destination: two
    listings (one when the source protects none of them)."""
    wanted = source.protection.ids() & {record.id for record in records}
    missing = wanted - destination.protection.ids() if wanted else set()
    return [record for record in records if record.id in missing]


def copy_snapshots(source: Storage, destination: Storage, selectors: Sequence[str] = (),
                   progress: Progress | None = None,
                   before_record: Callable[[], None] = lambda: None) -> CopyReport:
    """Copy the selected snapshots the destination lacks. Call with the destination's
    backup lock and a reader registration on the source held; ``before_record`` raises if
    that lock was lost (BackupLock.ensure_held)."""
    to_copy, report = pending_copies(source, destination, selectors)
    copy_one = _copy_same_ids if report.same_chunk_ids else _copy_new_ids
    if not report.same_cuts:
        copy_one = CutAnew(destination)
    done_bytes = 0
    config = destination.config
    for header in to_copy:
        record = source.snapshots.load(header.id)  # one record's blocks held at a time
        with WriteSession(destination.packs, destination.index, destination.codec,
                          config.pack_target_bytes) as session:
            copied = copy_one(source, destination, session, record, report)
            session.flush()
        report.chunks_sent += session.counts.chunks
        report.bytes_sent += session.counts.raw_bytes
        report.stored_bytes += session.counts.stored_bytes
        before_record()
        destination.snapshots.save(copied)  # last: everything it references is durable
        report.copied.append(copied.header())
        done_bytes += record.size
        if progress:
            progress(done_bytes)
    for record in marks_to_carry(source, destination, report.skipped + report.copied):
        before_record()
        destination.protection.protect(record.id)
        report.protected.append(record)
    return report


def _copy_same_ids(source: Storage, destination: Storage, session: WriteSession,
                   record: SnapshotRecord, report: CopyReport) -> SnapshotRecord:
    """Send the chunks of each manifest block the destination lacks, then the block."""
    for block, end in zip(record.blocks, record.blocks.ends(record.size)):
        try:
            data = _read_block(source, destination, block)
            entries = placed_entries(data, block.offset, end)
        except CorruptData as error:
            raise damage_context(record, block.offset, error) from None
        first_offsets, references = _data_chunks(entries, block.offset)
        missing = session.lacks(list(first_offsets))
        report.chunks_skipped += references - len(missing)
        fetch = _verified_reader(source, record, first_offsets)
        # (digest, raw bytes) pairs, in order, several chunks read at once
        for batch in batches(ordered_map(source.pool, fetch, missing, window=FETCH_WINDOW), STORE_BATCH):
            session.store_missing(batch)
        session.store_missing([(block.digest, data)], manifest_blocks=True)
    return record


def _data_chunks(entries: list[ManifestEntry], offset: int) -> tuple[dict[bytes, int], int]:
    """Each data chunk's first byte offset in the image (for error messages), and how many
    data entries there are."""
    first_offsets: dict[bytes, int] = {}
    references = 0
    for span in spans(entries, offset):
        if span.digest is not None:
            first_offsets.setdefault(span.digest, span.offset)
            references += 1
    return first_offsets, references


def _verified_reader(source: Storage, record: SnapshotRecord,
                     first_offsets: dict[bytes, int]) -> Callable[[bytes], bytes]:
    """digest -> verified raw bytes; damage names the snapshot and byte offset."""
    def fetch(digest: bytes) -> bytes:
        try:
            return source.chunks.get(digest)
        except CorruptData as error:
            raise damage_context(record, first_offsets[digest], error) from None
    return fetch


def _read_block(source: Storage, destination: Storage, block: BlockRef) -> bytes:
    """A manifest block, verified: from the destination if it has it (not read from the
    source, as any chunk it has), else from the source."""
    if destination.index.are_indexed([block.digest])[0]:
        return destination.chunks.get(block.digest)
    return source.chunks.get(block.digest)


def _copy_new_ids(source: Storage, destination: Storage, session: WriteSession,
                  record: SnapshotRecord, report: CopyReport) -> SnapshotRecord:
    """Read every chunk, name it as the destination does, store what it lacks, and build
    the manifest anew."""
    chunk_id = destination.codec.chunk_id

    def store_block(encoded: bytes) -> bytes:
        digest = chunk_id(encoded)
        session.store_missing([(digest, encoded)], manifest_blocks=True)
        return digest

    manifest = ManifestBuilder(store_block)

    def renamed() -> Iterator[tuple[bytes, bytes]]:
        for span, raw in image_pieces(source.chunks, record, source.pool):
            if raw is None:
                manifest.add_zeros(span.length)
                continue
            digest = chunk_id(raw)
            manifest.add_data(digest, span.length)
            yield digest, raw

    for batch in batches(renamed(), STORE_BATCH):
        report.chunks_skipped += len(batch) - session.store_missing(batch)
    blocks = manifest.finish()
    _check_size(record, manifest.size)
    return dataclasses.replace(record, blocks=blocks)


class CutAnew:
    """Copy a snapshot by reading its image and cutting it with the destination's chunker,
    as a backup of the image into the destination would: the destination's latest snapshot
    of the series (copied before, or its own) gives the cutting hints, as last night does
    for a backup, so unchanged regions are hashed, not cut."""

    def __init__(self, destination: Storage):
        # Headers: the one a copy cuts after is loaded then.
        self._latest = {r.name: r for r in destination.snapshots.all().headers}

    def __call__(self, source: Storage, destination: Storage, session: WriteSession,
                 record: SnapshotRecord, report: CopyReport) -> SnapshotRecord:
        stats = BackupStats()
        recorder = ImageRecorder(session, destination.pool, stats)
        previous = self._latest.get(record.name)
        hints = cutting_hints(destination.chunks, destination.snapshots.load(previous.id)) \
            if previous else ()
        chunker = Chunker(destination.config.chunker, hints,
                          parallel_hasher(destination.pool, destination.codec.chunk_id),
                          destination.cipher.chunk_permutation)
        for span, raw in image_pieces(source.chunks, record, source.pool):
            recorder.add_chunks(chunker.feed_zeros(span.length) if raw is None
                                else chunker.feed(raw))
        recorder.add_chunks(chunker.finish())
        recorder.drain()
        blocks = recorder.manifest.finish()
        _check_size(record, recorder.manifest.size)
        report.chunks_skipped += stats.chunks - (session.counts.chunks
                                                 - stats.new_manifest_blocks)
        copied = dataclasses.replace(record, blocks=blocks, holes_as_zeros=True)
        if previous is None or previous.time <= copied.time:
            self._latest[record.name] = copied.header()
        return copied


def _check_size(record: SnapshotRecord, manifest_size: int) -> None:
    if manifest_size != record.size:
        raise CorruptData(f"snapshot {record.short_id} ({record.name}): its manifest covers "
                          f"{manifest_size} bytes, its record says {record.size}; run "
                          f"'diskvault check' on the source")
