"""check's structural pass: every pack's footer read and compared with the index entries
that point into it. Finds packs missing, truncated or with a damaged footer, orphan packs
the index lacks, and index entries that do not match their footer."""

from __future__ import annotations

from ...errors import CorruptData
from ...store.format.packs import PackEntry, read_footer
from ...store.index.records import ChunkLocation, fingerprint
from .state import CheckState, short


def scan_packs(state: CheckState) -> None:
    try:
        state.fingerprints = state.index.pack_fingerprints()
        state.stats = dict(state.index.pack_stats())
    except CorruptData as error:
        state.problem("index", str(error))
        state.index_readable = False
        state.fingerprints, state.stats = {}, {}
    mismatched = []
    for pack_id in state.packs.list():
        state.sizes[pack_id] = state.packs.size(pack_id)
        try:
            footer = read_footer(state.packs, pack_id)
        except CorruptData as error:
            _footer_damaged(state, pack_id, str(error), pack_id in state.stats)
            state.damaged_footers.add(pack_id)
            continue
        if pack_id not in state.stats:
            state.report.orphan_packs.append(pack_id)
            for entry, (_, location) in zip(footer, state.locations(
                    e.digest for e in footer)):
                if location is None:
                    state.unindexed.setdefault(entry.digest, (pack_id, entry))
        if (pack_id in state.stats or pack_id in state.fingerprints) and not _agrees(
                state, pack_id, footer):
            mismatched.append(pack_id)
    state.report.packs = len(state.sizes)
    state.report.stored_bytes = sum(state.sizes.values())
    _compare_one_by_one(state, mismatched)


def _agrees(state: CheckState, pack_id: str, footer: list[PackEntry]) -> bool:
    """Whether the index entries into this pack are exactly its footer's records: one
    fingerprint compared, or a lookup per record when the footer holds records the
    index does not point at (copies)."""
    count, total = state.fingerprints.get(pack_id, (0, 0))
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


def _compare_one_by_one(state: CheckState, mismatched: list[str]) -> None:
    """The packs whose index entries and footer disagree, the packs that are missing or
    truncated: their entries are fetched by one pass over the index (damage is rare)."""
    indexed = set(state.stats) | set(state.fingerprints)
    missing = [p for p in indexed if p not in state.sizes]
    damaged = [p for p in state.damaged_footers if p in state.fingerprints]
    named = state.index.locations_in(mismatched + missing + damaged) if (
        mismatched or missing or damaged) else {}
    for pack_id in sorted(indexed):
        if pack_id not in state.sizes:
            _pack_missing(state, pack_id, named[pack_id])
            continue
        if pack_id in state.stats and state.stats[pack_id].file_size != state.sizes[pack_id]:
            state.problem(f"pack {pack_id}", f"is {state.sizes[pack_id]} bytes but was "
                          f"{state.stats[pack_id].file_size} when indexed (truncated or "
                          f"overwritten)")
        if pack_id in named:
            _compare_with_footer(state, pack_id, named[pack_id])


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


def _compare_with_footer(state: CheckState, pack_id: str,
                         entries: list[tuple[bytes, ChunkLocation]]) -> None:
    size = state.sizes[pack_id]
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
