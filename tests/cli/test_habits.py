"""What borg and restic users type by habit, through the real command line: their command
names answered with ours, a version command, sizes with units, --json on the commands that
report, progress without terminal codes in a file, a word when a backup starts a series,
a missing S3 client named with the extra to install, and no library chatter."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from diskvault.cli.options.sizes import parse_size
from diskvault.fuse.logs import configure_logging

from ..conftest import run_cli, write_image
from .test_errors import EXIT_BAD_INPUT, assert_one_line_error


def usage_error(result: subprocess.CompletedProcess) -> str:
    """The last line of a click usage error, after checking its exit code."""
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    return result.stderr.decode().strip().splitlines()[-1]


# -- command names ---------------------------------------------------------------------
@pytest.mark.parametrize("typed, answer", [
    ("snapshots", "diskvault calls it list"),
    ("forget", "delete (named snapshots) or prune (--keep-* rules)"),
    ("extract", "restore (the whole image) or pull"),
    ("lst", "Did you mean list"), ("prnue", "Did you mean prune"),
    ("frobnicate", "'diskvault --help' lists the commands")])
def test_an_unknown_command_is_answered_with_the_command_to_use(typed, answer):
    line = usage_error(run_cli(typed))
    assert f"No such command '{typed}'" in line and answer in line


@pytest.mark.parametrize("argv", [["version"], ["-V"], ["--version"]])
def test_version_is_a_command_and_an_option(argv):
    result = run_cli(*argv, check=True)
    assert result.stdout.decode().startswith("diskvault, version ")


# -- sizes -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [
    ("65536", 65536), ("64K", 65536), ("64k", 65536), ("64KiB", 65536), ("1M", 1 << 20),
    ("2GiB", 2 << 30), ("1.5G", 3 << 29), ("100MB", 100_000_000), ("4 KB", 4000)])
def test_sizes_take_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "64x", "1.3", "64Ki", "ten"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_init_takes_the_chunk_size_with_a_unit(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, "--chunk-size", "8K", "--encryption", "none", check=True)
    info = json.loads(run_cli("info", "-r", repo, "--json", check=True).stdout)
    assert info["repository"]["chunker"]["avg_bytes"] == 8192
    assert_one_line_error(run_cli("init", "-r", str(tmp_path / "other"), "--chunk-size", "8X"),
                          EXIT_BAD_INPUT, "--chunk-size 8X", "64K")


@pytest.fixture
def plain_repo(tmp_path) -> str:
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, "--chunk-size", "4096", "--encryption", "none", check=True)
    return repo


# -- backup's words --------------------------------------------------------------------
def test_progress_asked_for_into_a_file_has_no_terminal_codes(plain_repo, tmp_path):
    image = write_image(tmp_path / "vm1.img", 2_000_000, seed=3)
    result = run_cli("backup", "-r", plain_repo, str(image), "--name", "vm1", "--progress",
                     check=True)
    stderr = result.stderr.decode()
    assert "backup: " in stderr  # the progress, as plain lines
    assert "\r" not in stderr and "\x1b" not in stderr


def test_a_backup_that_starts_a_series_says_so_and_how_to_choose_its_name(plain_repo, tmp_path):
    image = write_image(tmp_path / "vm1.img", 100_000, seed=3)
    first = run_cli("backup", "-r", plain_repo, str(image), check=True).stderr.decode()
    assert "new series vm1.img: use --name to choose one" in first
    again = run_cli("backup", "-r", plain_repo, str(image), check=True).stderr.decode()
    assert "new series" not in again
    named = run_cli("backup", "-r", plain_repo, str(image), "--name", "web",
                    check=True).stderr.decode()
    assert "new series web\n" in named


# -- --json where it was missing -------------------------------------------------------
def test_key_commands_report_in_json(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, check=True)  # encrypted (the test passphrase)
    export = tmp_path / "key.txt"
    body = json.loads(run_cli("key", "export", "-r", repo, str(export), "--json",
                              check=True).stdout)
    assert body == {"repository": repo, "file": str(export), "exported": True}
    body = json.loads(run_cli("key", "import", "-r", repo, str(export), "--json",
                              check=True).stdout)
    assert body["imported"] is True
    body = json.loads(run_cli("key", "change-passphrase", "-r", repo, "--json", check=True,
                              env={"DISKVAULT_NEW_PASSWORD": "another one"}).stdout)
    assert body == {"repository": repo, "passphrase_changed": True}
    assert "--json" in usage_error(run_cli("key", "export", "-r", repo, "-", "--json"))


def test_demo_reports_in_json_and_tells_its_story_on_stderr(tmp_path):
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--json", check=True)
    body = json.loads(result.stdout)
    assert len(body["snapshots"]) == 4 and body["restore"]["bit_exact"] is True
    assert "$ diskvault backup" in result.stderr.decode()


# -- the object store's client ---------------------------------------------------------
def test_s3_without_botocore_names_the_extra_to_install(tmp_path):
    """As after `pip install diskvault` without [s3]: neither boto3 nor its botocore can be
    imported."""
    without_boto3 = ("import runpy, sys\nsys.modules['boto3'] = sys.modules['botocore'] = None\n"
                     "sys.argv[0] = 'diskvault'\nrunpy.run_module('diskvault', "
                     "run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", without_boto3, "list", "-r", "s3://b/p"],
                            capture_output=True, timeout=60)
    assert_one_line_error(result, EXIT_BAD_INPUT, "pip install 'diskvault[s3]'")


# -- quiet libraries -------------------------------------------------------------------
@pytest.fixture
def saved_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    own = logging.getLogger("diskvault").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("diskvault").setLevel(own)


@pytest.mark.parametrize("debug", [False, True])
def test_the_mount_logs_its_own_lines_and_the_libraries_only_with_debug(saved_logging, debug):
    configure_logging("/mnt/x", to_syslog=False, debug=debug)
    assert logging.getLogger("diskvault.fuse.serve").isEnabledFor(logging.INFO)
    # boto3 says "Found credentials in environment variables." at INFO on every start
    assert logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO) == debug


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_command_shows_a_library_warning_only_with_debug(tmp_path, debug):
    """A library that warns while a command runs (here a hook on the group's start)."""
    warns = ("import logging, runpy, sys\nimport diskvault.cli.main as m\n"
             "old = m.cli.callback\n"
             "def hooked(*a, **k):\n    old(*a, **k)\n"
             "    logging.getLogger('urllib3.connectionpool').warning('pool is full')\n"
             "    logging.getLogger('diskvault.x').warning('ours')\n"
             "m.cli.callback = hooked\nsys.argv[0] = 'diskvault'\n"
             "runpy.run_module('diskvault', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", warns, *debug, "list", "-r",
                             str(tmp_path / "nowhere")], capture_output=True, timeout=60)
    stderr = result.stderr.decode()
    assert "ours" in stderr
    assert ("pool is full" in stderr) == bool(debug)
