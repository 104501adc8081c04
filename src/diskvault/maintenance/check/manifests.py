"""check's pass over the manifests: every block read once, the chunks in use noted (on
disk), then one ordered pass over them and the index together finds the chunks in use the
index lacks and the index entries no snapshot uses."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from ...errors import CorruptData
from ...store.format.manifest import block_length, decode_block
from ...store.pipeline import ordered_map, worker_count
from ..usage import PackUsage, merged
from ..verify import read_verified
from .report import LOST, UNINDEXED
from .state import BlockDamage, CheckState, short


def walk_manifests(state: CheckState) -> None:
    """Read every manifest block once: note the chunks in use (on disk), the blocks
    that cannot be read, and the entries whose chunk is already known to be lost. Then
    one ordered pass over the index and the chunks in use finds those the index lacks;
    only if there are any are the blocks read again, to say where they are."""
    unique = sorted({ref.digest for record in state.records for ref in record.blocks})
    state.report.manifest_blocks = len(unique)
    status = dict(zip(unique, _block_statuses(state, unique)))
    state.readable = [d for d in unique if status[d] != LOST]
    for digest in unique:
        state.referenced.add(digest)
        if status[digest] == LOST:
            state.blocks[digest] = BlockDamage(whole=True)
        elif status[digest] == UNINDEXED:
            state.blocks[digest] = BlockDamage(unindexed=True)
    bad = {digest: UNINDEXED if digest in state.unindexed else LOST
           for digest in state.lost}
    for digest, entries in _blocks_read(state):
        state.block_lengths[digest] = block_length(entries)
        for entry in entries:
            if entry.digest is not None:
                state.referenced.add(entry.digest)
        _note_entries(state, digest, entries, bad)
    missing = _cross_index(state, status)
    if missing:
        for digest, entries in _blocks_read(state, report=False):
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


def _block_statuses(state: CheckState, digests: list[bytes]) -> list[str | None]:
    """LOST, UNINDEXED or None (sound) for each manifest block, looked up one by one
    (there are few of them)."""
    found = []
    for digest, location in state.locations(digests):
        if digest in state.lost:
            found.append(_lost_kind(state, digest))
        elif location is not None:
            found.append(None)
        else:
            found.append(_not_indexed(state, digest))
    return found


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


def _blocks_read(state: CheckState, report: bool = True) -> Iterator[tuple[bytes, list]]:
    """The decoded entries of every readable block; a block that cannot be read or
    decoded is damage (noted when ``report``) and skipped."""
    for digest, loaded in ordered_map(state.storage.pool, partial(_load_block, state),
                                      state.readable, window=4 * worker_count()):
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
        yield digest, entries


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


def _cross_index(state: CheckState, block_status: dict[bytes, str | None]) -> dict[bytes, str]:
    """One ordered pass over the chunks in use and the index together: the chunks in
    use the index lacks (returned with their kind), and the index entries no snapshot
    uses (counted, with those a compact at its default threshold frees)."""
    missing: dict[bytes, str] = {}
    usage = PackUsage()
    indexed = state.index.iter_chunks() if state.index_readable else iter(())
    for digest, in_use, location in merged(iter(state.referenced), indexed):
        if location is not None:
            usage.add(digest, location, in_use)
        elif digest not in block_status and digest not in state.lost:
            missing[digest] = _not_indexed(state, digest)
    state.report.unused = usage.summed(state.stats)
    return missing
