"""Damage tied back to what a user cares about: which snapshots (by name and time) can no
longer be restored in full, and from which byte offset."""

from __future__ import annotations

from ...errors import CorruptData
from ...store.format.block_list import BlockRef
from ...store.format.manifest import fill_problem
from ...store.format.snapshots import SnapshotRecord
from ...store.read.image_map import damage_context
from .report import LOST, UNINDEXED, SnapshotDamage
from .state import CheckState


def attribute(state: CheckState) -> None:
    for record in state.records:
        damage = SnapshotDamage(record)
        for ref, end in zip(record.blocks, record.blocks.ends(record.size)):
            if _misplaced(state, record, ref, end):
                damage.note(ref.offset, end - ref.offset, LOST)
                continue
            found = state.blocks.get(ref.digest)
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
            state.report.damaged_snapshots.append(damage)


def _misplaced(state: CheckState, record: SnapshotRecord, ref: BlockRef, end: int) -> bool:
    """A readable block that does not fill the range the record gives it: the record
    (or the block) is damaged, and every offset from there on would be wrong."""
    covered = state.misfits.get((ref.digest, end - ref.offset))
    problem = None if covered is None else fill_problem(covered, ref.offset, end)
    if problem:
        state.problem(f"snapshot record {record.id}.json",
                      str(damage_context(record, ref.offset, CorruptData(problem))))
    return problem is not None
