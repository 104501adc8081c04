"""Compaction drops the index entries of a few packs without walking the index: it looks up
the digests their footers list (maintenance/sweep_choice.py), falls back to the pass over
the whole index when a footer cannot be read, and a kill in the middle loses nothing."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.maintenance.check import check
from diskvault.maintenance.compact import compact
from diskvault.maintenance.prune import delete_snapshots
from diskvault.maintenance.sweep_choice import (LISTED_SHARE, RECORDS_PER_FOOTER_READ,
                                                listed_digests, worth_listing)
from diskvault.store.format.packs import pack_name, read_footer
from diskvault.store.repository import Repository

from ..conftest import in_both_modes, run_cli
from .support import CursorSteps, assert_all_restore, back_up, small_pack_repository

KiB = 1024
BASE_BYTES = 4096 * KiB  # ~4,000 index entries at 1 KiB chunks: the "large" index

encryption = in_both_modes()


@pytest.fixture
def few_going(tmp_path, encryption) -> tuple[Path, dict[str, bytes], str]:
    """A repository whose index is large beside what one deleted snapshot frees: a big
    image backed up once, and a small one three times; compacted once (the counts exist).
    Returns its root, what each snapshot holds, and the small image's first snapshot. (Made
    anew each time: a copy elsewhere would be distrusted and its index rebuilt.)"""
    rng = random.Random(7)
    expected = {}
    with small_pack_repository(tmp_path / "repo", pack_target_bytes=256 * KiB,
                               encryption=encryption) as repository:
        base = rng.randbytes(BASE_BYTES)
        expected[back_up(repository, tmp_path, "base", base).id] = base
        small = bytearray(rng.randbytes(96 * KiB))
        for _ in range(3):
            start = rng.randrange(len(small) - 8 * KiB)
            small[start:start + 8 * KiB] = rng.randbytes(8 * KiB)
            expected[back_up(repository, tmp_path, "vm", bytes(small)).id] = bytes(small)
        compact(repository.storage, threshold=0.0)
        victim = repository.list_snapshots()[1].id  # the small image's first night
    return tmp_path / "repo", expected, victim


def test_listing_is_chosen_only_while_it_costs_less_than_the_pass():
    entries = 1_000_000
    assert worth_listing(100, 1, entries)
    share = int(entries * LISTED_SHARE)
    assert worth_listing(share - RECORDS_PER_FOOTER_READ, 1, entries)
    assert not worth_listing(share - RECORDS_PER_FOOTER_READ + 1, 1, entries)
    assert not worth_listing(0, share // RECORDS_PER_FOOTER_READ + 1, entries)


def test_a_compact_freeing_a_few_packs_does_not_walk_the_index(few_going):
    """Its cursor steps follow what it frees, not the index: on the pass over the whole
    index they were more than its entries (a step and a read per entry)."""
    root, expected, victim = few_going
    with Repository.open(root) as repository:
        entries = repository.storage.index.chunk_count()
        delete_snapshots(repository.storage, [victim])
        del expected[victim]
        with CursorSteps() as steps:
            result = compact(repository.storage, threshold=0.0)
        freed = entries - repository.storage.index.chunk_count()
        assert result.packs_deleted > 0 and 0 < freed < entries / 40
        assert steps.count < entries / 4, (steps.count, entries, freed)
        assert_all_restore(repository, expected)
        report = check(repository.storage, read_data=True)
        assert not report.damaged and report.unreferenced_chunks == 0


def test_the_footers_digests_are_listed_in_order_once_each(few_going):
    root, _, _ = few_going
    with Repository.open(root) as repository:
        storage = repository.storage
        packs = sorted(storage.packs.list(), key=storage.packs.size)[:3]
        footers = {e.digest for p in packs for e in read_footer(storage.packs, p)}
        with listed_digests(storage, packs) as listed:
            assert list(listed) == sorted(footers)
        everything = storage.packs.list()
        with listed_digests(storage, everything) as listed:
            assert listed is None  # most of the index: the pass costs less


@pytest.mark.parametrize("damage", ["footer damaged", "pack missing"])
def test_a_footer_that_cannot_be_read_sends_the_sweep_over_the_whole_index(few_going, damage):
    """Listing the other footers would leave that pack's entries pointing into a pack about
    to be deleted."""
    root, _, _ = few_going
    with Repository.open(root) as repository:
        storage = repository.storage
        packs = sorted(storage.packs.list(), key=storage.packs.size)[:3]
        path = root / pack_name(packs[1])
        if damage == "pack missing":
            path.unlink()
        else:
            raw = bytearray(path.read_bytes())
            raw[-60] ^= 0xFF  # in the footer, before the trailer
            path.write_bytes(raw)
        with listed_digests(storage, packs) as listed:
            assert listed is None


KILLED_IN_THE_LISTED_SWEEP = """
import os, signal, sys
from pathlib import Path
from diskvault.maintenance.compact import compact
from diskvault.store.index import sweeps
from diskvault.store.index.reference_counts import ReferenceCounts
from diskvault.store.repository import Repository

sweeps.WRITES_PER_TRANSACTION = 4  # several transactions, to be killed between
kill_at, transactions = int(sys.argv[2]), []
remove = ReferenceCounts.remove_unused_locations

def remove_then_die(self, pack_ids, before_each, listed=None):
    assert listed is not None, "this compaction was to take the listed sweep"
    def before_each_transaction():
        before_each()
        transactions.append(1)
        if len(transactions) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return remove(self, pack_ids, before_each_transaction, listed)

ReferenceCounts.remove_unused_locations = remove_then_die
with Repository.open(Path(sys.argv[1])) as repository:
    compact(repository.storage, threshold=0.0)
"""


@pytest.mark.parametrize("kill_at", [2, 3])
def test_compact_killed_in_the_listed_sweep_loses_nothing_and_a_rerun_finishes(few_going,
                                                                              kill_at):
    """SIGKILL between two transactions of the listed sweep (a few deletions each): every
    snapshot restores, check finds nothing wrong, and a rerun frees what the first meant
    to."""
    root, expected, victim = few_going
    with Repository.open(root) as repository:
        delete_snapshots(repository.storage, [victim])
        del expected[victim]
    child = subprocess.run([sys.executable, "-c", KILLED_IN_THE_LISTED_SWEEP, str(root),
                            str(kill_at)], capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    with Repository.open(root) as repository:
        assert_all_restore(repository, expected)
        assert not check(repository.storage).damaged
    rerun = run_cli("compact", "-r", str(root), "--threshold", "0", "--json", check=True)
    assert json.loads(rerun.stdout)["packs_deleted"] > 0
    with Repository.open(root) as repository:
        assert_all_restore(repository, expected)
        report = check(repository.storage, read_data=True)
        assert not report.damaged and report.unreferenced_chunks == 0
        assert not report.orphan_packs
