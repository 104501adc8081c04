"""A reader that goes away early (`diskvault cat latest | head`) is a normal end: no
message, exit 141 as for `cat` killed by SIGPIPE, never the exit 1 of a failure. Real pipes,
closed after a few bytes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS, write_image

EXIT_CLOSED_PIPE = 141
RECORDS = 1500  # list output well past a pipe's 64 KiB buffer


@pytest.fixture(scope="module")
def many_snapshots(tmp_path_factory) -> str:
    """A repository with an 8 MiB snapshot and RECORDS more records of it."""
    folder = tmp_path_factory.mktemp("pipes")
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS) as repository:
        record = repository.backup(write_image(folder / "vm.img", 8 << 20, seed=4), name="vm")
        for _ in range(RECORDS):
            repository.storage.snapshots.save(dataclasses.replace(record, id=SnapshotRecord.new_id()))
    return str(folder / "repo")


def read_a_little_then_close(*args: str, unbuffered: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, "-m", "diskvault", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**env, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})})
    assert process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    return subprocess.CompletedProcess(args, process.wait(timeout=120), b"", stderr)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("argv", [["cat", "latest"], ["list"], ["list", "--json"],
                                  ["--debug", "cat", "latest"]])
def test_a_reader_closing_the_pipe_early_is_a_quiet_end(many_snapshots, argv, unbuffered):
    # PYTHONUNBUFFERED: stdout on a raw file took part of a write and dropped the rest
    # silently, exit 0, as if the whole listing had been delivered.
    result = read_a_little_then_close(*argv, "-r", many_snapshots, unbuffered=unbuffered)
    assert result.stderr == b""
    assert result.returncode == EXIT_CLOSED_PIPE
