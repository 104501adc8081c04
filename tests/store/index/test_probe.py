"""The index is read first in a fresh interpreter, never in a fork: opening it and
repair's thorough test work while other threads run (a lock's heartbeat, a worker pool),
without forking the process that holds them. And only when the data file changed since a
probe last read it: once per change, whoever made it."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from diskvault.errors import CorruptData
from diskvault.store.format.packs import PackEntry
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.index.damage import set_aside_unreadable_index
from diskvault.store.index.probe import PROBED_FILE, probe_exit_code

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


@pytest.fixture
def probes_run(monkeypatch) -> list[list[str]]:
    """The probes started in fresh interpreters (still run for real), in order."""
    started = []
    real_run = subprocess.run

    def run(command, *args, **kwargs):
        if "diskvault.store.index.probe" in command:
            started.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return started


def opened_and_closed(folder: Path) -> None:
    ChunkIndex(folder).close()


def test_the_probe_runs_once_per_change_of_the_data_file(index_folder, probes_run):
    opened_and_closed(index_folder)
    opened_and_closed(index_folder)
    assert len(probes_run) == 1
    index = ChunkIndex(index_folder)
    index.add_pack("cd" * 16, [PackEntry(b"\1" * 32, 8, 100, 250, 0)], 1000)
    index.close()
    opened_and_closed(index_folder)
    opened_and_closed(index_folder)
    assert len(probes_run) == 2


def test_a_data_file_written_with_its_times_put_back_is_probed_again(index_folder, probes_run):
    opened_and_closed(index_folder)
    data = index_folder / "data.mdb"
    before = os.stat(data)
    with open(data, "r+b") as handle:  # same bytes, same size: only the change time tells
        handle.write(handle.read(4096))
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    opened_and_closed(index_folder)
    assert len(probes_run) == 2


def test_a_marker_another_user_owns_or_a_link_is_not_believed(index_folder, probes_run,
                                                              tmp_path):
    opened_and_closed(index_folder)
    marker = index_folder / PROBED_FILE
    assert marker.stat().st_mode & 0o777 == 0o600
    os.chown(marker, os.geteuid() + 1, -1)
    opened_and_closed(index_folder)
    assert len(probes_run) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(marker.read_bytes())
    marker.unlink()
    marker.symlink_to(elsewhere)
    opened_and_closed(index_folder)
    assert len(probes_run) == 3
    assert not marker.is_symlink() and elsewhere.read_bytes() == marker.read_bytes()
    opened_and_closed(index_folder)
    assert len(probes_run) == 3


def test_an_index_the_probe_cannot_read_leaves_no_marker(index_folder):
    data = index_folder / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CorruptData, match="cut off"):
        ChunkIndex(index_folder)
    assert not (index_folder / PROBED_FILE).exists()
