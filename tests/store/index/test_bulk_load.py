"""Indexing many packs at once (an index rebuilt from the pack footers): memory that does
not grow with the chunks, and an index that is right after a SIGKILL at any point."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from diskvault.store.format.packs import PackWriter, read_footer
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.storage import Storage

from .child_memory import PEAK_RISE

RECORDS_PER_PACK = 1000
MiB = 1 << 20

# The catch-up that fills an empty index, in a child: it prints how far its anonymous
# memory (heap and LMDB's dirty pages, not the mapped file) rose above what the open took.
REBUILD = PEAK_RISE + """
import sys
from diskvault.store.storage import Storage

with Storage.open(sys.argv[1], catch_up=False) as storage:
    print(peak_rise(storage.catch_up_index)[1])
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


# A catch-up in a child, which says when it begins (a kill before it would test nothing).
CATCH_UP = """
import sys
from diskvault.store.storage import Storage

with Storage.open(sys.argv[1], catch_up=False) as storage:
    print("catching up", flush=True)
    storage.catch_up_index()
"""


def catch_up_killed_at_random(root: Path, rng, catch_up_s: float | None) -> float:
    """Catch the index up in a child, SIGKILLed at a random point of its catch-up (which
    takes ``catch_up_s``; None: not killed); how long it ran from the catch-up's start."""
    child = subprocess.Popen([sys.executable, "-c", CATCH_UP, str(root)],
                             stdout=subprocess.PIPE, text=True)
    with child:
        assert child.stdout.readline() == "catching up\n"
        started = time.monotonic()
        try:
            child.wait(timeout=None if catch_up_s is None else rng.uniform(0, catch_up_s))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return time.monotonic() - started


def assert_locates_every_record(index: ChunkIndex, packs, pack_ids) -> int:
    """Every record of these packs located where its footer says; how many there are."""
    count = 0
    for pack_id in pack_ids:
        for entry in read_footer(packs, pack_id):
            assert index.lookup(entry.digest).entry(entry.digest) == entry
            count += 1
    return count


def memory_rise(repo, in_child: Callable[[Path], int]) -> tuple[int, int]:
    """``in_child``'s rise in memory over 100,000 synthetic chunks, then over 800,000."""
    root = repo.storage.backend.root
    synthetic_packs(repo.storage, 100_000, seed=1)
    repo.close()
    small = in_child(root)
    with Storage.open(root, catch_up=False) as storage:
        synthetic_packs(storage, 700_000, seed=2)
    return small, in_child(root)


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
    small, large = memory_rise(repo, rebuild_in_child)
    assert large - small < 12 * MiB, (small / MiB, large / MiB)
    assert_indexes_every_pack(repo.storage.backend.root)


@pytest.mark.parametrize("distrusted", ["removed", "from another copy"])
def test_an_index_rebuild_killed_at_any_point_is_completed_by_the_next_open(repo, distrusted):
    """Rows of packs go in after their locations: a kill while an empty index is filled
    leaves one that knows fewer packs, and the next open completes it; a rebuild of a
    distrusted one is seen whole or not at all: a kill leaves the old index or the new one,
    each knowing every pack. Nothing either knows is wrong."""
    root = repo.storage.backend.root
    synthetic_packs(repo.storage, 30_000, seed=3)
    repo.close()
    rng = random.Random(4)
    catch_up_s = None  # how long a whole catch-up takes: the first is not killed
    for _ in range(4):
        if distrusted == "removed":
            shutil.rmtree(root / "index", ignore_errors=True)
        else:
            index = ChunkIndex(root / "index")
            index.record_identity("0123 file:///elsewhere")
            index.close()
        taken_s = catch_up_killed_at_random(root, rng, catch_up_s)
        catch_up_s = catch_up_s or taken_s
        with Storage.open(root, catch_up=False) as storage:  # as the kill left it
            known = storage.index.known_packs()
            assert_locates_every_record(storage.index, storage.packs, known)
            if distrusted == "from another copy":
                assert known == set(storage.packs.list())
                assert storage.index.identity() in ("0123 file:///elsewhere",
                                                    storage.identity)
        assert_indexes_every_pack(root)


# Another process reading the index throughout: each round looks every sampled digest up
# in one read transaction, until the file ``stop`` appears; prints rounds and misses.
READER = """
import sys
from pathlib import Path
from diskvault.store.index.chunk_index import ChunkIndex

index = ChunkIndex(Path(sys.argv[1]))
digests = [bytes.fromhex(line) for line in sys.stdin.read().split()]
stop, rounds, misses = Path(sys.argv[2]), 0, 0
print("reading", flush=True)
while not stop.exists():
    misses += sum(location is None for _, location in index.locate_many(digests))
    misses += index.lookup(digests[rounds % len(digests)]) is None
    rounds += 1
print(rounds, misses, flush=True)
"""


@pytest.mark.parametrize("rebuilders", [1, 2], ids=["one rebuild", "two at once"])
def test_another_process_reading_the_index_beside_its_rebuild_never_misses_a_chunk(
        repo, tmp_path, rebuilders):
    """A rebuild fills a spare generation and switches to it in one transaction: a process
    reading the index meanwhile finds every chunk, in the old index or in the new one. (It
    met the emptied, half-filled index: "chunk ... is not in the index".) Of two processes
    that distrust the index at once, one rebuilds and the other waits for it (the fill
    lock): the second never empties the spare under the first one's switch."""
    root = repo.storage.backend.root
    synthetic_packs(repo.storage, 60_000, seed=5)
    repo.close()
    rebuild_in_child(root)
    index = ChunkIndex(root / "index")
    sample = [digest for number, (digest, _) in enumerate(index.iter_chunks())
              if number % 30 == 0]
    index.record_identity("0123 file:///elsewhere")  # distrusted: the next catch-up rebuilds
    index.close()
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root / "index"), str(stop)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        reader.stdin.write("\n".join(digest.hex() for digest in sample))
        reader.stdin.close()
        assert reader.stdout.readline() == "reading\n"
        children = [subprocess.Popen([sys.executable, "-c", CATCH_UP, str(root)],
                                     stdout=subprocess.DEVNULL) for _ in range(rebuilders)]
        assert [child.wait() for child in children] == [0] * rebuilders
    finally:
        stop.touch()
        rounds, misses = map(int, reader.stdout.read().split())
        reader.wait()
    assert rounds > 0 and misses == 0, (rounds, misses)
    with Storage.open(root, catch_up=False) as storage:
        assert storage.index.identity() == storage.identity
        assert storage.index.known_packs() == set(storage.packs.list())
    assert_indexes_every_pack(root)
