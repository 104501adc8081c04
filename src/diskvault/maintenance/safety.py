"""What exists beats what the index says: the proofs maintenance makes before it forgets a
snapshot or deletes a pack.

The index is a cache. A pack it points at may be gone (a damaged disk, an older copy of
the repository put back, a cache that belongs to a clone), and then the copy it calls
redundant may be the last one. So:

- ``refuse_if_damaged``: delete, prune and compact start only in a repository that check
  would not call damaged in the ways that matter to them -- every pack the index lists
  exists (one listing), every manifest block of every snapshot is indexed in a pack that
  exists, and every chunk the reference counts say is in use is indexed in a pack that
  exists. No pack is read; a damaged repository is for ``check --repair`` first.
- right before packs are deleted, compaction drops their index entries (one pass over the
  index, or a lookup of each digest their footers list: ReferenceCounts.
  remove_unused_locations, maintenance/sweep_choice.py) and keeps every pack that is still the
  indexed copy of a chunk in use: a chunk in use is indexed in a pack that exists (shown
  above), so a pack that goes holds no chunk in use that has no other copy.
"""

from __future__ import annotations


from ..errors import CorruptData
from ..store.format.snapshot_store import SnapshotRecords
from ..store.index.sorted_runs import DigestSet
from ..store.storage import Storage
from .liveness import Liveness

SHOWN = 3  # names given per finding; the count says how many there are
REPAIR_FIRST = "run 'diskvault check --repair' first"


def _short(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def damage_found(storage: Storage, records: SnapshotRecords, blocks: DigestSet,
                 liveness: Liveness | None) -> list[str]:
    """What check would call damage and maintenance must not build on, found from one
    listing of the packs and the index alone (see the module docstring). ``blocks``: the
    manifest blocks the records list (record_blocks.py)."""
    existing = {bytes.fromhex(pack_id) for pack_id in storage.packs.list()}  # ~90 B a pack
    doomed = liveness.doomed() if liveness else set()
    findings = []
    # A doomed pack may be gone: a compaction was stopped after deleting it.
    missing = sorted(p for p in storage.index.known_packs()
                     if bytes.fromhex(p) not in existing and p not in doomed)
    if missing:
        findings.append(f"the index lists {len(missing)} packs that do not exist "
                        f"({_short(missing)})")
    lost_blocks = _lost_blocks(storage, blocks, existing)
    if lost_blocks:
        names = sorted({r.short_id for r in records
                        if any(ref.digest in lost_blocks for ref in r.blocks)})
        findings.append(f"{len(lost_blocks)} manifest blocks of snapshots {_short(names)} "
                        f"are in no pack that exists")
    if liveness is not None:
        lost = sum(1 for pack_key in storage.index.packs_holding(liveness.used_digests())
                   if pack_key not in existing)
        if lost:
            findings.append(f"{lost} chunks that snapshots use are in no pack that exists "
                            f"as far as the index knows")
    return findings


def _lost_blocks(storage: Storage, blocks: DigestSet, existing: set[bytes]) -> set[bytes]:
    """The manifest blocks that are not indexed in a pack that exists: the blocks sorted
    on disk (millions at 100 TB) and looked up in digest order."""
    return {digest for digest, location in storage.index.locate_many(blocks)
            if location is None or bytes.fromhex(location.pack_id) not in existing}


def refuse_if_damaged(storage: Storage, command: str, records: SnapshotRecords,
                      blocks: DigestSet, liveness: Liveness | None) -> None:
    """CorruptData (exit 1) naming the first damage found, before ``command`` changes
    anything."""
    findings = damage_found(storage, records, blocks, liveness)
    if findings:
        more = f" (and {len(findings) - 1} more findings)" if len(findings) > 1 else ""
        raise CorruptData(f"{command} refused: {findings[0]}{more}; {REPAIR_FIRST}, then "
                          f"run {command} again")

