"""Backups through a reflink clone on real loop-mounted XFS and btrfs, with a writer that
never pauses: the snapshot is the file at one instant, and the clone leaves nothing behind,
not even when the backup is killed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ..cli.test_errors import EXIT_BAD_INPUT, EXIT_FAILURE, assert_one_line_error
from ..conftest import run_cli, write_image
from .conftest import Writer, generations, is_one_instant, write_generations

BLOCKS = 8192  # 32 MiB: a read long enough for the writer to move on many times


def image_of(repo: Repository, record) -> bytes:
    out = io.BytesIO()
    repo.cat(record, out)
    return out.getvalue()


def test_snapshot_through_clone_is_the_file_at_one_instant(repo: Repository,
                                                          reflink_folder: Path):
    image = write_generations(reflink_folder / "vm1.img", BLOCKS)
    try:
        with Writer(image, BLOCKS) as writer:
            result = run_cli("backup", "-r", str(repo.root), str(image), "--snapshot",
                             "reflink", check=True)
            in_place = run_cli("backup", "-r", str(repo.root), str(image), "--snapshot",
                               "none")
            assert writer.still_writing()
        [record] = repo.list_snapshots()
        assert record.consistency == "reflink"
        assert record.source == str(image)
        found = generations(image_of(repo, record))
        assert len(found) == BLOCKS and is_one_instant(found), found
        assert found[0] >= 1, "the writer had written before the clone was made"
        # The same writer makes a read in place fail: the target did move during a read.
        assert_one_line_error(in_place, EXIT_FAILURE, str(image), "changed while it was read",
                              "nothing was recorded", "--snapshot reflink|lvm")
        assert [r.id for r in repo.list_snapshots()] == [record.id]
        assert not warning_lines(result)
    finally:
        image.unlink()


def test_auto_picks_the_clone_where_the_filesystem_can(repo: Repository, reflink_folder: Path):
    image = write_image(reflink_folder / "auto.img", 2 * 1024 * 1024, "random", seed=3)
    try:
        run_cli("backup", "-r", str(repo.root), str(image), check=True)
        assert repo.list_snapshots()[0].consistency == "reflink"
        info = run_cli("info", "-r", str(repo.root), "auto.img", check=True).stdout.decode()
        assert "held still   read from a reflink clone made at the start" in info
    finally:
        image.unlink()


def test_killed_backup_leaves_no_clone_behind(repo: Repository, reflink_folder: Path):
    folder = reflink_folder / "killed"
    folder.mkdir()
    image = write_image(folder / "vm1.img", 96 * 1024 * 1024, "random", seed=4)
    try:
        backup = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r",
                                   str(repo.root), str(image), "--snapshot", "reflink"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            clone = wait_for_unnamed_file(backup.pid, folder)
        finally:
            backup.send_signal(signal.SIGKILL)
            backup.wait()
        assert clone is not None, "the backup ended before its clone was seen"
        assert sorted(os.listdir(folder)) == ["vm1.img"]
        assert not repo.list_snapshots()
    finally:
        image.unlink()
        folder.rmdir()


def wait_for_unnamed_file(pid: int, folder: Path) -> str | None:
    """The clone the backup holds open: O_TMPFILE files show as '<folder>/#<inode>
    (deleted)' under /proc; None if the backup ended first."""
    while not _ended(pid):  # bounded: the backup either opens its clone or ends
        try:
            entries = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):
            return None  # it ended while listed
        for entry in entries:
            try:
                target = os.readlink(entry)
            except FileNotFoundError:
                continue  # closed while listed
            if target.startswith(f"{folder}/#") and target.endswith("(deleted)"):
                return target
    return None


def warning_lines(result) -> list[str]:
    """What a backup said on stderr beyond the line that names a new series."""
    return [line for line in result.stderr.decode().splitlines()
            if not line.startswith("new series ")]


def _ended(pid: int) -> bool:
    """A zombie (not yet waited for) counts as ended."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(") ", 1)[1][0] in "ZX"


def test_reflink_refused_on_a_filesystem_that_cannot(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=5)
    probe = run_cli("backup", "-r", str(repo.root), str(image), "--json", check=True)
    if repo.list_snapshots()[0].consistency == "reflink":
        pytest.skip(f"{tmp_path} is on a filesystem that makes reflink clones")
    assert not warning_lines(probe)
    assert repo.list_snapshots()[0].consistency == "checked"
    result = run_cli("backup", "-r", str(repo.root), str(image), "--snapshot", "reflink")
    assert_one_line_error(result, EXIT_BAD_INPUT, str(image), "cannot be cloned",
                          "--snapshot none")
    assert len(repo.list_snapshots()) == 1
