"""Backups through an LVM snapshot, on a real volume group over a loop device, with a writer
that never pauses: the snapshot is the volume at one instant, and a killed run's snapshot
is removed by the next run. Skipped where device-mapper cannot be used (the reason says
why)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.sources.lvm import SNAPSHOT_TAG
from diskvault.store.repository import Repository

from ..cli.test_errors import EXIT_BAD_INPUT, assert_one_line_error
from ..conftest import run_cli, write_image
from ..fsimages import loop_device, require_root, require_tool, run
from .conftest import Writer, generations, is_one_instant, write_generations

VOLUME_BLOCKS = 8192  # a 32 MiB logical volume
GROUP_FILE_BYTES = 128 * 1024 * 1024


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """/dev/<group>/vm1, a 32 MiB logical volume in a volume group made on a loop device."""
    require_root("making a volume group")
    require_tool("lvcreate")
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR))
    except OSError as error:
        pytest.skip(f"device-mapper is unusable here: /dev/mapper/control: {error.strerror}")
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as handle:
        handle.truncate(GROUP_FILE_BYTES)
    group = f"dvtest{os.getpid()}"
    with loop_device(backing) as device:
        run("pvcreate", "-q", device)
        run("vgcreate", "-q", group, device)
        try:
            run("lvcreate", "-q", "--size", "32M", "--name", "vm1", group)
            yield Path("/dev") / group / "vm1"
        finally:
            run("vgremove", "-q", "--force", group)
            run("pvremove", "-q", device)


def tagged_snapshots(volume: Path) -> list[str]:
    listing = subprocess.run(["lvs", "--noheadings", "-o", "lv_name,lv_tags",
                              volume.parent.name], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if SNAPSHOT_TAG in line]


def image_of(repo: Repository, record) -> bytes:
    out = io.BytesIO()
    repo.cat(record, out)
    return out.getvalue()


def test_lvm_snapshot_is_the_volume_at_one_instant(repo: Repository, volume: Path):
    write_generations(volume, VOLUME_BLOCKS)
    with Writer(volume, VOLUME_BLOCKS) as writer:
        run_cli("backup", "-r", str(repo.root), str(volume), "--snapshot-size", "100%ORIGIN",
                check=True)  # auto: a logical volume gets an LVM snapshot
        assert writer.still_writing()
    [record] = repo.list_snapshots()
    assert record.consistency == "lvm"
    found = generations(image_of(repo, record))
    assert len(found) == VOLUME_BLOCKS and is_one_instant(found), found
    assert not tagged_snapshots(volume)


def test_killed_run_snapshot_is_removed_by_the_next(repo: Repository, volume: Path):
    write_generations(volume, VOLUME_BLOCKS)
    backup = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r",
                               str(repo.root), str(volume), "--snapshot", "lvm"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not tagged_snapshots(volume) and backup.poll() is None:
            pass  # bounded: the backup makes its snapshot or ends
    finally:
        backup.send_signal(signal.SIGKILL)
        backup.wait()
    leftovers = tagged_snapshots(volume)
    if not leftovers:
        pytest.fail("the backup ended before its snapshot was seen")
    run_cli("backup", "-r", str(repo.root), str(volume), "--snapshot", "lvm", check=True)
    assert not tagged_snapshots(volume)
    assert [r.consistency for r in repo.list_snapshots()] == ["lvm"]


def test_lvm_refused_for_a_file(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "plain.img", 1024 * 1024, "random", seed=1)
    result = run_cli("backup", "-r", str(repo.root), str(image), "--snapshot", "lvm")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--snapshot lvm snapshots logical volumes",
                          str(image), "--snapshot none")


def test_lvm_refused_for_a_device_that_is_no_logical_volume(repo: Repository, tmp_path: Path):
    image = write_image(tmp_path / "disk.img", 1024 * 1024, "random", seed=2)
    with loop_device(image) as device:
        result = run_cli("backup", "-r", str(repo.root), device, "--name", "disk",
                         "--snapshot", "lvm")
    assert_one_line_error(result, EXIT_BAD_INPUT, f"{device} is not an LVM logical volume")
