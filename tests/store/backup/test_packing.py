"""Batched commits: durable packs reach the index several at a time, each exactly once,
in the order they became durable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from diskvault.store.backup.packing import BatchedCommit
from diskvault.store.format.packs import PackEntry


def records(count: int) -> list[PackEntry]:
    return [PackEntry(bytes([n]) * 32, 8, 10, 10, 0) for n in range(count)]


def test_packs_are_committed_once_they_hold_enough_records_and_at_flush():
    batches: list[list[str]] = []
    commit = BatchedCommit(lambda packs: batches.append([p for p, _, _ in packs]),
                           max_entries=5)
    for pack in "abcde":
        commit(pack, records(2), 100)
    assert batches == [["a", "b", "c"]]  # 6 records: enough
    commit.flush()
    assert batches == [["a", "b", "c"], ["d", "e"]]
    commit.flush()  # nothing left: no empty transaction
    assert len(batches) == 2


def test_packs_sealed_on_several_threads_are_each_committed_once():
    committed: list[str] = []
    commit = BatchedCommit(lambda packs: committed.extend(p for p, _, _ in packs),
                           max_entries=7)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: commit(f"pack-{n}", records(3), 100), range(200)))
    commit.flush()
    assert sorted(committed) == sorted(f"pack-{n}" for n in range(200))
