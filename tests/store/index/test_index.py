"""The LMDB index on its own: entries of durable packs are added, looked up, moved by
compaction, removed, and rebuilt."""

from __future__ import annotations

import blake3
import pytest

from diskvault.store.format.packs import PackEntry
from diskvault.store.index.bulk_load import load_packs, rebuild
from diskvault.store.index.chunk_index import (WRITES_PER_TRANSACTION, ChunkIndex,
                                               ChunkLocation)
from diskvault.store.index.reference_counts import ReferenceCounts

PACK_A, PACK_B, PACK_C = "aa" * 16, "bb" * 16, "cc" * 16


def digest(n: int) -> bytes:
    return blake3.blake3(bytes([n])).digest()


def entries(count: int, first: int = 0) -> list[PackEntry]:
    return [PackEntry(digest(first + i), 8 + 100 * i, 100, 250, i % 2) for i in range(count)]


@pytest.fixture
def index(tmp_path):
    opened = ChunkIndex(tmp_path / "index")
    yield opened
    opened.close()


def test_an_added_pack_locates_each_of_its_records(index):
    index.add_pack(PACK_A, entries(3), 1000)
    for entry in entries(3):
        location = index.lookup(entry.digest)
        assert location == ChunkLocation(PACK_A, entry.offset, 100, 250, entry.flags)
        assert location.entry(entry.digest) == entry
    assert index.lookup(digest(99)) is None
    assert index.chunk_count() == 3
    assert index.known_packs() == {PACK_A}
    (pack_id, stats), = index.pack_stats()
    assert (pack_id, stats.file_size, stats.stored_bytes, stats.raw_bytes, stats.records) \
        == (PACK_A, 1000, 300, 750, 3)


def test_are_indexed_answers_each_digest_of_a_batch_in_order(index):
    index.add_pack(PACK_A, entries(2), 500)
    assert index.are_indexed([digest(1), digest(7), digest(0), digest(1)]) \
        == [True, False, True, True]
    assert index.are_indexed([]) == []


def test_a_digest_already_indexed_keeps_its_first_location(index):
    index.add_pack(PACK_A, entries(2), 500)
    index.add_pack(PACK_B, entries(2), 500)
    assert index.lookup(digest(0)).pack_id == PACK_A


def test_a_relocated_pack_becomes_the_location_of_its_chunks(index):
    index.add_pack(PACK_A, entries(2), 500)
    index.add_relocated_pack(PACK_B, entries(1), 300)
    assert index.lookup(digest(0)).pack_id == PACK_B
    assert index.lookup(digest(1)).pack_id == PACK_A


def test_indexed_here_says_which_records_of_a_pack_the_index_points_at(index):
    index.add_pack(PACK_A, entries(3), 500)
    index.add_relocated_pack(PACK_B, entries(1), 300)  # digest 0 now lives in B
    moved = PackEntry(digest(2), 9999, 100, 250, 0)  # the same chunk at another offset
    assert index.indexed_here(PACK_A, entries(4) + [moved]) == [False, True, True, False,
                                                                False]
    assert index.indexed_here(PACK_B, entries(2)) == [True, False]


def test_removing_locations_drops_only_entries_that_point_at_those_records(index):
    index.add_pack(PACK_A, entries(3), 500)
    index.add_relocated_pack(PACK_B, entries(1), 300)  # digest 0 now lives in B
    assert index.remove_locations({PACK_A: entries(3)}) == 2
    assert index.lookup(digest(0)).pack_id == PACK_B
    assert index.lookup(digest(1)) is None
    index.remove_packs([PACK_A])
    assert index.known_packs() == {PACK_B}


def test_removing_many_locations_commits_a_bounded_number_at_a_time(index):
    """LMDB refuses a transaction with too many dirty pages (MDB_TXN_FULL): compact met it
    removing 10^7 locations at once, so they go in bounded transactions, each complete."""
    total = 2 * WRITES_PER_TRANSACTION + 1000
    packs = {f"{pack:032x}": [PackEntry(blake3.blake3(n.to_bytes(8, "little")).digest(),
                                        8 + 100 * n, 100, 250, 0)
                              for n in range(pack, total, 4)] for pack in range(4)}
    load_packs(index, ((pack_id, records, 1000) for pack_id, records in packs.items()))
    transactions_before = index.env.info()["last_txnid"]
    assert index.remove_locations(packs) == total
    assert index.env.info()["last_txnid"] - transactions_before == 3
    assert index.chunk_count() == 0


def test_a_sweep_drops_the_entries_of_unused_chunks_and_keeps_the_packs_of_used_ones(index):
    index.add_pack(PACK_A, entries(4), 500)
    index.add_relocated_pack(PACK_B, entries(1), 300)  # digest 0 now lives in B
    index.add_pack(PACK_C, entries(2, first=10), 300)
    counts = ReferenceCounts(index)
    counts.apply({digest(0): 1, digest(2): 1}, [], accounted=True)
    assert counts.remove_unused_locations([PACK_A], lambda: None) == {PACK_A}
    assert index.lookup(digest(0)).pack_id == PACK_B
    assert index.lookup(digest(2)).pack_id == PACK_A  # in use: kept, and so is its pack
    assert index.lookup(digest(1)) is None and index.lookup(digest(3)) is None
    assert index.sweep_out([PACK_A, PACK_C]) == set()  # nothing kept without a table
    assert [d for d, _ in index.iter_chunks()] == [digest(0)]


def test_a_sweep_commits_a_bounded_number_of_deletions_at_a_time(index):
    """One pass over the index, WRITES_PER_TRANSACTION deletions to a transaction (LMDB
    refuses one with too many dirty pages), the lock checked before each."""
    total = 2 * WRITES_PER_TRANSACTION + 1000
    packs = {f"{pack:032x}": [PackEntry(blake3.blake3(n.to_bytes(8, "little")).digest(),
                                        8 + 100 * n, 100, 250, 0)
                              for n in range(pack, total, 4)] for pack in range(4)}
    load_packs(index, ((pack_id, records, 1000) for pack_id, records in packs.items()))
    index.add_pack(PACK_A, entries(5), 600)  # not swept: stays
    transactions_before = index.env.info()["last_txnid"]
    checks = []
    assert index.sweep_out(list(packs), before_each=lambda: checks.append(1)) == set()
    assert index.env.info()["last_txnid"] - transactions_before == len(checks) == 3
    assert index.chunk_count() == 5


def test_a_rebuild_replaces_every_location_and_pack(index):
    index.add_pack(PACK_A, entries(3), 500)
    rebuild(index, [(PACK_B, entries(2, first=10), 400)], None)
    assert index.known_packs() == {PACK_B}
    assert index.lookup(digest(0)) is None
    assert index.lookup(digest(10)).pack_id == PACK_B
    assert [d for d, _ in index.iter_chunks()] == sorted([digest(10), digest(11)])
    index.read_everything()


def test_a_rebuild_begun_by_another_process_is_not_emptied_again(index):
    """Two processes that found the same index untrustworthy: the second finds it changed
    since it looked, and leaves the first one's rebuild alone."""
    index.add_pack(PACK_A, entries(3), 500)
    index.record_identity("old")
    seen = ("old", {PACK_A})
    assert rebuild(index, [(PACK_B, entries(2, first=10), 400)], "new", expected=seen)
    assert not rebuild(index, [], "new", expected=seen)
    assert index.known_packs() == {PACK_B} and index.identity() == "new"
    assert index.lookup(digest(10)).pack_id == PACK_B and index.lookup(digest(0)) is None


def test_entries_survive_closing_and_reopening(tmp_path):
    first = ChunkIndex(tmp_path / "index")
    first.add_pack(PACK_A, entries(2), 500)
    first.close()
    again = ChunkIndex(tmp_path / "index")
    assert again.are_indexed([digest(0), digest(1)]) == [True, True]
    again.close()
