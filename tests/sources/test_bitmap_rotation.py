"""backup 'qmp+unix:///SOCKET?drive=NODE' --dirty-bitmap B against a real
qemu-storage-daemon (QEMU's block layer without a guest; its drive is a block node): the
point-in-time view starts the bitmap's rotation in its own instant, the bitmap is rotated
only once the snapshot is recorded, so a backup killed with SIGKILL loses no change; the
qcow2's persistent bitmap carries the changes across restarts of the daemon."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskvault.sources.running_guest import guest_key, run_folders
from diskvault.store.repository import Repository

from ..conftest import run_cli
from .storage_daemon import NODE, StorageDaemon, make_disk

DISK_BYTES = 16 << 20
WAIT_S = 60.0

pytest.importorskip("qemu.qmp", reason="qemu.qmp (a diskvault dependency) is not installed")


def backup_argv(repo: Path, daemon: StorageDaemon, bitmap: str = "B") -> list[str]:
    return ["backup", "-r", str(repo), f"qmp+unix://{daemon.qmp}?drive={NODE}", "--name",
            "vm", "--dirty-bitmap", bitmap, "--json"]


def folders(daemon: StorageDaemon) -> list[Path]:
    """The folders (overlay, socket) of the runs through the daemon's monitor."""
    return run_folders(guest_key(daemon.qmp))


def backup(repo: Path, daemon: StorageDaemon) -> dict:
    return json.loads(run_cli(*backup_argv(repo, daemon), check=True).stdout)


def marker(snapshot: dict) -> str:
    """The bitmap that tells which snapshot B counts from."""
    return f"B.diskvault-since-{snapshot['id']}"


def cat(repo: Path, snapshot_id: str) -> bytes:
    return run_cli("cat", "-r", str(repo), snapshot_id, check=True).stdout


def offline_change(daemon: StorageDaemon, offset: int, length: int, seed: int) -> None:
    """A write while the daemon is down, then the daemon started again: only the qcow2's
    persistent bitmap can carry it to the next backup."""
    daemon.stop()
    daemon.write_offline(offset, random.Random(seed).randbytes(length))
    daemon.start()


def test_nights_read_what_changed_and_the_bitmap_survives_restarts(cli_repo, tmp_path):
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path,
                       exported=None) as daemon:
        first = backup(cli_repo, daemon)
        assert first["stats"]["bytes_read"] == DISK_BYTES // 2
        offline_change(daemon, 3 << 20, 65536, seed=1)
        second = backup(cli_repo, daemon)
        offline_change(daemon, 9 << 20, 65536, seed=2)
        third = backup(cli_repo, daemon)
        daemon.stop()
        assert second["base_id"] == first["id"] and third["base_id"] == second["id"]
        # Each night reads its own change (and about a chunk around it), not the other's.
        for night in (second, third):
            assert 65536 <= night["stats"]["bytes_read"] < 2 * 65536
        assert cat(cli_repo, third["id"]) == daemon.image_offline()
        # B enabled, no successor left, and the marker of the snapshot B counts from.
        assert daemon.bitmaps_offline() == {"B": ["auto"], marker(third): []}


def test_after_the_latest_snapshot_is_deleted_the_next_backup_reads_in_full(cli_repo,
                                                                           tmp_path):
    """B counts from the deleted snapshot: building on the one before would miss the
    change made between them."""
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path,
                       exported=None) as daemon:
        backup(cli_repo, daemon)
        offline_change(daemon, 3 << 20, 65536, seed=1)
        deleted = backup(cli_repo, daemon)
        run_cli("delete", "-r", str(cli_repo), deleted["id"], check=True)
        offline_change(daemon, 9 << 20, 65536, seed=2)
        result = run_cli(*backup_argv(cli_repo, daemon), check=True)
        after = json.loads(result.stdout)
        daemon.stop()
        assert cat(cli_repo, after["id"]) == daemon.image_offline()
        assert f"dirty bitmap B counts the changes since snapshot {deleted['id'][:8]}" in \
            result.stderr.decode()
        assert "base_id" not in after and after["stats"]["bytes_read"] == DISK_BYTES // 2 + \
            65536  # the whole disk: its data and the change in the empty half


def test_a_backup_killed_before_its_record_loses_no_change(cli_repo, tmp_path):
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path,
                       exported=None) as daemon:
        first = backup(cli_repo, daemon)
        offline_change(daemon, 3 << 20, 65536, seed=1)
        # The repository's writer lock, held here, keeps the backup from recording: it is
        # killed once its view's instant has started the rotation, the view is exported
        # and the reader has asked for extents.
        with Repository.open(cli_repo, writer=True) as repository, \
                repository.writer_lock("the test"):
            replies = daemon.status_replies()
            killed = subprocess.Popen([sys.executable, "-m", "diskvault",
                                       *backup_argv(cli_repo, daemon), "--lock-wait", "600"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + WAIT_S
            while daemon.status_replies() == replies:
                assert killed.poll() is None, killed.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.01)
            second = run_cli(*backup_argv(cli_repo, daemon))  # one run per QEMU at a time
            assert second.returncode == 1 and "another diskvault backup through the QEMU " \
                "monitor at" in second.stderr.decode()
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            killed.stderr.close()
        daemon.stop()
        assert set(daemon.bitmaps_offline()) == {"B", "B.diskvault-next", marker(first)}
        assert folders(daemon)
        daemon.write_offline(9 << 20, random.Random(2).randbytes(65536))
        daemon.start()
        after = backup(cli_repo, daemon)
        daemon.stop()
        listed = json.loads(run_cli("list", "-r", str(cli_repo), "--json", check=True).stdout)
        assert [s["id"] for s in listed] == [first["id"], after["id"]]
        # Both changes are read: the one before the killed run and the one after it.
        assert after["base_id"] == first["id"]
        assert 2 * 65536 <= after["stats"]["bytes_read"] < 4 * 65536
        assert cat(cli_repo, after["id"]) == daemon.image_offline()
        assert daemon.bitmaps_offline() == {"B": ["auto"], marker(after): []}
        assert not folders(daemon)


def test_a_failed_backup_leaves_the_bitmap_as_it_was(cli_repo, tmp_path):
    """A QEMU already serving NBD cannot serve diskvault's export: the backup fails in one
    line after the rotation began, and the rotation is undone (merged back)."""
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path,
                       exported=()) as daemon:
        daemon.write(3 << 20, random.Random(1).randbytes(65536))
        result = run_cli(*backup_argv(cli_repo, daemon))
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 1 and len(lines) == 1, lines
        assert "cannot serve the point-in-time view" in lines[0]
        missing = run_cli(*backup_argv(cli_repo, daemon, bitmap="X"))
        assert missing.returncode == 2 and "QEMU has no dirty bitmap X" in \
            missing.stderr.decode()
        daemon.stop()
        assert daemon.bitmaps_offline() == {"B": ["auto"]}  # merged back, no marker yet
        assert json.loads(run_cli("list", "-r", str(cli_repo), "--json",
                                  check=True).stdout) == []


def test_a_storage_daemon_without_a_node_named_says_how_to_name_it(cli_repo, tmp_path):
    """qemu-storage-daemon has block nodes, no drives: the URI must name the node."""
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path,
                       exported=None) as daemon:
        result = run_cli("backup", "-r", str(cli_repo), f"qmp+unix://{daemon.qmp}",
                         "--name", "vm")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "has no drive with a disk in it (a qemu-storage-daemon's block node: name it " \
        "with ?drive=NODE)" in lines[0]
