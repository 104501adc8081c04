"""The background mount is the process the user started, forked once: no second
interpreter, the key unlocked once and kept in memory."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from diskvault.errors import MountFailed
from diskvault.fuse.daemon import fork_mount_process
from diskvault.store.config import REPOKEY_MODE

from ..conftest import TEST_PASSPHRASE
from .conftest import DEADLINE_S


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
