"""check --read-data: every record of every pack read, decompressed and hashed; a damaged
record is damage only where the index points at it (a copy nothing uses is counted)."""

from __future__ import annotations

from ...store.format.packs import PackEntry, read_footer
from ..verify import verify_pack
from .state import SHOWN_DIGESTS, CheckState


def read_all_records(state: CheckState) -> None:
    for pack_key in state.listed_packs:
        pack_id = pack_key.hex()
        if pack_id in state.damaged_footers:
            named = state.index.locations_in([pack_id]) if state.index_readable else {}
            entries = [loc.entry(d) for d, loc in named.get(pack_id, [])]
        else:
            entries = read_footer(state.packs, pack_id)
        damaged = []
        for entry, _, problem in verify_pack(state.packs, state.storage.codec, pack_id,
                                             entries, state.storage.pool):
            state.report.records_read += 1
            state.report.bytes_read += entry.stored_size
            if state.progress:
                state.progress(state.report.bytes_read, state.report.stored_bytes)
            if problem and _record_damaged(state, pack_id, entry, problem):
                damaged.append((entry, problem))
        if damaged:
            detail = "; ".join(f"chunk {e.digest.hex()[:16]} at offset {e.offset} {why}"
                               for e, why in damaged[:SHOWN_DIGESTS])
            more = len(damaged) - SHOWN_DIGESTS
            state.problem(f"pack {pack_id}", f"{len(damaged)} damaged records: {detail}"
                          + (f"; and {more} more" if more > 0 else ""))


def _record_damaged(state: CheckState, pack_id: str, entry: PackEntry, problem: str) -> bool:
    """Note a damaged record; True if the index uses it (damage), False if it is a
    copy nothing points at (harmless: repair left it out, or another copy is used)."""
    location = state.location(entry.digest)
    if location and (location.pack_id, location.offset) == (pack_id, entry.offset):
        state.lost[entry.digest] = f"its record in pack {pack_id} {problem}"
        return True
    if state.unindexed.get(entry.digest) == (pack_id, entry):
        del state.unindexed[entry.digest]
    state.report.damaged_unused_records += 1
    return False
