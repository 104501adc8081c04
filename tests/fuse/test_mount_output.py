"""What mount and umount print: --json for scripts, and on a machine without syslog the
log kept in the user's state folder, said in the mount's line, not warned about."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diskvault.fuse.logs import syslog_available

from ..conftest import run_cli
from .conftest import require_fuse, unmount_for_good


@pytest.fixture
def snapshot(repo, make_image):
    return repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")


def test_mount_and_umount_report_in_json(repo, snapshot, tmp_path):
    require_fuse()
    mountpoint, log = tmp_path / "mnt", tmp_path / "mount.log"
    mountpoint.mkdir()
    result = run_cli("mount", "-r", str(repo.root), str(mountpoint), snapshot.short_id,
                     "--log-file", str(log), "--json", check=True)
    try:
        assert json.loads(result.stdout) == {"mountpoint": str(mountpoint),
                                             "snapshot": snapshot.id, "log": str(log)}
        unmounted = run_cli("umount", str(mountpoint), "--json", check=True)
        assert json.loads(unmounted.stdout) == {"mountpoint": str(mountpoint),
                                                "unmounted": True}
    finally:
        unmount_for_good(mountpoint, repo.root)


def test_without_syslog_the_mount_logs_in_the_state_folder_and_says_where(repo, snapshot,
                                                                          tmp_path):
    require_fuse()
    if syslog_available():
        pytest.skip("this machine has syslog (/dev/log): the mount logs there")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_cli("mount", "-r", str(repo.root), str(mountpoint), check=True)
    try:
        log = Path(os.environ["XDG_STATE_HOME"]) / "diskvault" / "mount.log"
        stderr = result.stderr.decode()
        assert "warning" not in stderr and f"its log is {log}" in stderr
        assert f"mounted at {mountpoint}" in log.read_text()
        assert log.parent.stat().st_mode & 0o777 == 0o700
    finally:
        unmount_for_good(mountpoint, repo.root)
