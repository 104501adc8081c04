"""Reader registrations: each reader puts ``readers/<random>.json`` while it
runs; compaction pauses new readers (``readers-paused/``) and deletes packs only if none is
registered. A registration or pause of a dead process on this host is stale and ignored."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

from diskvault.store.coordination.readers import active_readers, readers_excluded
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image

DEADLINE_S = 30.0

READER_SCRIPT = """
import sys
from pathlib import Path
from diskvault.store.repository import Repository

with Repository.open(Path(sys.argv[1])) as repository:
    print("started", flush=True)
    with repository.reader_lock():
        print("reading", flush=True)
        sys.stdin.readline()
print("done", flush=True)
"""


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def plant_registration(repo: Path, folder: str, host: str, pid: int) -> Path:
    """A registration as a process that is gone (or another host) leaves it."""
    path = repo / folder / f"{host}-{pid}-{'0' * 16}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "command": "restore",
                                "since": "2026-11-20T03:15:00+00:00", "process_start": "1"}))
    return path


def read_line(process: subprocess.Popen) -> str:
    ready, _, _ = select.select([process.stdout], [], [], DEADLINE_S)
    assert ready, f"the reader said nothing within {DEADLINE_S} s"
    return process.stdout.readline().strip()


def test_a_reader_is_registered_while_it_runs_and_not_after(repo: Repository):
    assert active_readers(repo.storage.backend) == []
    with repo.reader_lock():
        (reader,) = active_readers(repo.storage.backend)
        assert (reader.host, reader.pid) == (socket.gethostname(), os.getpid())
        with readers_excluded(repo.storage.backend) as excluded:
            assert not excluded
    assert active_readers(repo.storage.backend) == []
    assert repo.storage.backend.list("readers/") == []
    with readers_excluded(repo.storage.backend) as excluded:
        assert excluded


def test_a_dead_readers_registration_is_removed_but_another_hosts_counts(repo: Repository):
    stale = plant_registration(repo.root, "readers", socket.gethostname(), dead_pid())
    assert active_readers(repo.storage.backend) == []
    assert not stale.exists()

    plant_registration(repo.root, "readers", "other-host", dead_pid())
    with readers_excluded(repo.storage.backend) as excluded:
        assert not excluded


def test_a_reader_waits_while_readers_are_paused_and_runs_after(repo: Repository):
    with readers_excluded(repo.storage.backend) as excluded:
        assert excluded
        reader = subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(repo.root)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert read_line(reader) == "started"
            still_waiting, _, _ = select.select([reader.stdout], [], [], 0)
            assert not still_waiting, "a reader started while readers were paused"
        except BaseException:
            reader.kill()
            raise
    with reader:
        assert read_line(reader) == "reading"
        assert len(active_readers(repo.storage.backend)) == 1
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert read_line(reader) == "done"
    assert active_readers(repo.storage.backend) == []


def test_a_pause_left_by_a_dead_compaction_does_not_block_readers(repo: Repository,
                                                                   tmp_path: Path):
    image = write_image(tmp_path / "vm.img", 300_000, seed=3)
    record = repo.backup(image)
    plant_registration(repo.root, "readers-paused", socket.gethostname(), dead_pid())

    target = tmp_path / "restored.img"
    result = run_cli("restore", "-r", str(repo.root), record.id, str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert target.read_bytes() == image.read_bytes()
    assert repo.storage.backend.list("readers-paused/") == []
