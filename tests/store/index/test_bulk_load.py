"""Indexing many packs at once (an index rebuilt from the pack footers): memory that does
not grow with the chunks, and an index that is right after a SIGKILL at any point."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskvault.store.format.packs import PackWriter, read_footer
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.storage import Storage
from tests.conftest import run_killed_at_random

from .child_memory import ANONYMOUS_BYTES

RECORDS_PER_PACK = 1000
MiB = 1 << 20

# The catch-up that fills an empty index, in a child: it prints how far its anonymous
# memory (heap and LMDB's dirty pages, not the mapped file) rose above what the open took.
REBUILD = ANONYMOUS_BYTES + """
import sys, threading
from diskvault.store.storage import Storage

with Storage.open(sys.argv[1], catch_up=False) as storage:
    base = peak = anonymous_bytes()
    done = threading.Event()
    def sample():
        global peak
        while not done.wait(0.005):
            peak = max(peak, anonymous_bytes())
    sampler = threading.Thread(target=sample)
    sampler.start()
    storage.catch_up_index()
    done.set()
    sampler.join()
    print(max(peak, anonymous_bytes()) - base)
"""


def synthetic_packs(storage: Storage, records: int, seed: int) -> None:
    """Packs of RECORDS_PER_PACK one-byte records with random digests: footers as a real
    repository's, in a fraction of the bytes."""
    rng = random.Random(seed)
    for start in range(0, records, RECORDS_PER_PACK):
        writer = PackWriter(storage.packs, storage.packs.new_pack_id())
        for _ in range(min(RECORDS_PER_PACK, records - start)):
            writer.add(rng.randbytes(32), b"x", 1, 0)
        writer.finish()


def rebuild_in_child(root: Path) -> int:
    """Empty the index, rebuild it in a child; the child's rise in anonymous memory."""
    shutil.rmtree(root / "index")
    done = subprocess.run([sys.executable, "-c", REBUILD, str(root)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def assert_locates_every_record(index: ChunkIndex, packs, pack_ids) -> int:
    """Every record of these packs located where its footer says; how many there are."""
    count = 0
    for pack_id in pack_ids:
        for entry in read_footer(packs, pack_id):
            assert index.lookup(entry.digest).entry(entry.digest) == entry
            count += 1
    return count


def assert_indexes_every_pack(root: Path) -> None:
    with Storage.open(root, catch_up=False) as storage:
        storage.catch_up_index()
        listed = storage.packs.list()
        assert storage.index.known_packs() == set(listed)
        count = assert_locates_every_record(storage.index, storage.packs, listed)
        assert storage.index.chunk_count() == count


@pytest.mark.slow
def test_rebuilding_an_index_takes_memory_that_does_not_grow_with_the_chunks(repo):
    """An index rebuilt from 8 times as many chunks takes about the same memory: footers
    read in bounded windows, locations sorted on disk, bounded write transactions. (It
    grew by a 4 KiB dirty page per chunk put at random, up to the whole index.)"""
    root = repo.storage.backend.root
    synthetic_packs(repo.storage, 100_000, seed=1)
    repo.close()
    small = rebuild_in_child(root)
    with Storage.open(root, catch_up=False) as storage:
        synthetic_packs(storage, 700_000, seed=2)
    large = rebuild_in_child(root)
    assert large - small < 12 * MiB, (small / MiB, large / MiB)
    assert_indexes_every_pack(root)


@pytest.mark.parametrize("distrusted", ["removed", "from another copy"])
def test_an_index_rebuild_killed_at_any_point_is_completed_by_the_next_open(repo, distrusted):
    """Rows of packs go in after their locations, the identity last: a kill leaves an
    index that knows fewer packs (or the old one, still distrusted), and the next open
    completes it; nothing it knows is wrong."""
    root = repo.storage.backend.root
    synthetic_packs(repo.storage, 60_000, seed=3)
    repo.close()
    started = time.monotonic()
    rebuild_in_child(root)
    whole_run_s = time.monotonic() - started
    rng = random.Random(4)
    for _ in range(3):
        if distrusted == "removed":
            shutil.rmtree(root / "index")
        else:
            index = ChunkIndex(root / "index")
            index.record_identity("0123 file:///elsewhere")
            index.close()
        run_killed_at_random([sys.executable, "-c", REBUILD, str(root)], rng, whole_run_s)
        with Storage.open(root, catch_up=False) as storage:  # as the kill left it
            assert_locates_every_record(storage.index, storage.packs,
                                        storage.index.known_packs())
        assert_indexes_every_pack(root)
