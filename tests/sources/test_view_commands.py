"""--pre-command and --post-command around the instant the view is made: pre's writes are in
the snapshot and post's are not; a failing or hung command fails the backup with one line,
and post runs on every way out once pre has started."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ..cli.test_errors import EXIT_FAILURE, assert_one_line_error
from ..conftest import run_cli, write_image

# Writes DISKVAULT_EVENT (padded to 8 bytes) at the start of the file named by
# DISKVAULT_SOURCE: what a command did shows in the image, and when it ran.
MARK_SCRIPT = r"""
import os
fd = os.open(os.environ["DISKVAULT_SOURCE"], os.O_WRONLY)
os.pwrite(fd, os.environ["DISKVAULT_EVENT"].encode().ljust(8), 0)
os.close(fd)
"""


@pytest.fixture
def mark(tmp_path: Path) -> str:
    """The command that marks the source with the event it ran for."""
    script = tmp_path / "mark.py"
    script.write_text(MARK_SCRIPT)
    return f"{sys.executable} {script}"


def first_bytes(repo: Repository, record) -> bytes:
    out = io.BytesIO()
    repo.cat(record, out)
    return out.getvalue()[:8]


def backup(repo: Repository, image: Path, *options: str):
    return run_cli("backup", "-r", str(repo.root), str(image), *options)


def test_pre_runs_before_the_clone_and_post_after_it(repo: Repository, reflink_folder: Path,
                                                     mark: str):
    image = write_image(reflink_folder / "marked.img", 1024 * 1024, "random", seed=1)
    try:
        result = backup(repo, image, "--snapshot", "reflink", "--pre-command", mark,
                        "--post-command", mark)
        assert result.returncode == 0, result.stderr
        [record] = repo.list_snapshots()
        assert record.consistency == "reflink"
        assert first_bytes(repo, record) == b"pre     "
        assert image.read_bytes()[:8] == b"post    "
    finally:
        image.unlink()


def test_post_runs_after_a_read_in_place(repo: Repository, tmp_path: Path, mark: str):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=2)
    result = backup(repo, image, "--snapshot", "none", "--pre-command", mark,
                    "--post-command", mark)
    assert result.returncode == 0, result.stderr
    [record] = repo.list_snapshots()
    assert record.consistency == "checked"
    assert first_bytes(repo, record) == b"pre     "
    assert image.read_bytes()[:8] == b"post    "


def test_failing_pre_command_reads_nothing_and_post_still_runs(repo: Repository,
                                                               tmp_path: Path, mark: str):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=3)
    result = backup(repo, image, "--pre-command", "false", "--post-command", mark)
    assert_one_line_error(result, EXIT_FAILURE, "the --pre-command failed (false exited with "
                          "code 1)", "nothing was read or recorded")
    assert image.read_bytes()[:8] == b"post    "
    assert not repo.list_snapshots()


def test_hung_pre_command_is_stopped_and_post_still_runs(repo: Repository, tmp_path: Path,
                                                         mark: str):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=4)
    result = backup(repo, image, "--pre-command", "sleep 600", "--post-command", mark,
                    "--command-timeout", "0.5")
    assert_one_line_error(result, EXIT_FAILURE, "sleep was stopped after 0.5 s")
    assert image.read_bytes()[:8] == b"post    "
    assert not repo.list_snapshots()


def test_failing_post_command_after_a_clone_records_nothing(repo: Repository,
                                                            reflink_folder: Path):
    image = write_image(reflink_folder / "post.img", 1024 * 1024, "random", seed=5)
    try:
        result = backup(repo, image, "--snapshot", "reflink", "--post-command", "false")
        assert_one_line_error(result, EXIT_FAILURE, "the --post-command failed",
                              "nothing was recorded")
        assert not repo.list_snapshots()
    finally:
        image.unlink()


def test_failing_post_command_after_a_read_in_place_says_it_was_recorded(
        repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=6)
    result = backup(repo, image, "--snapshot", "none", "--post-command", "false")
    assert_one_line_error(result, EXIT_FAILURE, "the --post-command failed",
                          "the snapshot was recorded")
    assert len(repo.list_snapshots()) == 1


def test_command_output_goes_to_stderr_so_json_stays_whole(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=7)
    result = backup(repo, image, "--json", "--pre-command", "echo frozen")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["consistency"] in ("checked", "reflink")
    assert result.stderr.decode().splitlines()[0] == "frozen"  # then the new series' line


def test_view_options_are_refused_for_standard_input(repo: Repository):
    result = run_cli("backup", "-r", str(repo.root), "-", "--name", "piped",
                     "--pre-command", "true", input=b"x")
    assert result.returncode == 2
    assert b"not standard input" in result.stderr
