"""check's pass over the manifests: every block read once, the chunks in use noted (on
disk), then one ordered pass over them and the index together finds the chunks in use the
index lacks and the index entries no snapshot uses."""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import groupby

from ...errors import CorruptData
from ...store.format.manifest import block_length, decode_block
from ...store.index.sorted_runs import SortedRuns, first_of_each
from ...store.pipeline import ordered_map, worker_count
from ..usage import USAGE_SUMS, PackUsage, merged
from ..verify import read_verified
from .report import LOST, UNINDEXED
from .state import BlockDamage, CheckState, short

# A manifest block a record names, and the bytes the record places it over: sorted on
# disk, so that the distinct blocks come in digest order with no set of them in memory.
BLOCK_PLACE = struct.Struct("<32sq")


def walk_manifests(state: CheckState) -> None:
    """Read every manifest block once: note the chunks in use (on disk), the blocks
    that cannot be read, and the entries whose chunk is already known to be lost. Then
    one ordered pass over the index and the chunks in use finds those the index lacks;
    only if there are any are the blocks read again, to say where they are."""
    places = _block_places(state)
    state.report.manifest_blocks = 0
    for digest, status in _block_statuses(state, _distinct(places)):
        state.report.manifest_blocks += 1
        state.referenced.add(digest)
        if status == LOST:
            state.blocks[digest] = BlockDamage(whole=True)
        elif status == UNINDEXED:
            state.blocks[digest] = BlockDamage(unindexed=True)
    unreadable = {digest for digest, damage in state.blocks.items() if damage.whole}
    bad = {digest: UNINDEXED if digest in state.unindexed else LOST
           for digest in state.lost}
    for (digest, lengths), entries in _blocks_read(state, places, unreadable):
        _note_misfits(state, digest, block_length(entries), lengths)
        for entry in entries:
            if entry.digest is not None:
                state.referenced.add(entry.digest)
        _note_entries(state, digest, entries, bad)
    missing = _cross_index(state, _member_test(_distinct(places)))
    if missing:
        for (digest, _), entries in _blocks_read(state, places, unreadable, report=False):
            _note_entries(state, digest, entries, missing)
    state.report.chunks_referenced = len(state.referenced)
    if state.nowhere:
        state.problem("index", f"{len(state.nowhere)} chunks that snapshots use are neither "
                      f"in the index nor intact in a pack it lacks "
                      f"({short(state.nowhere)})")
    if state.recoverable:
        packs = {state.unindexed[d][0] for d in state.recoverable}
        state.problem("index", f"{len(state.recoverable)} chunks that snapshots use are "
                      f"not indexed where they are intact (in {len(packs)} packs); "
                      f"'diskvault check --repair' indexes them again")


def _block_places(state: CheckState) -> SortedRuns:
    """Every (block, bytes placed over) of every record, sorted on disk."""
    places = state.sorted_runs(BLOCK_PLACE.size)
    for record in state.records:
        for ref, end in zip(record.blocks, record.blocks.ends(record.size)):
            places.add(BLOCK_PLACE.pack(ref.digest, end - ref.offset))
    return places


def _placed(places: SortedRuns) -> Iterator[tuple[bytes, set[int]]]:
    """Each distinct block, in order, with the lengths the records place it over."""
    for digest, rows in groupby(places, key=lambda row: row[:32]):
        yield digest, {BLOCK_PLACE.unpack(row)[1] for row in rows}


def _distinct(places: SortedRuns) -> Iterator[bytes]:
    return (row[:32] for row in first_of_each(places, 32))


def _note_misfits(state: CheckState, digest: bytes, covered: int, lengths: set[int]) -> None:
    """Note where a record places a readable block over other than the bytes it covers."""
    for length in lengths:
        if length != covered:
            state.misfits[digest, length] = covered


def _member_test(digests: Iterator[bytes]) -> Callable[[bytes], bool]:
    """Whether a digest is one of ``digests`` (ordered), asked in increasing order."""
    current = next(digests, None)

    def holds(digest: bytes) -> bool:
        nonlocal current
        while current is not None and current < digest:
            current = next(digests, None)
        return current == digest
    return holds


def _block_statuses(state: CheckState, digests: Iterable[bytes]
                    ) -> Iterator[tuple[bytes, str | None]]:
    """LOST, UNINDEXED or None (sound) for each manifest block, looked up one by one."""
    for digest, location in state.locations(digests):
        if digest in state.lost:
            yield digest, _lost_kind(state, digest)
        elif location is not None:
            yield digest, None
        else:
            yield digest, _not_indexed(state, digest)


def _lost_kind(state: CheckState, digest: bytes) -> str:
    """A chunk in use whose indexed copy is lost: UNINDEXED if another copy is intact
    in a pack (repair indexes it), else LOST."""
    if digest in state.unindexed:
        state.recoverable.add(digest)
        return UNINDEXED
    return LOST


def _not_indexed(state: CheckState, digest: bytes) -> str:
    """A chunk in use that the index lacks: intact in a pack it lacks, or lost."""
    if digest in state.unindexed:
        state.recoverable.add(digest)
        return UNINDEXED
    state.lost[digest] = "it is in no pack and not in the index"
    state.nowhere.append(digest)
    return LOST


def _load_block(state: CheckState, digest: bytes) -> bytes | str:
    """The block's bytes, or why it cannot be read."""
    try:
        if digest in state.unindexed and (digest in state.lost
                                          or state.location(digest) is None):
            pack_id, entry = state.unindexed[digest]
            stored = read_verified(state.packs, state.storage.codec, pack_id, entry)
            return state.storage.codec.decompress(stored, entry, digest)
        return state.storage.chunks.get(digest)
    except CorruptData as error:
        return str(error)


def _blocks_read(state: CheckState, places: SortedRuns, unreadable: Collection[bytes],
                 report: bool = True) -> Iterator[tuple[tuple[bytes, set[int]], list]]:
    """The decoded entries of every block not ``unreadable``, in digest order, each with
    the lengths the records place it over; a block that cannot be read or decoded is
    damage (noted when ``report``) and skipped."""
    readable = (placed for placed in _placed(places) if placed[0] not in unreadable)
    for placed, loaded in ordered_map(state.storage.pool,
                                      lambda placed: _load_block(state, placed[0]),
                                      readable, window=4 * worker_count()):
        digest = placed[0]
        try:
            if isinstance(loaded, str):
                raise CorruptData(loaded)
            entries = decode_block(loaded)
        except CorruptData as error:
            if report:
                state.problem(f"manifest block {digest.hex()[:16]}", str(error))
                state.lost[digest] = str(error)
                state.blocks[digest] = BlockDamage(whole=True)
            continue
        yield placed, entries


def _note_entries(state: CheckState, block: bytes, entries: list,
                  bad: dict[bytes, str]) -> None:
    """Note the entries of ``block`` whose chunk is in ``bad`` (digest -> kind)."""
    if not bad:
        return
    offset = 0
    for entry in entries:
        kind = bad.get(entry.digest) if entry.digest is not None else None
        if kind:
            state.blocks.setdefault(block, BlockDamage()).entries.append(
                (offset, entry.length, kind))
            if kind == UNINDEXED:
                state.recoverable.add(entry.digest)
        offset += entry.length


def _cross_index(state: CheckState, is_block: Callable[[bytes], bool]) -> dict[bytes, str]:
    """One ordered pass over the chunks in use and the index together: the chunks in
    use the index lacks (returned with their kind), and the index entries no snapshot
    uses (counted, with those a compact at its default threshold frees)."""
    missing: dict[bytes, str] = {}
    usage = PackUsage(state.sums_per_pack(USAGE_SUMS))
    indexed = state.index.iter_chunks() if state.index_readable else iter(())
    for digest, in_use, location in merged(iter(state.referenced), indexed):
        if location is not None:
            usage.add(digest, location, in_use)
        elif not is_block(digest) and digest not in state.lost:
            missing[digest] = _not_indexed(state, digest)
    state.report.unused = usage.summed(state.pack_stats())
    return missing
