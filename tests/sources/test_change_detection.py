"""A source read in place that changes during the read is not recorded: a real writer
process rewrites a file (same size) while the backup reads it; a block device cannot be
checked, and the warning and the record say so."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from diskvault.errors import SourceChanged
from diskvault.sources.point_in_time import NONE, PointInTime, open_point_in_time
from diskvault.store.backup.source import FileState, change_seen
from diskvault.store.repository import Repository

from ..cli.test_errors import EXIT_FAILURE, assert_one_line_error
from ..conftest import run_cli, write_image
from ..fsimages import loop_device
from .conftest import Writer, write_generations

def in_place(path: Path):
    """As ``backup --snapshot none`` opens its source."""
    return open_point_in_time(path, PointInTime(NONE))

# Overwrites 4 KiB in the middle of the file, keeping its size, then says so and ends.
REWRITE_SCRIPT = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"\xff" * 4096, os.fstat(fd).st_size // 2)
os.close(fd)
print("rewritten", flush=True)
"""

BEFORE = FileState(size=100, mtime_ns=5_000_000_001, ctime_ns=5_000_000_002, inode=7, device=1)


@pytest.mark.parametrize("after, words", [
    (replace(BEFORE, size=200), "size 100 -> 200 bytes"),
    (replace(BEFORE, mtime_ns=6_000_000_000), "mtime 5.000000001 -> 6.000000000"),
    (replace(BEFORE, ctime_ns=6_000_000_000), "ctime 5.000000002 -> 6.000000000"),
    (replace(BEFORE, inode=8), "its path names another file now, or none"),
    (BEFORE, None)])
def test_change_seen_names_what_differs(after: FileState, words: str | None):
    assert change_seen(BEFORE, after) == words


def test_file_rewritten_in_place_during_backup_is_not_recorded(repo: Repository,
                                                               tmp_path: Path):
    image = write_image(tmp_path / "vm1.img", 8 * 1024 * 1024, "random", seed=1)
    rewrites = []

    def rewrite_once(position: int) -> None:
        """Called by the backup as it reads: the first time, a real process rewrites."""
        if rewrites:
            return
        rewrites.append(subprocess.run([sys.executable, "-c", REWRITE_SCRIPT, str(image)],
                                       capture_output=True, check=True, timeout=60))

    with pytest.raises(SourceChanged, match=r"vm1.img changed while it was read \(mtime"):
        repo.backup(image, progress=rewrite_once, open_source=in_place)
    assert rewrites[0].stdout == b"rewritten\n"
    assert os.path.getsize(image) == 8 * 1024 * 1024
    assert not repo.list_snapshots()
    # What reached the packs stays: the rerun, undisturbed, stores only what is new.
    record = repo.backup(image, open_source=in_place)
    assert record.consistency == "checked"
    assert record.stats.new_bytes < record.size // 2


def test_file_replaced_during_backup_is_not_recorded(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "vm1.img", 4 * 1024 * 1024, "random", seed=2)
    replacement = write_image(tmp_path / "new.img", 4 * 1024 * 1024, "random", seed=2)

    def replace_once(position: int) -> None:
        if replacement.exists():
            os.rename(replacement, image)  # as an editor or a copy tool saves

    with pytest.raises(SourceChanged, match="its path names another file now, or none"):
        repo.backup(image, progress=replace_once, open_source=in_place)
    assert not repo.list_snapshots()


def test_moving_file_fails_the_command_with_one_line(repo: Repository, tmp_path: Path):
    blocks = 8192
    image = write_generations(tmp_path / "vm1.img", blocks)
    with Writer(image, blocks) as writer:
        result = run_cli("backup", "-r", str(repo.root), str(image), "--snapshot", "none")
        assert writer.still_writing()
    assert_one_line_error(result, EXIT_FAILURE, f"{image} changed while it was read (",
                          "nothing was recorded", "--snapshot reflink|lvm", "stop the writer")
    assert not repo.list_snapshots()
    assert not (repo.root / "lock").exists() and not [*(repo.root / "writers").iterdir()]


def test_block_device_read_in_place_is_said_to_be_unchecked(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "disk.img", 2 * 1024 * 1024, "random", seed=3)
    with loop_device(image) as device:
        result = run_cli("backup", "-r", str(repo.root), device, "--name", "disk",
                         check=True)
    warnings = [line for line in result.stderr.decode().splitlines()
                if not line.startswith("new series ")]  # the first snapshot of "disk"
    assert warnings == [f"diskvault: warning: {device} is a block device read in place: a "
                        f"write to it during the read cannot be detected; stop its writer, "
                        f"or back up a snapshot of it (--snapshot lvm for a logical volume)"]
    assert repo.list_snapshots()[0].consistency == "unchecked"
    info = run_cli("info", "-r", str(repo.root), "disk", check=True).stdout.decode()
    assert "held still   no: a block device read in place" in info


def test_record_from_standard_input_says_nothing_of_consistency(repo: Repository,
                                                               tmp_path: Path):
    image = write_image(tmp_path / "disk.img", 1024 * 1024, "random", seed=4)
    run_cli("backup", "-r", str(repo.root), "-", "--name", "piped", input=image.read_bytes(),
            check=True)
    [record] = repo.list_snapshots()
    assert record.consistency is None
    assert "consistency" not in record.summary()
