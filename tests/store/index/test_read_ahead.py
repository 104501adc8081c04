"""A cold index is read into the page cache in one go before a whole-image backup or restore
looks up every chunk (LMDB alone would fault its pages in one by one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import blake3
import pytest

from diskvault.store.format.packs import PackEntry
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.index.probe import DATA_FILE

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None,
                                reason="fincore (util-linux) is needed to see the page cache")


def cached_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


def evict(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_read_ahead_brings_a_cold_index_into_the_page_cache(tmp_path):
    index = ChunkIndex(tmp_path / "index")
    for pack in range(20):
        index.add_pack(f"{pack:032x}", [PackEntry(blake3.blake3(b"%d-%d" % (pack, n)).digest(),
                                                  8 + 100 * n, 100, 250, 0)
                                        for n in range(1000)], 200_000)
    index.close()
    data = tmp_path / "index" / DATA_FILE
    evict(data)
    index = ChunkIndex(tmp_path / "index", probe=False)
    try:
        size = data.stat().st_size
        if cached_bytes(data) > size // 4:  # opening reads the meta pages and roots
            pytest.skip("this filesystem keeps files in memory (tmpfs?): no cold index")
        index.read_ahead()
        deadline = time.monotonic() + 30
        while cached_bytes(data) < size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cached_bytes(data) == size
    finally:
        index.close()
