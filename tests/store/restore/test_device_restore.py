"""Restore onto a block device: refused while the device, or a partition of it, is mounted or
held by another device; done when it is free. Real loop devices, real ext4 mounts, a real
device-mapper target."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ...conftest import run_cli, write_image

MiB = 1024 * 1024
EXIT_BAD_INPUT = 2


@pytest.fixture
def loop_device() -> Iterator[Callable[..., Path]]:
    """loop_device(backing_file, partitions=False) attaches a loop device; detached (and
    anything mounted from it unmounted) on teardown."""
    if os.geteuid() != 0:
        pytest.skip("attaching loop devices needs root")
    if not shutil.which("losetup"):
        pytest.skip("losetup is not installed (apt-get install mount)")
    attached: list[Path] = []

    def attach(backing: Path, partitions: bool = False) -> Path:
        result = subprocess.run(["losetup", "--find", "--show", *(["-P"] if partitions else []),
                                 str(backing)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"no loop device available here: {result.stderr.strip()}")
        device = Path(result.stdout.strip())
        attached.append(device)
        return device

    yield attach
    for device in reversed(attached):
        subprocess.run(["losetup", "-d", str(device)], capture_output=True)


@pytest.fixture
def mounted_on() -> Iterator[Callable[[Path, Path], None]]:
    folders: list[Path] = []

    def mount(device: Path, folder: Path) -> None:
        folder.mkdir()
        subprocess.run(["mount", str(device), str(folder)], check=True)
        folders.append(folder)

    yield mount
    for folder in reversed(folders):
        subprocess.run(["umount", str(folder)], capture_output=True)


def make_ext4(device: Path) -> None:
    # No lazy initialisation: a mounted, idle ext4 then writes nothing in the background.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(device)], check=True, capture_output=True)


def sha256_of(path: Path, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(size)).hexdigest()


def snapshot_of(tmp_path: Path, size: int) -> tuple[Path, str, Path]:
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), check=True)
    image = write_image(tmp_path / "snap.img", size, "random", seed=5)
    done = run_cli("backup", "-r", str(repo), str(image), "--json", "--no-progress", check=True)
    return repo, json.loads(done.stdout)["id"], image


def test_restore_onto_a_mounted_device_is_refused_and_leaves_it_unchanged(
        tmp_path: Path, loop_device, mounted_on):
    device = loop_device(write_image(tmp_path / "disk", 16 * MiB, "zeros"))
    make_ext4(device)
    mounted_on(device, tmp_path / "mnt")
    repo, snapshot, _ = snapshot_of(tmp_path, 16 * MiB)
    before = sha256_of(device, 16 * MiB)

    result = run_cli("restore", "-r", str(repo), snapshot, str(device), "--force")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert f"{device} is mounted at {tmp_path / 'mnt'}" in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert sha256_of(device, 16 * MiB) == before


def test_restore_onto_a_disk_whose_partition_is_mounted_is_refused(
        tmp_path: Path, loop_device, mounted_on):
    disk = write_image(tmp_path / "disk", 16 * MiB, "zeros")
    subprocess.run(["sfdisk", "-q", str(disk)], input=b"label: gpt\n,\n", check=True)
    device = loop_device(disk, partitions=True)
    partition = Path(f"{device}p1")
    if not partition.exists():
        pytest.skip(f"the kernel made no partition device {partition} for the loop device")
    make_ext4(partition)
    mounted_on(partition, tmp_path / "mnt")
    repo, snapshot, _ = snapshot_of(tmp_path, 8 * MiB)
    before = sha256_of(device, 16 * MiB)

    result = run_cli("restore", "-r", str(repo), snapshot, str(device), "--force")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert f"{partition} is mounted at {tmp_path / 'mnt'}" in result.stderr.decode()
    assert sha256_of(device, 16 * MiB) == before


def test_restore_onto_a_device_held_by_device_mapper_is_refused(tmp_path: Path, loop_device):
    if not shutil.which("dmsetup"):
        pytest.skip("dmsetup is not installed (apt-get install dmsetup)")
    device = loop_device(write_image(tmp_path / "disk", 8 * MiB, "zeros"))
    name = f"diskvault-test-{os.getpid()}"
    table = f"0 {8 * MiB // 512} linear {device} 0"
    made = subprocess.run(["dmsetup", "create", name, "--table", table], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"device mapper is not usable here: {made.stderr.splitlines()[0]}")
    try:
        repo, snapshot, _ = snapshot_of(tmp_path, 8 * MiB)
        result = run_cli("restore", "-r", str(repo), snapshot, str(device), "--force")
    finally:
        subprocess.run(["dmsetup", "remove", name], capture_output=True)

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert f"{device} is held by dm-" in result.stderr.decode()
    assert sha256_of(device, 8 * MiB) == hashlib.sha256(bytes(8 * MiB)).hexdigest()


def test_restore_onto_a_device_used_as_swap_is_refused(tmp_path: Path, loop_device):
    device = loop_device(write_image(tmp_path / "disk", 16 * MiB, "zeros"))
    subprocess.run(["mkswap", "-q", str(device)], check=True, capture_output=True)
    swapped = subprocess.run(["swapon", str(device)], capture_output=True, text=True)
    if swapped.returncode != 0:
        pytest.skip(f"swapon is not allowed here: {swapped.stderr.strip()}")
    try:
        before = sha256_of(device, 16 * MiB)
        repo, snapshot, _ = snapshot_of(tmp_path, 8 * MiB)
        result = run_cli("restore", "-r", str(repo), snapshot, str(device), "--force")
        after = sha256_of(device, 16 * MiB)
    finally:
        subprocess.run(["swapoff", str(device)], capture_output=True)

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert f"{device} is used as swap" in result.stderr.decode()
    assert after == before


def test_restore_onto_an_unused_device_through_a_link_writes_every_byte(
        tmp_path: Path, loop_device):
    device = loop_device(write_image(tmp_path / "disk", 16 * MiB, "random", seed=9))
    by_id = tmp_path / "by-id-link"
    by_id.symlink_to(device)  # as /dev/disk/by-id/... names a device
    repo, snapshot, image = snapshot_of(tmp_path, 16 * MiB)

    result = run_cli("restore", "-r", str(repo), snapshot, str(by_id), "--force")

    assert result.returncode == 0, result.stderr.decode()
    assert sha256_of(device, 16 * MiB) == sha256_of(image, 16 * MiB)
    assert by_id.is_symlink()
