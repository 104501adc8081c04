"""Restore targets: a new sparse file, an existing file (--force), a block device."""

from __future__ import annotations

import os
import subprocess

import pytest

from diskvault.errors import TargetExists

from ...conftest import in_both_modes

encryption = in_both_modes()


def allocated_bytes(path) -> int:
    return os.stat(path).st_blocks * 512


def test_restore_to_a_new_file_makes_holes_where_the_image_had_zeros(repo, tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.write(os.urandom(300_000))
        handle.write(bytes(8_000_000))
        handle.write(os.urandom(300_000))
    record = repo.backup(image)
    target = tmp_path / "out.img"
    repo.restore(record, target)
    assert target.read_bytes() == image.read_bytes()
    assert allocated_bytes(target) < 2_000_000 < allocated_bytes(image)


def test_restore_refuses_an_existing_target_without_force(repo, make_image, tmp_path):
    image = make_image(100_000)
    record = repo.backup(image)
    target = tmp_path / "existing.img"
    target.write_bytes(b"keep me")
    with pytest.raises(TargetExists):
        repo.restore(record, target)
    assert target.read_bytes() == b"keep me"


def test_restore_with_force_replaces_an_existing_larger_file(repo, make_image, tmp_path):
    image = make_image(100_000, seed=1)
    record = repo.backup(image)
    target = tmp_path / "existing.img"
    target.write_bytes(os.urandom(500_000))
    repo.restore(record, target, force=True)
    assert target.read_bytes() == image.read_bytes()


def test_restore_leaves_no_temp_files_behind(repo, make_image, tmp_path):
    record = repo.backup(make_image(100_000))
    repo.restore(record, tmp_path / "out.img")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture
def loop_device(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("writing to a loop block device needs root")
    backing = tmp_path / "device-backing"
    with open(backing, "wb") as handle:
        handle.write(b"\xff" * 4 * 1024 * 1024)  # not zeros: restore must write the zero runs too
    result = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"no loop device available: {result.stderr.strip()}")
    device = result.stdout.strip()
    yield device
    subprocess.run(["losetup", "-d", device], check=False)


def test_restore_onto_a_block_device_writes_every_byte(repo, tmp_path, loop_device):
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.write(os.urandom(500_000))
        handle.seek(3_000_000)
        handle.write(os.urandom(1000))
    record = repo.backup(image)
    repo.restore(record, loop_device, force=True)
    with open(loop_device, "rb") as device:
        assert device.read(record.size) == image.read_bytes()


def test_backup_of_a_block_device_round_trips(repo, tmp_path, loop_device):
    with open(loop_device, "r+b") as device:
        device.write(os.urandom(1_000_000))
    record = repo.backup(loop_device, name="dev")
    assert record.size == 4 * 1024 * 1024
    target = tmp_path / "dev.img"
    repo.restore(record, target)
    with open(loop_device, "rb") as device:
        assert target.read_bytes() == device.read()
