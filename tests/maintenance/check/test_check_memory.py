"""check holds no table of every pack nor of every manifest block: those are walked in key
order from sorted runs on disk; and a block a record places over the wrong range is still
named, now that no block's length is kept in memory."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest

from benchmarks.check_memory import packs_of_blocks, save_in_records
from diskvault.maintenance.check import check
from diskvault.maintenance.prune import delete_snapshots
from diskvault.store.format.block_list import BlockRef
from diskvault.store.format.packs import pack_name
from diskvault.store.index import sorted_runs

from ...store.index.child_memory import PEAK_RISE
from ..support import KiB, back_up, small_pack_repository

MiB = 1 << 20
PACKS = 30_000  # each holding one manifest block of its own (packs_of_blocks)

# A check in a child: it prints how far its anonymous memory rose while check ran.
CHECK = PEAK_RISE + """
import sys
from diskvault.maintenance.check import check
from diskvault.store.storage import Storage

with Storage.open(sys.argv[1], catch_up=False) as storage:
    report, rise = peak_rise(lambda: check(storage))
assert not report.damaged, report.problems
print(report.packs, report.manifest_blocks, rise)
"""


@pytest.mark.slow
def test_check_holds_no_table_of_the_packs_or_the_manifest_blocks(repo):
    """30,000 packs and as many manifest blocks: check's memory rose 36 MiB when it kept
    per pack its fingerprint, statistics and size, and per block its status and length
    in dicts (~1.2 KiB for each pack and its block); walked in order from disk, it rises
    by what the backend's listing and the records' block lists take (~0.5 KiB)."""
    save_in_records(repo.storage, packs_of_blocks(repo.storage, PACKS))
    repo.close()
    done = subprocess.run([sys.executable, "-c", CHECK, str(repo.root)], capture_output=True,
                          text=True, check=True)
    packs, manifest_blocks, rise = map(int, done.stdout.split())
    assert packs == manifest_blocks == PACKS
    assert rise < 24 * MiB, rise / MiB


def test_a_record_placing_a_block_over_the_wrong_range_is_named(repo, tmp_path):
    """A record whose second block starts a byte late: check names the record and the
    range, and the snapshot is damaged from the first block it misplaces."""
    record = back_up(repo, tmp_path, "vm", random.Random(3).randbytes(6 * 1024 * KiB))
    assert len(record.blocks) >= 2
    moved = [record.blocks[0], BlockRef(record.blocks[1].digest, record.blocks[1].offset + 1),
             *record.blocks[2:]]
    repo.storage.snapshots.save(dataclasses.replace(record, blocks=moved))
    report = check(repo.storage)
    second = moved[1].offset
    assert [p.where for p in report.problems] == [f"snapshot record {record.id}.json"] * 2
    assert f"places it at [0, {second})" in report.problems[0].message
    assert f"places it at [{second}, " in report.problems[1].message
    [damage] = report.damaged_snapshots
    assert damage.first_offset == 0 and damage.lost_chunks == 2


def findings(report) -> tuple:
    return (report.packs, report.stored_bytes, report.manifest_blocks,
            report.chunks_referenced, report.unused, report.problems, report.orphan_packs,
            [(d.record.id, d.lost_chunks, d.lost_bytes, d.unindexed_chunks, d.first_offset)
             for d in report.damaged_snapshots])


def test_check_finds_the_same_when_its_sorted_runs_and_sums_spill_to_disk_often(
        tmp_path, monkeypatch):
    """Damage, unused chunks and their packs found alike whether check's runs and sums
    per pack stay in memory or go to disk every few packs and records."""
    with small_pack_repository(tmp_path / "repo") as repo:
        rng = random.Random(11)
        first = back_up(repo, tmp_path, "vm", rng.randbytes(192 * KiB))
        kept = [back_up(repo, tmp_path, "vm", rng.randbytes(192 * KiB)),
                back_up(repo, tmp_path, "other", rng.randbytes(96 * KiB))]
        delete_snapshots(repo.storage, [first.id])
        assert len(repo.storage.packs.list()) > 10
        missing, truncated = (repo.storage.index.lookup(record.blocks[0].digest).pack_id
                              for record in kept)  # each holds a block of a kept snapshot
        assert missing != truncated
        root = repo.storage.backend.root
        (root / pack_name(missing)).unlink()
        with open(root / pack_name(truncated), "r+b") as pack:
            pack.truncate(100)
        whole = check(repo.storage)
        monkeypatch.setattr(sorted_runs, "RUN_RECORDS", 7)
        monkeypatch.setattr(sorted_runs, "MERGE_FAN_IN", 3)
        monkeypatch.setattr(sorted_runs, "HELD_KEYS", 2)
        spilled = check(repo.storage)
    assert whole.problems and whole.damaged_snapshots and whole.unused.chunks
    assert findings(spilled) == findings(whole)
