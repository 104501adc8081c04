"""A foreground mount ends cleanly on the signals that stop it: Ctrl-C, a service manager's
SIGTERM. libfuse 3 reports a loop ended by a signal as an error, which is not one here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from diskvault.fuse.mounttable import find_mount

from .conftest import DEADLINE_S, require_fuse, unmount, wait_for


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_foreground_mount_stopped_by_a_signal_unmounts_and_exits_cleanly(
        repo, make_image, tmp_path, stop):
    require_fuse()
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    serving = subprocess.Popen([sys.executable, "-m", "diskvault", "mount", "-r",
                                str(repo.root), str(mountpoint), "--foreground"],
                               stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Listed: the kernel has initialised the mount (a listing goes through its process).
        wait_for(lambda: find_mount(str(mountpoint)) and os.listdir(mountpoint),
                 "the foreground mount to come up")
        serving.send_signal(stop)
        _, stderr = serving.communicate(timeout=DEADLINE_S)
        assert serving.returncode == 0, stderr.decode()
        assert "error" not in stderr.decode()
        assert find_mount(str(mountpoint)) is None
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()
        unmount(mountpoint)
