"""Sorting on disk: every record back in order through levels of merged runs, and the set
of digests check keeps in memory that does not grow with the digests."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from diskvault.store.index import sorted_runs
from diskvault.store.index.sorted_runs import (DigestSet, KeyedSums, SortedRuns, first_of_each,
                                              joined)

from .child_memory import ANONYMOUS_BYTES

MiB = 1 << 20

# Adds N random digests to a DigestSet and walks it; prints how far the child's anonymous
# memory rose (RSS sampled as it goes, LMDB's dirty pages included).
DIGESTS = ANONYMOUS_BYTES + """
import os, sys, threading
from pathlib import Path
from diskvault.store.index.sorted_runs import DigestSet

base = peak = anonymous_bytes()
with DigestSet(Path(sys.argv[2])) as digests:
    for _ in range(int(sys.argv[1])):
        digests.add(os.urandom(32))
        peak = max(peak, anonymous_bytes()) if _ % 50_000 == 0 else peak
    count = sum(1 for _ in digests)
    peak = max(peak, anonymous_bytes())
print(peak - base)
"""


def test_records_come_back_in_order_with_their_duplicates_through_levels_of_runs(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sorted_runs, "RUN_RECORDS", 10)
    monkeypatch.setattr(sorted_runs, "MERGE_FAN_IN", 3)  # runs merged into runs, twice over
    rng = random.Random(5)
    records = [rng.randbytes(2) + bytes([n % 7]) for n in range(500)] * 2
    with SortedRuns(3, tmp_path) as runs:
        for record in records:
            runs.add(record)
        assert list(runs) == sorted(records)
        assert list(runs) == sorted(records)  # a second walk reads the same
    assert os.listdir(tmp_path) == []  # the runs never had names


def test_first_of_each_keeps_the_first_record_of_each_key():
    records = [b"a1", b"a2", b"b1", b"c1", b"c2"]
    assert list(first_of_each(records, 1)) == [b"a1", b"b1", b"c1"]


def test_keyed_sums_add_up_each_key_across_the_runs_they_spill_to(tmp_path, monkeypatch):
    monkeypatch.setattr(sorted_runs, "RUN_RECORDS", 5)  # the spilled sums sorted in runs
    monkeypatch.setattr(sorted_runs, "HELD_KEYS", 3)  # a spill every 3 new keys
    rng = random.Random(2)
    expected: dict[bytes, list[int]] = {}
    with KeyedSums(2, 2, tmp_path) as sums:
        for _ in range(500):
            key, value = rng.randbytes(2)[:1] * 2, rng.randrange(1 << 64)
            sums.add(key, 1, value)
            counts = expected.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] = (counts[1] + value) % (1 << 64)
        assert list(sums) == [(key, tuple(expected[key])) for key in sorted(expected)]
        sums.add(b"z\0", 7, 8)  # added after a read: read the next time, with the rest
        assert dict(sums) == {**{key: tuple(found) for key, found in expected.items()},
                              b"z\0": (7, 8)}


def test_joined_streams_give_each_key_once_with_every_value_for_it():
    first = iter([(1, "a"), (3, "c")])
    second = iter([(2, "B"), (3, "C"), (4, "D")])
    assert list(joined(first, second, iter(()))) == [
        (1, ["a", None, None]), (2, [None, "B", None]), (3, ["c", "C", None]),
        (4, [None, "D", None])]


def test_a_digest_set_counts_and_lists_each_digest_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sorted_runs, "RUN_RECORDS", 16)
    digests = [os.urandom(32) for _ in range(100)]
    with DigestSet(tmp_path) as found:
        for digest in digests + digests[:40]:
            found.add(digest)
        assert list(found) == sorted(digests) and len(found) == 100


def _rise_in_child(count: int, folder) -> int:
    done = subprocess.run([sys.executable, "-c", DIGESTS, str(count), str(folder)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.slow
def test_a_set_of_many_digests_takes_memory_that_does_not_grow_with_them(tmp_path):
    """Seven times the digests, about the same memory: one sorted run in memory, the rest
    on disk. (In a scratch LMDB, a batch of digests put at random dirtied a 4 KiB page
    each, up to the whole set.)"""
    small = _rise_in_child(200_000, tmp_path)
    large = _rise_in_child(1_400_000, tmp_path)
    assert large - small < 12 * MiB, (small / MiB, large / MiB)
