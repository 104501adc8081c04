"""Restore targets: a new sparse file, an existing file (--force), a block device."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import TargetExists
from diskvault.store.restore.image_writes import without_zero_blocks

from ...conftest import in_both_modes

encryption = in_both_modes()
MiB = 1 << 20


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


def test_restore_to_a_new_file_leaves_zero_blocks_inside_data_chunks_as_holes(repo, tmp_path):
    """Data with zero blocks between (a disk's free space with scattered blocks written):
    chunks of data and zeros; the restored file holds the same bytes, its zero blocks
    unwritten, so a restore writes a third of the image here."""
    rng = random.Random(3)
    image = tmp_path / "disk.img"
    image.write_bytes(b"".join(rng.randbytes(4096) + bytes(8192) for _ in range(8 * 256 // 3)))
    record = repo.backup(image)
    assert record.stats.zero_bytes < image.stat().st_size // 4  # most zeros are in data chunks
    target = tmp_path / "out.img"
    written = repo.restore(record, target).written_bytes
    assert target.read_bytes() == image.read_bytes()
    assert written < image.stat().st_size // 2 and allocated_bytes(target) <= written + MiB


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, 20_000), blocks=st.lists(st.sampled_from(["zero", "data", "half"]),
                                                      max_size=12),
       head=st.integers(0, 5000))
def test_zero_blocks_left_out_are_whole_aligned_zero_blocks(offset, blocks, head):
    rng = random.Random(offset)
    parts = {"zero": bytes(4096), "data": rng.randbytes(4096),
             "half": bytes(2048) + rng.randbytes(2048)}
    data = bytes(head) + b"".join(parts[kind] for kind in blocks)
    rebuilt = bytearray(len(data))
    written = 0
    for at, run in without_zero_blocks(offset, data):
        rebuilt[at - offset: at - offset + len(run)] = run
        written += len(run)
    assert bytes(rebuilt) == data  # what is left out is zeros
    kept = [(at, len(run)) for at, run in without_zero_blocks(offset, data)]
    for start in range(-(-offset // 4096) * 4096, offset + len(data) - 4095, 4096):
        inside = any(at <= start < at + length for at, length in kept)
        assert inside != (data[start - offset: start - offset + 4096] == bytes(4096))


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
