"""check --repair in memory that does not grow with the chunks: pack footers are read
once, one at a time, and kept on disk until the rebuild reads them back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.maintenance.footer_spool import FooterSpool
from diskvault.store.format.packs import PackEntry

from ..store.index.child_memory import PEAK_RISE
from ..store.index.test_bulk_load import assert_indexes_every_pack, memory_rise

MiB = 1 << 20

# A repair in a child: it prints how far its anonymous memory (heap and LMDB's dirty
# pages, not the mapped file) rose above what it took before the repair began.
REPAIR = PEAK_RISE + """
import sys
from diskvault.maintenance.repair import repair_repository

report, rise = peak_rise(lambda: repair_repository(sys.argv[1]))
assert not report.after.damaged, report.after.problems
print(rise)
"""


def repair_in_child(root: Path) -> int:
    done = subprocess.run([sys.executable, "-c", REPAIR, str(root)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


@pytest.mark.slow
def test_repair_takes_memory_that_does_not_grow_with_the_chunks(repo):
    """A repair of 8 times as many chunks takes about the same memory. (It held every
    footer and every old index entry: about 200 MiB more for 700,000 more chunks.)"""
    small, large = memory_rise(repo, repair_in_child)
    assert large - small < 12 * MiB, (small / MiB, large / MiB)
    assert_indexes_every_pack(repo.storage.backend.root)


def test_a_footer_spool_gives_back_each_pack_and_names_the_chunks_stored_twice(tmp_path):
    first = [PackEntry(bytes([n]) * 32, 8 + 10 * n, 10, 20, n % 2) for n in range(3)]
    second = [PackEntry(bytes([1]) * 32, 8, 10, 20, 1), PackEntry(bytes([9]) * 32, 18, 5, 5, 0)]
    with FooterSpool(tmp_path) as spool:
        spool.add("aa" * 16, first, 100)
        spool.add("bb" * 16, second, 60)
        spool.add("cc" * 16, [], 52)
        assert list(spool.packs()) == [("aa" * 16, first, 100), ("bb" * 16, second, 60),
                                       ("cc" * 16, [], 52)]
        assert list(spool.packs({("aa" * 16, 18)}))[0] == ("aa" * 16, [first[0], first[2]], 100)
        assert list(spool.duplicates()) == [(bytes([1]) * 32, [("aa" * 16, first[1]),
                                                               ("bb" * 16, second[0])])]
        assert spool.pack_count == 3
        assert list(tmp_path.iterdir()) == []  # nothing named: gone with the process
