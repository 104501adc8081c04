"""The mount's tree as plain values: no FUSE, no repository."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from diskvault.fuse.layout import (ROOT, Folder, Link, SnapshotFolder, image_name, layout_all,
                                   layout_one, snapshot_files, time_ns)
from diskvault.store.snapshots import BackupStats, SnapshotRecord
from diskvault.store.volumes import Partition

T0 = datetime(2026, 11, 18, 3, 15, tzinfo=timezone.utc)


def record(id_: str, name: str, seconds: float, source: str = "/var/lib/images/vm1.img"
           ) -> SnapshotRecord:
    return SnapshotRecord(id=id_, name=name, time=T0 + timedelta(seconds=seconds),
                          source=source, size=4096, host="h", tags=[], stats=BackupStats())


def test_each_series_holds_one_folder_per_snapshot_time_and_a_latest_link():
    nodes = layout_all([record("a1", "vm1", 0), record("b2", "vm2", 60),
                        record("c3", "vm1", 86400)], mounted_ns=0)
    assert nodes[ROOT].names == ("vm1", "vm2")
    assert nodes["/vm1"].names == ("2026-11-18T031500Z", "2026-11-19T031500Z", "latest")
    assert nodes["/vm1/latest"] == Link("2026-11-19T031500Z", time_ns(record("c3", "vm1", 86400)))
    assert nodes["/vm1/2026-11-18T031500Z"] == SnapshotFolder(record("a1", "vm1", 0))
    assert nodes["/vm2/latest"].target == "2026-11-18T031600Z"


def test_folder_times_are_their_newest_snapshots_and_the_mount_time_when_empty():
    nodes = layout_all([record("a1", "vm1", 0), record("c3", "vm1", 3600)], mounted_ns=7)
    assert nodes["/vm1"].time_ns == nodes[ROOT].time_ns == time_ns(record("c3", "vm1", 3600))
    assert layout_all([], mounted_ns=7) == {ROOT: Folder(7, ())}


def test_snapshots_in_the_same_second_get_distinct_folders_and_latest_is_the_last():
    first, second = record("ffff0001", "vm1", 0.2), record("aaaa0002", "vm1", 0.7)
    nodes = layout_all([second, first], mounted_ns=0)
    assert nodes["/vm1"].names == ("2026-11-18T031500Z", "2026-11-18T031500Z-aaaa0002", "latest")
    assert nodes["/vm1/2026-11-18T031500Z"].record is first
    assert nodes["/vm1/latest"].target == "2026-11-18T031500Z-aaaa0002"


def test_names_that_are_not_path_components_are_made_safe():
    nodes = layout_all([record("a1", "web/db", 0), record("b2", "..", 0)], mounted_ns=0)
    assert nodes[ROOT].names == ("_..", "web_db")
    assert image_name(record("a1", "sda", 0, source="/dev/sda")) == "sda"
    assert image_name(record("a1", "vm", 0, source="/")) == "vm.img"


def test_a_snapshot_folder_holds_the_image_then_one_file_per_partition():
    one = record("a1", "vm1", 0)
    partitions = [Partition(1, 1 << 20, 8 << 20, "Linux filesystem data", None),
                  Partition(2, 9 << 20, 4 << 20, "Linux swap", None)]
    files = snapshot_files(one, partitions)
    assert list(files) == ["vm1.img", "vm1.img.p1", "vm1.img.p2"]
    assert (files["vm1.img"].offset, files["vm1.img"].size) == (0, 4096)
    assert (files["vm1.img.p2"].offset, files["vm1.img.p2"].size) == (9 << 20, 4 << 20)
    assert layout_one(one) == {ROOT: SnapshotFolder(one)}
