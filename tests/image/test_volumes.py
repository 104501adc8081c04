"""Partition tables made by sfdisk, read back by diskvault.image.volumes."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.errors import BadInput
from diskvault.image.volumes import (LogicalVolume, NoSuchPartition, PartitionTableError,
                                     PartitionView, list_logical_volumes, list_partitions,
                                     open_logical_volume, open_partition)
from tests.fsimages import (MIB, PartSpec, call_with_deadline, loop_device, make_disk, make_ext4,
                            make_fat, make_lvm, make_ntfs, populate_tree, require_tool)

LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"


def sfdisk_json(image: Path) -> dict:
    require_tool("sfdisk")
    result = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)["partitiontable"]


def test_gpt_partitions_match_what_sfdisk_reports(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 3, "U"), PartSpec(None, 5), PartSpec(None, 2, "S")], "gpt")
    subprocess.run(["sfdisk", "--quiet", "--part-label", str(image), "2", "root fs"], check=True)
    table = sfdisk_json(image)

    with open(image, "rb") as f:
        partitions = list_partitions(f)

    assert [(p.number, p.offset, p.size) for p in partitions] == [
        (index + 1, entry["start"] * 512, entry["size"] * 512)
        for index, entry in enumerate(table["partitions"])]
    assert partitions[0].type_name == "EFI System partition"
    assert partitions[1].type_name == "Linux filesystem data"
    assert partitions[1].name == "root fs"
    assert partitions[2].type_name == "Linux Swap"


def test_mbr_logical_partitions_are_numbered_from_five_as_linux_does(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2, "83"), PartSpec(None, 3, "83", logical=True),
                      PartSpec(None, 4, "7", logical=True)], "dos")
    table = sfdisk_json(image)
    expected = {int(entry["node"].rsplit("img", 1)[1]): entry for entry in table["partitions"]}

    with open(image, "rb") as f:
        partitions = list_partitions(f)

    assert [p.number for p in partitions] == [1, 5, 6]
    for partition in partitions:
        assert partition.offset == expected[partition.number]["start"] * 512
        assert partition.size == expected[partition.number]["size"] * 512
    assert partitions[2].type_name == "NTFS"


def test_gpt_on_a_4096_byte_sector_disk_is_found(tmp_path):
    image = tmp_path / "disk4k.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    require_tool("sfdisk")
    with loop_device(image, "--sector-size", "4096") as device:
        subprocess.run(["sfdisk", "--quiet", "--no-reread", device],
                       input="label: gpt\nstart=256, size=2048, type=linux\n", text=True,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(image, "rb") as f:
        partitions = list_partitions(f)
    assert [(p.number, p.offset, p.size) for p in partitions] == [(1, 256 * 4096, 2048 * 4096)]


@pytest.mark.parametrize("kind", ["ext4", "fat32", "ntfs", "zeros"])
def test_a_whole_disk_filesystem_has_no_partitions(tmp_path, kind):
    image = tmp_path / "whole.img"
    source = populate_tree(tmp_path / "src", many=3, big_size=10)
    if kind == "ext4":
        make_ext4(image, source, 16)
    elif kind == "fat32":
        make_fat(image, source, 32, 40)
    elif kind == "ntfs":
        make_ntfs(image, source, 16)
    else:
        image.write_bytes(bytes(MIB))
    with open(image, "rb") as f:
        assert list_partitions(f) == []


def test_partition_view_reads_exactly_the_partition_window(tmp_path):
    data = random.Random(1).randbytes(3 * MIB)
    image = tmp_path / "raw.img"
    image.write_bytes(data)
    with open(image, "rb") as f:
        view = PartitionView(f, MIB + 17, MIB)
        assert view.size == MIB
        assert view.read(10) == data[MIB + 17: MIB + 27]
        assert view.tell() == 10
        view.seek(-5, io.SEEK_END)
        assert view.read(100) == data[2 * MIB + 12: 2 * MIB + 17]
        assert view.read(100) == b""
        view.seek(MIB - 3)
        assert view.read() == data[2 * MIB + 14: 2 * MIB + 17]
        with pytest.raises(ValueError):
            view.seek(-1)


def test_views_over_one_file_can_be_read_from_many_threads(tmp_path):
    data = random.Random(2).randbytes(4 * MIB)
    image = tmp_path / "raw.img"
    image.write_bytes(data)
    failures = []
    with open(image, "rb") as f:
        def reader(seed: int) -> None:
            rng = random.Random(seed)
            offset = rng.randrange(0, 2 * MIB)
            view = PartitionView(f, offset, 2 * MIB)
            for _ in range(300):
                position, length = rng.randrange(0, 2 * MIB), rng.randrange(1, 9000)
                view.seek(position)
                end = offset + min(position + length, 2 * MIB)
                if view.read(length) != data[offset + position: end]:
                    failures.append(seed)
        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_partitions_reaching_past_the_end_of_a_truncated_image_are_clipped(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 4), PartSpec(None, 8)], "gpt")
    with open(image, "r+b") as f:
        f.truncate(9 * MIB)  # cuts partition 2 short; the backup GPT is lost too
    with open(image, "rb") as f:
        partitions = list_partitions(f)
    assert [(p.number, p.offset, p.size) for p in partitions] == [
        (1, MIB, 4 * MIB), (2, 5 * MIB, 4 * MIB)]


def test_clipping_a_partition_at_the_end_of_the_image_is_said(tmp_path, caplog):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 4), PartSpec(None, 8)], "gpt")
    with open(image, "r+b") as f:
        f.truncate(9 * MIB)
    with open(image, "rb") as f:
        list_partitions(f)
    assert f"p2 reaches past the end of the image: only its first {4 * MIB} of {8 * MIB}" \
        in caplog.text


def _patch_gpt_entry(image: Path, number: int, first_lba: int, last_lba: int) -> None:
    """Rewrite a GPT entry's first and last LBA (512-byte sectors; the table at LBA 2)."""
    entry = 1024 + (number - 1) * 128
    _patch(image, entry + 32, first_lba.to_bytes(8, "little") + last_lba.to_bytes(8, "little"))


@pytest.mark.parametrize("first_lba, last_lba, problem", [
    (1 << 40, (1 << 40) + 2047, "outside the image"),
    (6 * 2048, 5 * 2048, "ends before it starts")])
def test_gpt_entry_that_cannot_be_served_is_left_out_with_a_warning(
        tmp_path, caplog, first_lba, last_lba, problem):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2), PartSpec(None, 2), PartSpec(None, 2)], "gpt")
    _patch_gpt_entry(image, 2, first_lba, last_lba)
    with open(image, "rb") as f:
        assert [p.number for p in list_partitions(f)] == [1, 3]
    assert "partition p2 is not shown" in caplog.text and problem in caplog.text


def test_open_partition_names_the_partitions_that_exist(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2), PartSpec(None, 2, "S")], "gpt")
    with open(image, "rb") as f:
        assert open_partition(f, 2).size == 2 * MIB
        with pytest.raises(NoSuchPartition, match=r"no partition 7.*p1 \(Linux filesystem data\), "
                                                  r"p2 \(Linux Swap\)") as caught:
            open_partition(f, 7)
    assert isinstance(caught.value, BadInput)


def _patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_gpt_claiming_four_billion_entries_of_size_zero_fails_fast(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2)], "gpt")
    _patch(image, 512 + 0x50, (0xFFFFFFFF).to_bytes(4, "little") + (0).to_bytes(4, "little"))

    def scan():
        with open(image, "rb") as f:
            return list_partitions(f)

    with pytest.raises(PartitionTableError, match="damaged or malicious"):
        call_with_deadline(scan, 30)


def _disk_with_logical_partitions(tmp_path: Path) -> tuple[Path, list[int]]:
    """p1 primary, then p5, p6, p7 in an extended partition; and the byte offset of each EBR."""
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2)] + [PartSpec(None, 2, logical=True)] * 3, "dos")
    with open(image, "rb") as f:
        mbr = f.read(512)
        slot = next(i for i in range(4) if mbr[446 + i * 16 + 4] in (0x05, 0x0F, 0x85))
        extended = int.from_bytes(mbr[446 + slot * 16 + 8: 446 + slot * 16 + 12], "little") * 512
        records = [extended]
        while len(records) < 3:
            f.seek(records[-1] + 446 + 16 + 8)
            records.append(extended + int.from_bytes(f.read(4), "little") * 512)
    return image, records


def _link_ebr(image: Path, record: int, target_sectors: int) -> None:
    """Point the link entry (second slot) of the EBR at `record` at another sector, relative to
    the extended partition as the format says."""
    _patch(image, record + 446 + 16 + 8, target_sectors.to_bytes(4, "little"))


def _numbers(image: Path) -> list[int]:
    """The partition numbers, read in a child that must finish in time (a loop would hang),
    then once more here, so that the warning is logged where the test sees it."""
    def scan():
        with open(image, "rb") as f:
            return [p.number for p in list_partitions(f)]
    numbers = call_with_deadline(scan, 30)
    assert scan() == numbers
    return numbers


def test_an_intact_chain_of_extended_boot_records_gives_every_logical_partition(tmp_path):
    image, _ = _disk_with_logical_partitions(tmp_path)
    assert _numbers(image) == [1, 5, 6, 7]


@pytest.mark.parametrize("loop_to, kept", [(0, [1, 5]), (1, [1, 5, 6])])
def test_a_looping_chain_of_extended_boot_records_costs_only_what_follows_the_loop(
        tmp_path, caplog, loop_to, kept):
    image, records = _disk_with_logical_partitions(tmp_path)
    last_kept = records[len(kept) - 2]
    _link_ebr(image, last_kept, (records[loop_to] - records[0]) // 512)  # back to itself/earlier

    assert _numbers(image) == kept
    assert "loops back" in caplog.text


def test_a_chain_link_leading_outside_the_image_ends_the_chain_there(tmp_path, caplog):
    image, records = _disk_with_logical_partitions(tmp_path)
    _link_ebr(image, records[1], 0xFFFFFFF0)
    assert _numbers(image) == [1, 5, 6]
    assert "outside the image" in caplog.text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mbr=st.binary(min_size=446, max_size=446), entries=st.binary(min_size=64, max_size=64),
       gpt=st.binary(min_size=92, max_size=92), with_gpt_signature=st.booleans())
def test_random_tables_give_partitions_or_a_clean_error(mbr, entries, gpt, with_gpt_signature):
    disk = bytearray(2 * MIB)
    disk[:446], disk[446:510], disk[510:512] = mbr, entries, b"\x55\xaa"
    disk[512:604] = (b"EFI PART" + gpt[8:]) if with_gpt_signature else gpt
    disk[1024:1024 + 64] = entries  # some plausible-looking partition entries
    try:
        partitions = list_partitions(io.BytesIO(bytes(disk)))
    except PartitionTableError:
        return
    for partition in partitions:
        assert 0 < partition.offset < len(disk)
        assert 0 < partition.size <= len(disk) - partition.offset


def test_lvm_logical_volumes_are_listed_on_a_whole_disk_and_in_a_partition(tmp_path):
    group = f"dvtest{os.getpid()}"
    offsets = make_lvm(tmp_path / "pv.img", group, [("root", 16, None), ("home", 8, None)], 32)
    with open(tmp_path / "pv.img", "rb") as f:
        assert list_logical_volumes(f) == [LogicalVolume(f"{group}/root", 16 * MIB, None),
                                           LogicalVolume(f"{group}/home", 8 * MIB, None)]
    disk = tmp_path / "disk.img"
    make_disk(disk, [PartSpec(None, 2), PartSpec(tmp_path / "pv.img", 32, LVM_GUID)])
    marker = random.Random(5).randbytes(4096)
    with open(disk, "r+b") as f:  # 3 MiB: partition 2 starts at 3 MiB, then "home"
        f.seek(3 * MIB + offsets["home"])
        f.write(marker)
    with open(disk, "rb") as f:
        volumes = list_logical_volumes(f)
        assert [(v.name, v.partition) for v in volumes] == [
            (f"{group}/root", 2), (f"{group}/home", 2)]
        home = open_logical_volume(f, f"{group}/home")
        assert home.size == 8 * MIB and home.read(4096) == marker
        with pytest.raises(NoSuchPartition, match=rf"no logical volume {group}/tmp .*/root"):
            open_logical_volume(f, f"{group}/tmp")


def test_lvm_metadata_claiming_a_huge_area_is_refused(tmp_path):
    group = f"dvtest{os.getpid()}"
    make_lvm(tmp_path / "pv.img", group, [("root", 4, None)], 16)
    data = bytearray((tmp_path / "pv.img").read_bytes())
    # The metadata area header's first raw location: offset (8 bytes), size (8 bytes), ...
    header = data.index(b"\x20LVM2 x[5A%r0N*>", 0) - 4  # mda_header: checksum, then magic
    raw_location = header + 4 + 16 + 4 + 8 + 8
    data[raw_location + 8: raw_location + 16] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(PartitionTableError, match="damaged or malicious"):
        list_logical_volumes(io.BytesIO(bytes(data)))


def test_a_gpt_disk_whose_gpt_header_is_gone_is_an_error_not_a_guess(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2)], "gpt")
    _patch(image, 512, bytes(512))  # the primary header, "EFI PART" and all
    with open(image, "rb") as f:
        with pytest.raises(PartitionTableError, match="protective MBR announces a GPT"):
            list_partitions(f)
