"""Bad input through the real command line (a subprocess, not click's test runner): one
line on stderr starting with ``diskvault: error:``, no traceback, a distinct exit code
(2 bad input, 1 damage or a failure to look at, 73 locked, 74 disk full), nothing lost;
``--debug`` shows the traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ..conftest import run_cli, write_image

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
DEADLINE_S = 30.0


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int,
                          *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    assert result.returncode == exit_code, f"exit code {result.returncode}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("diskvault: error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "disk.img", 256 * 1024, "random", seed=5)


# -- the repository --------------------------------------------------------------------
def test_missing_repository_is_bad_input_and_is_not_created(tmp_path: Path):
    missing = tmp_path / "nowhere"
    for args in (["list"], ["backup", str(tmp_path)], ["restore", "latest", "x.img"],
                 ["cat", "latest"], ["info"], ["break-lock"]):
        result = run_cli(args[0], "-r", str(missing), *args[1:])
        assert_one_line_error(result, EXIT_BAD_INPUT, str(missing), "diskvault init")
    assert not missing.exists()


def test_no_repository_given_is_bad_input(tmp_path: Path):
    result = run_cli("list", env={"DISKVAULT_REPO": ""})
    assert_one_line_error(result, EXIT_BAD_INPUT, "-r", "DISKVAULT_REPO")


def test_folder_that_is_not_a_repository_is_bad_input_and_left_untouched(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8 not a repository")
    result = run_cli("list", "-r", str(folder))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(folder), "not a diskvault repository")
    assert [p.name for p in folder.iterdir()] == ["cat.jpg"], "opening it created files"


def test_file_given_as_repository_is_bad_input(tmp_path: Path, image: Path):
    result = run_cli("list", "-r", str(image))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(image))


def test_unknown_format_version_is_refused_naming_the_version(repo: Repository):
    config = json.loads((repo.root / "config").read_text())
    config["version"] = 99
    (repo.root / "config").write_text(json.dumps(config))
    for args in (["list"], ["backup", str(repo.root / "config")]):
        result = run_cli(args[0], "-r", str(repo.root), *args[1:])
        assert_one_line_error(result, EXIT_BAD_INPUT, "version 99", "upgrade")


def test_init_on_a_non_empty_folder_is_refused_and_the_folder_left_alone(tmp_path: Path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    result = run_cli("init", "-r", str(folder))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(folder), "not an empty folder")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_init_on_an_existing_repository_is_refused(repo: Repository):
    result = run_cli("init", "-r", str(repo.root))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(repo.root))


# -- the source ------------------------------------------------------------------------
def test_missing_source_is_bad_input(repo: Repository, tmp_path: Path):
    missing = tmp_path / "no-such.img"
    result = run_cli("backup", "-r", str(repo.root), str(missing))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(missing), "does not exist")
    assert not repo.list_snapshots()


def test_directory_as_source_is_bad_input(repo: Repository, tmp_path: Path):
    result = run_cli("backup", "-r", str(repo.root), str(tmp_path))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(tmp_path), "directory")


def without_read_override() -> list[str]:
    """A command prefix that runs without the capabilities that let root read anything."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root reads any file and setpriv (util-linux), needed to drop "
                    "CAP_DAC_OVERRIDE for the test, is not installed")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]


def test_unreadable_source_is_bad_input(repo: Repository, image: Path):
    image.chmod(0)
    result = subprocess.run([*without_read_override(), sys.executable, "-m", "diskvault",
                             "backup", "-r", str(repo.root), str(image)],
                            capture_output=True, timeout=DEADLINE_S)
    assert_one_line_error(result, EXIT_BAD_INPUT, str(image), "not readable")


def test_fifo_as_source_is_refused_without_hanging(repo: Repository, tmp_path: Path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r",
                                str(repo.root), str(fifo)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("backup of a FIFO hangs (opening a FIFO for reading blocks until a "
                    "writer opens it) instead of refusing it")
    assert_one_line_error(subprocess.CompletedProcess(process.args, process.returncode,
                                                      stdout, stderr),
                          EXIT_BAD_INPUT, str(fifo), "neither a regular file nor a block device")


# Appends a page every millisecond for as long as it runs; says "growing" after the first.
APPENDER_SCRIPT = """
import sys, time
with open(sys.argv[1], "ab", buffering=0) as handle:
    for count in range(60_000):
        handle.write(b"x" * 4096)
        if count == 0:
            print("growing", flush=True)
        time.sleep(0.001)
"""


def test_source_growing_while_read_fails_and_records_nothing(repo: Repository, tmp_path: Path):
    source = write_image(tmp_path / "live.img", 8 * 1024 * 1024, "random", seed=6)
    appender = subprocess.Popen([sys.executable, "-c", APPENDER_SCRIPT, str(source)],
                                stdout=subprocess.PIPE)
    try:
        assert appender.stdout.readline() == b"growing\n"
        # In place: on XFS or btrfs the default would read a clone, which does not grow.
        result = run_cli("backup", "-r", str(repo.root), str(source), "--snapshot", "none")
    finally:
        appender.kill()
        appender.wait()
        appender.stdout.close()
    assert_one_line_error(result, EXIT_FAILURE, str(source), "changed while it was read",
                          "nothing was recorded")
    assert not repo.list_snapshots()
    assert not repo.storage.packs.list_unfinished()
    assert not (repo.root / "lock").exists() and not [*(repo.root / "writers").iterdir()]


# -- snapshots and targets -------------------------------------------------------------
def test_unknown_snapshot_is_bad_input(repo: Repository, image: Path, tmp_path: Path):
    repo.backup(image)
    for args in (["restore", "feedface", str(tmp_path / "out.img")], ["cat", "feedface"],
                 ["info", "feedface"], ["diff", "latest", "feedface"]):
        result = run_cli(args[0], "-r", str(repo.root), *args[1:])
        assert_one_line_error(result, EXIT_BAD_INPUT, "'feedface'", "diskvault list")
    assert not (tmp_path / "out.img").exists()


def test_snapshot_selector_on_an_empty_repository_is_bad_input(repo: Repository):
    result = run_cli("cat", "-r", str(repo.root), "latest")
    assert_one_line_error(result, EXIT_BAD_INPUT, "no snapshots")


def test_ambiguous_snapshot_prefix_is_bad_input_listing_the_matches(repo: Repository,
                                                                    image: Path):
    # Two snapshots whose ids share the prefix "abcd" (ids are random: rename them).
    store = repo.storage.snapshots  # removals through it are this host's own
    for suffix in ("000000000001", "000000000002"):
        record = repo.backup(image)
        store.delete(record.id)
        record.id = f"abcd{suffix}"
        store.save(record)
    result = run_cli("restore", "-r", str(repo.root), "abcd", "out.img")
    assert_one_line_error(result, EXIT_BAD_INPUT, "'abcd'", "ambiguous", "abcd0000")
    result = run_cli("cat", "-r", str(repo.root), "abcd00000000000")
    assert_one_line_error(result, EXIT_BAD_INPUT, "ambiguous")
    result = run_cli("cat", "-r", str(repo.root), "abcd000000000002")
    assert result.returncode == 0 and result.stdout == image.read_bytes()


def test_existing_restore_target_without_force_is_refused_and_kept(repo: Repository,
                                                                    image: Path, tmp_path: Path):
    repo.backup(image)
    target = tmp_path / "precious.img"
    target.write_bytes(b"do not overwrite\n")
    result = run_cli("restore", "-r", str(repo.root), "latest", str(target))
    assert_one_line_error(result, EXIT_BAD_INPUT, str(target), "--force")
    assert target.read_bytes() == b"do not overwrite\n"
    forced = run_cli("restore", "-r", str(repo.root), "latest", str(target), "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert target.read_bytes() == image.read_bytes()


def test_restore_into_a_missing_folder_is_bad_input(repo: Repository, image: Path,
                                                    tmp_path: Path):
    repo.backup(image)
    target = tmp_path / "no" / "such" / "folder" / "out.img"
    result = run_cli("restore", "-r", str(repo.root), "latest", str(target))
    assert_one_line_error(result, EXIT_BAD_INPUT, "does not exist")


# -- --debug and DISKVAULT_REPO --------------------------------------------------------
def test_debug_shows_the_traceback(tmp_path: Path):
    result = run_cli("--debug", "list", "-r", str(tmp_path / "nowhere"))
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in stderr
    assert "RepositoryNotFound" in stderr


def test_diskvault_repo_environment_variable_works_in_place_of_r(tmp_path: Path, image: Path):
    env = {"DISKVAULT_REPO": str(tmp_path / "repo")}
    for args in (["init", "--chunk-size", "4096"], ["backup", str(image), "--name", "vm"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr.decode()
    listing = run_cli("list", "--json", env=env)
    assert listing.returncode == 0, listing.stderr.decode()
    assert [s["name"] for s in json.loads(listing.stdout)] == ["vm"]
    target = tmp_path / "restored.img"
    restored = run_cli("restore", "vm", str(target), env=env)
    assert restored.returncode == 0, restored.stderr.decode()
    assert target.read_bytes() == image.read_bytes()
    cat = run_cli("cat", "latest", env=env)
    assert cat.returncode == 0 and cat.stdout == image.read_bytes()
    # -r wins over the environment.
    other = run_cli("list", "-r", str(tmp_path / "nowhere"), env=env)
    assert_one_line_error(other, EXIT_BAD_INPUT, "nowhere")
