"""The LMDB index on its own: entries of durable packs are added, looked up, moved by
compaction, removed, and rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.store.format.packs import PackEntry
from diskvault.store.index import sweeps
from diskvault.store.index.bulk_load import load_packs, rebuild
from diskvault.store.index.bulk_writes import IDENTITY_KEY, WRITES_PER_TRANSACTION
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.index.probe import open_environment
from diskvault.store.index.records import ChunkLocation, encode_location
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


def test_packs_added_together_locate_their_records_and_the_first_holder_wins(index):
    index.add_pack(PACK_A, entries(1), 100)  # digest 0 is indexed before
    index.add_packs([(PACK_B, entries(3), 500), ("cc" * 16, entries(2, first=2), 400)])
    assert [index.lookup(digest(n)).pack_id for n in range(4)] \
        == [PACK_A, PACK_B, PACK_B, "cc" * 16]
    assert index.chunk_count() == 4
    stats = dict(index.pack_stats())
    assert (stats[PACK_B].records, stats[PACK_B].stored_bytes, stats["cc" * 16].file_size) \
        == (3, 300, 400)


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


def bulk_packs(count: int) -> dict[str, list[PackEntry]]:
    """Four packs sharing ``count`` records with random digests."""
    return {f"{pack:032x}": [PackEntry(blake3.blake3(n.to_bytes(8, "little")).digest(),
                                       8 + 100 * n, 100, 250, 0)
                             for n in range(pack, count, 4)] for pack in range(4)}


def footer_digests(packs) -> list[bytes]:
    """What compaction lists for the listed sweep: every digest of these footers, in order."""
    return sorted({entry.digest for records in packs for entry in records})


@pytest.mark.parametrize("listed", [False, True], ids=["pass", "listed"])
def test_a_sweep_commits_a_bounded_number_of_deletions_at_a_time(index, listed):
    """WRITES_PER_TRANSACTION deletions to a transaction (LMDB refuses one with too many
    dirty pages), the lock checked before each, on either path."""
    total = 2 * WRITES_PER_TRANSACTION + 1000
    packs = bulk_packs(total)
    load_packs(index, ((pack_id, records, 1000) for pack_id, records in packs.items()))
    index.add_pack(PACK_A, entries(5), 600)  # not swept: stays
    transactions_before = index.env.info()["last_txnid"]
    checks = []
    assert index.sweep_out(list(packs), before_each=lambda: checks.append(1),
                           listed=footer_digests(packs.values()) if listed else None) == set()
    assert index.env.info()["last_txnid"] - transactions_before == len(checks) == 3
    assert index.chunk_count() == 5


def test_records_in_sums_the_packs_statistics_and_knows_when_one_has_none(index):
    index.add_packs([(PACK_A, entries(3), 500), (PACK_B, entries(4, first=3), 500)])
    assert index.records_in([PACK_A, PACK_B]) == 7
    assert index.records_in([]) == 0
    assert index.records_in([PACK_A, PACK_C]) is None


@st.composite
def sweep_cases(draw):
    """Packs over a small digest space (a digest in several packs: the index keeps one
    location, an earlier pack's or a relocated copy's), the digests in use, the packs going."""
    pack_ids = [f"{n:032x}" for n in range(draw(st.integers(1, 6)))]
    packs = []
    for pack_id in pack_ids:
        numbers = draw(st.lists(st.integers(0, 40), max_size=12, unique=True))
        packs.append((pack_id, [PackEntry(digest(n), 8 + 100 * i, 100, 250, 0)
                                for i, n in enumerate(numbers)],
                      draw(st.booleans())))  # relocated: its records win
    used = draw(st.sets(st.integers(0, 40)))
    going = draw(st.lists(st.sampled_from(pack_ids), unique=True))
    return packs, {digest(n) for n in used}, going


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=sweep_cases(), per_transaction=st.integers(1, 4))
def test_the_listed_sweep_leaves_the_index_the_pass_leaves(tmp_path_factory, monkeypatch,
                                                           case, per_transaction):
    """Visiting only the footers' digests decides every entry as the pass over the whole
    index does (one decision, Sweeps._drops): the same entries left, the same packs
    kept, across transactions of a few deletions each."""
    packs, used, going = case
    monkeypatch.setattr(sweeps, "WRITES_PER_TRANSACTION", per_transaction)
    outcomes = []
    for listed in (False, True):
        opened = ChunkIndex(tmp_path_factory.mktemp("index"))
        for pack_id, records, relocated in packs:
            add = opened.add_relocated_pack if relocated else opened.add_pack
            add(pack_id, records, 1000)
        counts = ReferenceCounts(opened)
        counts.apply(dict.fromkeys(used, 1), [], accounted=True)
        footers = [records for pack_id, records, _ in packs if pack_id in going]
        kept = counts.remove_unused_locations(
            going, lambda: None, footer_digests(footers) if listed else None)
        outcomes.append((kept, list(opened.iter_chunks())))
        opened.close()
    assert outcomes[0] == outcomes[1]


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


def test_a_rebuild_left_unfinished_is_never_read_and_the_next_one_empties_it(index):
    """A rebuild killed while it filled the spare generation leaves the old index live and
    whole; the next rebuild starts from an empty spare, so nothing of the half-filled one
    (here: a pack no longer listed) outlives it."""
    index.add_pack(PACK_A, entries(3), 500)
    spare = index.begin_rebuild()
    load_packs(index, [("cc" * 16, entries(2, first=20), 300)], spare)  # then the kill
    assert index.known_packs() == {PACK_A} and index.lookup(digest(20)) is None
    rebuild(index, [(PACK_B, entries(2, first=10), 400)], "new")
    assert index.known_packs() == {PACK_B} and index.lookup(digest(20)) is None
    assert index.chunk_count() == 2
    rebuild(index, [(PACK_A, entries(1), 100)], "newer")  # back to the first generation
    assert index.known_packs() == {PACK_A} and index.chunk_count() == 1


def legacy_index(path, identity: str) -> None:
    """An index as written before generations: ``chunks``, ``packs`` and ``meta`` only."""
    path.mkdir(mode=0o700)
    env = open_environment(path, readonly=False)
    chunks, packs, meta = (env.open_db(name) for name in (b"chunks", b"packs", b"meta"))
    with env.begin(write=True) as txn:
        for entry in entries(3):
            txn.put(entry.digest, encode_location(bytes.fromhex(PACK_A), entry), db=chunks)
        txn.put(bytes.fromhex(PACK_A), bytes(28), db=packs)
        txn.put(IDENTITY_KEY, identity.encode(), db=meta)
    env.close()


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "read-only"])
def test_an_index_written_before_generations_is_read_as_it_is(tmp_path, readonly):
    legacy_index(tmp_path / "index", "the repository")
    opened = ChunkIndex(tmp_path / "index", readonly=readonly)
    assert opened.identity() == "the repository" and opened.known_packs() == {PACK_A}
    assert opened.lookup(digest(2)) == ChunkLocation(PACK_A, 208, 100, 250, 0)
    opened.close()


REBUILD_IN_CHILD = """
import sys
from pathlib import Path
from diskvault.store.index.bulk_load import rebuild
from diskvault.store.index.chunk_index import ChunkIndex
from tests.store.index.test_index import PACK_B, entries
rebuild(ChunkIndex(Path(sys.argv[1])), [(PACK_B, entries(2, first=10), 400)], "new")
"""


def test_a_read_only_index_follows_a_rebuild_into_a_generation_made_after_its_open(tmp_path):
    legacy_index(tmp_path / "index", "old")
    reader = ChunkIndex(tmp_path / "index", readonly=True)
    # Another process (LMDB opens an environment once per process) makes the second
    # generation's tables and rebuilds into them.
    subprocess.run([sys.executable, "-c", REBUILD_IN_CHILD, str(tmp_path / "index")],
                   check=True)
    assert reader.lookup(digest(10)).pack_id == PACK_B and reader.identity() == "new"
    assert reader.known_packs() == {PACK_B}
    reader.close()


def test_entries_survive_closing_and_reopening(tmp_path):
    first = ChunkIndex(tmp_path / "index")
    first.add_pack(PACK_A, entries(2), 500)
    first.close()
    again = ChunkIndex(tmp_path / "index")
    assert again.are_indexed([digest(0), digest(1)]) == [True, True]
    again.close()


def test_an_index_whose_fill_lock_another_user_owns_is_read_only_to_this_one(other_user):
    """Filling it would fail opening rebuild.lock: it is used as one this user may not
    write (an object store's then gets a private cache), like one whose LMDB files are
    another's."""
    folder = other_user.scratch / "index"
    ChunkIndex(folder).close()
    (folder / "rebuild.lock").touch(mode=0o600)  # root's, as a `sudo diskvault` leaves it
    for path in (folder, folder / "data.mdb", folder / "lock.mdb"):
        os.chown(path, other_user.uid, other_user.gid)
    opened = other_user.run(sys.executable, "-c", OPEN_AND_SAY_READ_ONLY, str(folder))
    assert opened.stdout.decode().strip() == "True", opened.stderr.decode()


OPEN_AND_SAY_READ_ONLY = """
import sys
from pathlib import Path
from diskvault.store.index.chunk_index import ChunkIndex
print(ChunkIndex(Path(sys.argv[1])).readonly)
"""
