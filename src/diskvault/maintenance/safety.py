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
- ``last_copies``: right before packs are deleted, each of their records whose chunk is
  in use must have its indexed copy in another pack that is not itself going and that
  really exists (stat). A record that fails is the last copy: the caller keeps its pack.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from ..errors import CorruptData
from ..store.format.packs import PackEntry
from ..store.format.snapshots import SnapshotRecord
from ..store.storage import Storage
from .compact_plan import pack_exists
from .liveness import Liveness

SHOWN = 3  # names given per finding; the count says how many there are
REPAIR_FIRST = "run 'diskvault check --repair' first"


def _short(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def damage_found(storage: Storage, records: Iterable[SnapshotRecord],
                 liveness: Liveness | None) -> list[str]:
    """What check would call damage and maintenance must not build on, found from one
    listing of the packs and the index alone (see the module docstring)."""
    existing = set(storage.packs.list())
    doomed = liveness.doomed() if liveness else set()
    findings = []
    # A doomed pack may be gone: a compaction was stopped after deleting it.
    missing = sorted(storage.index.known_packs() - existing - doomed)
    if missing:
        findings.append(f"the index lists {len(missing)} packs that do not exist "
                        f"({_short(missing)})")
    owners = {ref.digest: record for record in records for ref in record.blocks}
    lost_blocks = [owners[digest] for digest, location in storage.index.locate_many(owners)
                   if location is None or location.pack_id not in existing]
    if lost_blocks:
        names = sorted({r.short_id for r in lost_blocks})
        findings.append(f"{len(lost_blocks)} manifest blocks of snapshots {_short(names)} "
                        f"are in no pack that exists")
    if liveness is not None:
        existing_keys = {bytes.fromhex(pack_id) for pack_id in existing}
        lost = sum(1 for pack_key in storage.index.packs_holding(liveness.used_digests())
                   if pack_key not in existing_keys)
        if lost:
            findings.append(f"{lost} chunks that snapshots use are in no pack that exists "
                            f"as far as the index knows")
    return findings


def refuse_if_damaged(storage: Storage, command: str, records: Iterable[SnapshotRecord],
                      liveness: Liveness | None) -> None:
    """CorruptData (exit 1) naming the first damage found, before ``command`` changes
    anything."""
    findings = damage_found(storage, records, liveness)
    if findings:
        more = f" (and {len(findings) - 1} more findings)" if len(findings) > 1 else ""
        raise CorruptData(f"{command} refused: {findings[0]}{more}; {REPAIR_FIRST}, then "
                          f"run {command} again")


def last_copies(storage: Storage, liveness: Liveness, footers: Mapping[str, list[PackEntry]],
                doomed: Collection[str]) -> dict[str, list[PackEntry]]:
    """The records of the packs in ``footers`` (about to be deleted) whose chunk a snapshot
    uses and whose indexed copy is not in a pack that stays and really exists. ``doomed``:
    the doomed packs (a set), read once by a compaction that deletes them group by group
    (read per group, they made its cost grow with the square of the packs)."""
    exists: dict[str, bool] = {}

    def stays(pack_id: str) -> bool:
        if pack_id not in exists:
            exists[pack_id] = (pack_id not in footers and pack_id not in doomed
                               and pack_exists(storage, pack_id))
        return exists[pack_id]

    records = [(pack_id, entry) for pack_id, entries in footers.items() for entry in entries]
    in_use = liveness.used([entry.digest for _, entry in records])
    used = [record for record, is_used in zip(records, in_use) if is_used]
    found: dict[str, list[PackEntry]] = {}
    locations = storage.index.locate_many(entry.digest for _, entry in used)
    for (pack_id, entry), (_, location) in zip(used, locations):
        if location is None or not stays(location.pack_id):
            found.setdefault(pack_id, []).append(entry)
    return found
