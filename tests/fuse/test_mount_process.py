"""The background mount is the process the user started, forked once: no second
interpreter, the key unlocked once and kept in memory."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.errors import MountFailed
from diskvault.fuse.daemon import fork_mount_process
from diskvault.fuse.mounttable import find_mount
from diskvault.store.format.config import REPOKEY_MODE

from ..conftest import TEST_PASSPHRASE, run_cli
from .conftest import DEADLINE_S, require_fuse, unmount, wait_for


@pytest.fixture
def encryption() -> str:
    return REPOKEY_MODE


def mount_pid(mountpoint: Path) -> int:
    return int(re.search(r"\(pid (\d+)\)", Path(f"{mountpoint}.log").read_text()).group(1))


def test_the_mount_is_served_by_a_fork_of_the_mount_command_not_a_second_interpreter(
        repo, make_image, mounted):
    image = make_image(1 << 20, "random", name="vm1.img")
    repo.backup(image, name="vm1")
    mountpoint = mounted(repo)
    command_line = Path(f"/proc/{mount_pid(mountpoint)}/cmdline").read_bytes().split(b"\0")
    assert command_line[:-1] == [os.fsencode(part) for part in (
        sys.executable, "-m", "diskvault", "mount", "-r", str(repo.root), str(mountpoint),
        "--log-file", f"{mountpoint}.log")]
    assert (mountpoint / "vm1" / "latest" / "vm1.img").read_bytes() == image.read_bytes()


def test_an_encrypted_mount_asks_for_the_passphrase_once(repo, make_image, mounted,
                                                         tmp_path, monkeypatch):
    """The parent unlocks the key; the child that serves reopens the repository with it."""
    image = make_image(1 << 20, "random", name="vm1.img")
    repo.backup(image, name="vm1")
    asked = tmp_path / "asked"
    monkeypatch.setenv("DISKVAULT_PASSWORD", "")  # empty: not set, so the command is used
    monkeypatch.setenv("DISKVAULT_PASSWORD_COMMAND",
                       f"sh -c 'echo asked >> {asked}; echo \"{TEST_PASSPHRASE}\"'")
    mountpoint = mounted(repo)
    assert (mountpoint / "vm1" / "latest" / "vm1.img").read_bytes() == image.read_bytes()
    assert asked.read_text() == "asked\n"


def test_a_failure_in_the_forked_child_reaches_the_parent_as_its_message_and_exit_code(
        tmp_path):
    """What the child says on stderr before the mount is live is the parent's error."""
    with pytest.raises(MountFailed) as failure:
        if fork_mount_process(str(tmp_path), timeout_s=DEADLINE_S):
            os.write(2, b"diskvault: error: libfuse could not mount it\n")
            os._exit(3)
    assert str(failure.value) == "libfuse could not mount it"
    assert failure.value.exit_code == 3


def test_a_foreground_mount_shows_no_passphrase_in_proc_environ(repo, make_image, tmp_path):
    """--foreground serves in the process the user started, for days: the passphrase
    variable is read, then erased from the environment the kernel shows."""
    require_fuse()
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "diskvault", "mount", "-r",
                                str(repo.root), str(mountpoint), "--foreground"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: find_mount(str(mountpoint)) or process.poll() is not None,
                 "the foreground mount")
        assert process.poll() is None, "the foreground mount ended"
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        assert TEST_PASSPHRASE.encode() not in environ
        assert b"DISKVAULT_PASSWORD=\0" in environ or b"DISKVAULT_PASSWORD" not in environ
    finally:
        unmount(mountpoint)
        process.wait(timeout=DEADLINE_S)


def test_the_log_file_is_private_and_never_written_through_a_link(repo, make_image, mounted,
                                                                   tmp_path):
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = mounted(repo)
    assert stat.S_IMODE(Path(f"{mountpoint}.log").stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (tmp_path / "linked.log").symlink_to(victim)
    second = tmp_path / "second"
    second.mkdir()
    result = run_cli("mount", "-r", str(repo.root), str(second), "--log-file",
                     str(tmp_path / "linked.log"))
    try:
        assert victim.read_text() == "untouched\n"
    finally:
        unmount(second)
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"symbolic links" in result.stderr and b"linked.log" in result.stderr
