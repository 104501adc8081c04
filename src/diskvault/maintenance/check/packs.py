"""check's structural pass: every pack's footer read and compared with the index entries
that point into it. Finds packs missing, truncated or with a damaged footer, orphan packs
the index lacks, and index entries that do not match their footer."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import CorruptData
from ...store.format.packs import PackEntry, read_footer
from ...store.index.records import ChunkLocation, PackStats, fingerprint, pack_fingerprints
from ...store.index.sorted_runs import KeyedSums, joined
from .state import INDEXED_PACK, CheckState, short


@dataclass(frozen=True)
class _Suspect:
    """A pack whose index entries must be looked at one by one (rare: damage)."""
    pack_id: str
    size: int | None          # None: missing
    indexed_size: int | None  # its size when indexed; None: the index has no row for it
    named: bool               # its index entries are compared with its footer


def scan_packs(state: CheckState) -> None:
    """One walk, in pack key order, over the packs listed, the index's statistics of each
    and the fingerprints of its entries (all three sorted, two of them on disk): per pack a
    few bytes at a time, whatever the count."""
    fingerprints = _read_index(state)
    for pack_id in state.packs.list():  # the listing is let go once on disk
        state.listed_packs.add(bytes.fromhex(pack_id))
    suspects = []
    for pack_id, (is_listed, stats, counted) in joined(
            ((pack_key.hex(), True) for pack_key in state.listed_packs), state.pack_stats(),
            pack_fingerprints(fingerprints)):
        indexed_size = stats.file_size if stats is not None else None
        if not is_listed:
            suspects.append(_Suspect(pack_id, None, indexed_size, True))
            continue
        size = state.packs.size(pack_id)
        state.report.packs += 1
        state.report.stored_bytes += size
        named = _compare_footer(state, pack_id, stats, counted)
        if named or (indexed_size is not None and indexed_size != size):
            suspects.append(_Suspect(pack_id, size, indexed_size, named))
    _compare_one_by_one(state, suspects)


def _read_index(state: CheckState) -> KeyedSums | tuple:
    """The index's pack statistics (kept in ``state``) and its entries' fingerprints per
    pack, read now (to disk where they are many): an index that cannot be read is
    unreadable from the start."""
    indexed = state.sorted_runs(INDEXED_PACK.size)
    fingerprints = state.sums_per_pack(2)
    try:
        state.index.add_fingerprints(fingerprints)
        for pack_id, stats in state.index.pack_stats():
            indexed.add(INDEXED_PACK.pack(bytes.fromhex(pack_id), stats.file_size,
                                          stats.stored_bytes, stats.raw_bytes, stats.records))
    except CorruptData as error:
        state.problem("index", str(error))
        state.index_readable = False
        return ()
    state.indexed_packs = indexed
    return fingerprints


def _compare_footer(state: CheckState, pack_id: str, stats: PackStats | None,
                    counted: tuple[int, int] | None) -> bool:
    """Read a listed pack's footer and compare it with the index: whether its index entries
    must be named one by one (they disagree, or the footer is damaged)."""
    try:
        footer = read_footer(state.packs, pack_id)
    except CorruptData as error:
        _footer_damaged(state, pack_id, str(error), stats is not None)
        state.damaged_footers.add(pack_id)
        return counted is not None
    if stats is None:
        state.report.orphan_packs.append(pack_id)
        for entry, (_, location) in zip(footer, state.locations(e.digest for e in footer)):
            if location is None:
                state.unindexed.setdefault(entry.digest, (pack_id, entry))
    return (stats is not None or counted is not None) and not _agrees(
        state, pack_id, footer, counted or (0, 0))


def _agrees(state: CheckState, pack_id: str, footer: list[PackEntry],
            counted: tuple[int, int]) -> bool:
    """Whether the index entries into this pack are exactly its footer's records: one
    fingerprint compared, or a lookup per record when the footer holds records the
    index does not point at (copies)."""
    count, total = counted
    if count == len(footer):
        return fingerprint(pack_id, footer) == total
    pointed_at = 0
    for entry, (_, location) in zip(footer, state.locations(e.digest for e in footer)):
        if location is not None and location.pack_id == pack_id \
                and location.entry(entry.digest) == entry:
            pointed_at += 1
        else:  # a copy beside the indexed one: repair indexes it if that one is lost
            state.unindexed.setdefault(entry.digest, (pack_id, entry))
    return pointed_at == count


def _compare_one_by_one(state: CheckState, suspects: list[_Suspect]) -> None:
    """The packs whose index entries and footer disagree, the packs that are missing or
    truncated: their entries are fetched by one pass over the index (damage is rare)."""
    wanted = [suspect.pack_id for suspect in suspects if suspect.named]
    named = state.index.locations_in(wanted) if wanted else {}
    for suspect in suspects:
        pack_id, size, indexed_size = suspect.pack_id, suspect.size, suspect.indexed_size
        if size is None:
            _pack_missing(state, pack_id, named[pack_id])
            continue
        if indexed_size is not None and indexed_size != size:
            state.problem(f"pack {pack_id}", f"is {size} bytes but was {indexed_size} when "
                          f"indexed (truncated or overwritten)")
        if suspect.named:
            _compare_with_footer(state, pack_id, size, named[pack_id])


def _footer_damaged(state: CheckState, pack_id: str, reason: str, indexed: bool) -> None:
    if indexed:
        hint = ("its records are checked through the index" if state.report.read_data
                else "--read-data checks its records through the index")
        state.problem(f"pack {pack_id}", f"{reason}; the index still locates its chunks "
                      f"({hint}); repair rescues the intact ones")
    else:
        state.problem(f"pack {pack_id}", f"{reason}; it is not indexed, so its chunks "
                      f"cannot be located")


def _pack_missing(state: CheckState, pack_id: str,
                  entries: list[tuple[bytes, ChunkLocation]]) -> None:
    if not entries:  # a compact was stopped between the unlink and its bookkeeping
        state.report.half_deleted_packs.append(pack_id)
        return
    for digest, _ in entries:
        state.lost[digest] = f"its pack {pack_id} is missing"
    state.problem(f"pack {pack_id}", f"is missing: the {len(entries)} chunks indexed in it "
                  f"are lost ({short([d for d, _ in entries])})")


def _compare_with_footer(state: CheckState, pack_id: str, size: int,
                         entries: list[tuple[bytes, ChunkLocation]]) -> None:
    if pack_id in state.damaged_footers:
        cut = [d for d, loc in entries if loc.offset + loc.stored_size > size]
        for digest in cut:
            state.lost[digest] = f"cut off: pack {pack_id} is truncated"
        if cut:
            state.problem(f"pack {pack_id}", f"ends before {len(cut)} indexed chunks, "
                          f"which are lost ({short(cut)})")
        return
    listed = {e.offset: e for e in read_footer(state.packs, pack_id)}
    wrong = []
    for digest, loc in entries:
        if listed.get(loc.offset) != loc.entry(digest):
            wrong.append(digest)
            state.lost[digest] = f"its index entry does not match pack {pack_id}'s footer"
    if wrong:
        state.problem(f"pack {pack_id}", f"{len(wrong)} index entries do not match its "
                      f"footer ({short(wrong)}); repair rebuilds them")
