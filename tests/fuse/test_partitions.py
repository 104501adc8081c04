"""Partition files: a real GPT disk with a real ext4 partition, built with sfdisk and
mkfs.ext4 -d, read through the mount and loop-mounted read-only from its .p1 file."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

MIB = 1 << 20
PARTITION_START = MIB
LINUX_FILESYSTEM = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def require_tools(*names: str) -> None:
    for name in names:
        if not shutil.which(name):
            pytest.skip(f"{name} is not installed (apt-get install "
                        f"{'e2fsprogs' if name.startswith('mkfs') else 'fdisk'})")


def make_gpt_ext4_disk(folder: Path, disk_bytes: int,
                       files: dict[str, bytes]) -> tuple[Path, int]:
    """A sparse GPT disk whose one partition (from 1 MiB to the end) holds an ext4
    filesystem with ``files``; and the partition's size in bytes."""
    require_tools("sfdisk", "mkfs.ext4")
    tree = folder / "tree"
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    disk = folder / "disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(disk_bytes)
    subprocess.run(["sfdisk", "--quiet", str(disk)], check=True, capture_output=True,
                   input=f"label: gpt\nstart=2048, type={LINUX_FILESYSTEM}\n".encode())
    table = subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True)
    sectors = json.loads(table.stdout)["partitiontable"]["partitions"][0]["size"]
    filesystem = folder / "part.ext4"
    with open(filesystem, "wb") as handle:
        handle.truncate(sectors * 512)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(filesystem)], check=True,
                   capture_output=True)
    subprocess.run(["dd", f"if={filesystem}", f"of={disk}", "bs=1M",
                    f"seek={PARTITION_START // MIB}", "conv=notrunc,sparse", "status=none"],
                   check=True)
    filesystem.unlink()
    return disk, sectors * 512


def require_loop_mounts() -> None:
    if os.geteuid() != 0:
        pytest.skip("loop-mounting the partition file needs root")
    free = subprocess.run(["losetup", "--find"], capture_output=True, text=True)
    if free.returncode != 0:
        pytest.skip(f"no free loop device on this machine: {free.stderr.strip()}")


def test_a_gpt_partition_appears_as_its_own_file_and_loop_mounts_read_only(
        repo, tmp_path, mounted):
    payload = random.Random(3).randbytes(3 * MIB + 17)
    files = {"etc/nginx/nginx.conf": b"worker 4;\n", "srv/data.bin": payload}
    disk, partition_bytes = make_gpt_ext4_disk(tmp_path, 48 * MIB, files)
    record = repo.backup(disk, name="vm1")
    folder = mounted(repo) / "vm1" / record.time_label
    assert sorted(os.listdir(folder)) == ["disk.img", "disk.img.files", "disk.img.p1"]
    partition = folder / "disk.img.p1"
    assert partition.stat().st_size == partition_bytes
    with open(disk, "rb") as original:
        original.seek(PARTITION_START)
        assert partition.read_bytes()[:MIB] == original.read(MIB)

    require_loop_mounts()
    inside = tmp_path / "inside"
    inside.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(partition), str(inside)], check=True)
    try:
        for name, data in files.items():
            assert (inside / name).read_bytes() == data
    finally:
        subprocess.run(["umount", str(inside)], check=True)


def test_an_image_without_a_partition_table_has_no_partition_files(repo, make_image, mounted):
    record = repo.backup(make_image(2 * MIB, "random", name="plain.img"), name="plain")
    assert os.listdir(mounted(repo) / "plain" / record.time_label) == \
        ["plain.img", "plain.img.files"]
