"""Commands that read every snapshot record hold one record's block list at a time: list,
prune --dry-run, compact and check over 100 records of 10,000 manifest blocks each take a
few MiB, not the ~150 MiB that every record's list held (153 B a block as BlockRef)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.record_commands import COMMANDS_SOURCE
from diskvault.store.format.snapshots import SnapshotRecord

from ..store.index.child_memory import PEAK_RISE

MiB = 1 << 20
RECORDS = 100
BLOCKS = 10_000

# One command in a child: it prints how far its anonymous memory rose while it ran.
COMMAND = PEAK_RISE + COMMANDS_SOURCE + """
import sys

with Repository.open(sys.argv[1]) as repository:
    result, rise = peak_rise(lambda: COMMANDS[sys.argv[2]](repository))
if sys.argv[2] == "check":
    assert not result.problems and result.snapshots == %d + 1, result  # and the backup
print(rise)
""" % RECORDS


def many_long_records(repo, make_image) -> None:
    """RECORDS snapshots, each listing BLOCKS manifest blocks: one real backup's single
    block (stored, so check and compact find it), repeated at successive offsets, so each
    record describes a consistent image of BLOCKS times that block's bytes."""
    first = repo.backup(make_image(64 << 10), name="vm")
    [block] = first.blocks
    blocks = [dataclasses.replace(block, offset=n * first.size) for n in range(BLOCKS)]
    for night in range(RECORDS):
        repo.storage.snapshots.save(dataclasses.replace(
            first, id=SnapshotRecord.new_id(), time=first.time + timedelta(days=night + 1),
            size=BLOCKS * first.size, blocks=blocks))


def rise_in_child(root: Path, command: str) -> int:
    done = subprocess.run([sys.executable, "-c", COMMAND, str(root), command],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout)


@pytest.mark.slow
def test_commands_over_every_record_hold_one_record_at_a_time(repo, make_image):
    many_long_records(repo, make_image)
    root = repo.storage.backend.root
    repo.close()
    rises = {command: rise_in_child(root, command)
             for command in ("list", "prune --dry-run", "compact", "check")}
    # Every record's list was 100 x 10,000 x 153 B = 146 MiB, more while decoding.
    assert all(rise < 24 * MiB for rise in rises.values()), \
        {command: round(rise / MiB, 1) for command, rise in rises.items()}
