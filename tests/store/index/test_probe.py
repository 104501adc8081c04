"""The index is read first in a fresh interpreter, never in a fork: opening it and
repair's thorough test work while other threads run (a lock's heartbeat, a worker pool),
without forking the process that holds them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from diskvault.store.format.packs import PackEntry
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.index.damage import set_aside_unreadable_index
from diskvault.store.index.probe import probe_exit_code

PACK = "ab" * 16


@pytest.fixture
def index_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    index = ChunkIndex(folder)
    index.add_pack(PACK, [PackEntry(bytes(32), 8, 100, 250, 0)], 1000)
    index.close()
    return folder


@pytest.fixture
def threads_running_and_no_fork(monkeypatch):
    """Another thread alive, as under the writer lock's heartbeat; a fork fails the test."""
    def refuse_fork():
        raise AssertionError("forked while another thread runs")

    monkeypatch.setattr(os, "fork", refuse_fork)
    stop = threading.Event()
    heartbeat = threading.Thread(target=stop.wait)
    heartbeat.start()
    yield
    stop.set()
    heartbeat.join()


def test_an_index_opens_and_is_judged_readable_without_a_fork(index_folder,
                                                               threads_running_and_no_fork):
    index = ChunkIndex(index_folder)
    assert index.known_packs() == {PACK}
    index.close()
    assert set_aside_unreadable_index(index_folder, thorough=True) is None
    assert index_folder.exists()


def test_the_probe_at_open_tells_a_readable_index_from_one_that_is_not(index_folder):
    assert probe_exit_code(index_folder, readonly=False) == 0
    data = index_folder / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)  # refused, never read past its end
    assert probe_exit_code(index_folder, readonly=False) == 1


@pytest.mark.parametrize("thorough", [False, True])
def test_an_index_cut_off_is_set_aside_and_a_whole_one_is_not(index_folder, thorough):
    assert set_aside_unreadable_index(index_folder, thorough) is None
    data = index_folder / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)
    moved = set_aside_unreadable_index(index_folder, thorough)
    assert moved is not None and (moved / "data.mdb").exists()
    assert not index_folder.exists()
