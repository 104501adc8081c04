"""The mount's tree as plain values: no FUSE, no repository."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.fuse.layout import (ROOT, Folder, InsideFiles, Link, MountNames, SnapshotFolder,
                                   assign_names, escape_name, find_inside, image_name, layout_all,
                                   layout_one, snapshot_files, time_ns, volume_folder)
from diskvault.image.volumes import Partition
from diskvault.store.format.snapshots import BackupStats, SnapshotRecord

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


def test_names_that_are_not_path_components_are_escaped():
    nodes = layout_all([record("a1", "web/db", 0), record("b2", "..", 0)], mounted_ns=0)
    assert nodes[ROOT].names == ("%2E.", "web%2Fdb")
    assert image_name(record("a1", "sda", 0, source="/dev/sda")) == "sda"
    assert image_name(record("a1", "vm", 0, source="/")) == "vm.img"


def test_every_shown_name_encodes_as_utf8_and_fits_the_kernels_255_bytes():
    odd = ["disk\udcff.img", "lone\ud800", "", "a\0b", "é" * 200, "x" * 300, ".hidden"]
    nodes = layout_all([record(f"{i}0", name, 0, source=f"/{name}")
                        for i, name in enumerate(odd)], mounted_ns=0)
    names = nodes[ROOT].names
    assert {"disk%FF.img", "lone%uD800", "%", "a%00b", "%2Ehidden"} <= set(names)
    assert len(set(names)) == len(odd)
    for one in odd:
        image = image_name(record("a1", one, 0, source=f"/{one}"))
        assert len(f"{image}.files".encode()) <= 255
    assert all(len(name.encode("utf-8")) <= 255 for name in names)


def test_series_that_used_to_show_alike_get_their_own_folders_in_any_order():
    for order in ((0, 1), (1, 0)):
        records = [record("a1", "a/b", order[0]), record("b2", "a_b", order[1])]
        names = assign_names(records, MountNames())
        assert names.series == {"a/b": "a%2Fb", "a_b": "a_b"}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=()), max_size=300),  # surrogates too
                min_size=2, max_size=6, unique=True)
       | st.lists(st.sampled_from(["a/b", "a_b", "a%2Fb", "%", "", ".", "..", "%2E", "%2E.",
                                   "\udcff", "%FF", "\udced\udca0\udc80", "\ud800",
                                   "%uD800", "x" * 260, "x" * 261, "x" * 221 + "%~"]),
                  min_size=2, unique=True))
def test_distinct_series_names_give_distinct_valid_folders(names):
    folders = [escape_name(name) for name in names]
    assert len(set(folders)) == len(names)
    for folder in folders:
        assert 0 < len(folder.encode("utf-8")) <= 255
        assert "/" not in folder and "\0" not in folder and folder not in (".", "..")
        assert not folder.startswith(".")


def test_a_path_keeps_its_snapshot_and_a_deleted_snapshots_path_is_never_reused():
    first, second = record("aaaa0001", "vm1", 0.2), record("bbbb0002", "vm1", 0.7)
    names = assign_names([first, second], MountNames())
    assert layout_all([first, second], 0, names)["/vm1/2026-11-18T031500Z"].record is first
    names = assign_names([second], names)
    nodes = layout_all([second], 0, names)
    assert nodes["/vm1"].names == ("2026-11-18T031500Z-bbbb0002", "latest")
    assert "/vm1/2026-11-18T031500Z" not in nodes
    third = record("cccc0003", "vm1", 0.9)
    names = assign_names([second, third], names)
    assert layout_all([second, third], 0, names)["/vm1/latest"].target == \
        "2026-11-18T031500Z-cccc0003"


def test_a_snapshot_folder_holds_the_image_then_one_file_per_partition():
    one = record("a1", "vm1", 0)
    partitions = [Partition(1, 1 << 20, 8 << 20, "Linux filesystem data", None),
                  Partition(2, 9 << 20, 4 << 20, "Linux swap", None)]
    files = snapshot_files(one, partitions)
    assert list(files) == ["vm1.img", "vm1.img.p1", "vm1.img.p2"]
    assert (files["vm1.img"].offset, files["vm1.img"].size) == (0, 4096)
    assert (files["vm1.img.p2"].offset, files["vm1.img.p2"].size) == (9 << 20, 4 << 20)
    assert layout_one(one) == {ROOT: SnapshotFolder(one)}


def test_paths_below_an_image_files_folder_name_the_snapshot_and_the_rest():
    one = record("a1", "vm1", 0)
    nodes = layout_all([one], mounted_ns=0)
    folder = "/vm1/2026-11-18T031500Z"
    assert find_inside(nodes, f"{folder}/vm1.img.files") == InsideFiles(one, ())
    assert find_inside(nodes, f"{folder}/vm1.img.files/p2/etc/x") == \
        InsideFiles(one, ("p2", "etc", "x"))
    assert find_inside(nodes, f"{folder}/vm1.img.p1/x") is None
    assert find_inside(nodes, "/vm1/nothing/vm1.img.files") is None
    assert find_inside(layout_one(one), "/vm1.img.files/etc") == InsideFiles(one, ("etc",))


def test_volume_folders_are_pn_and_vg_lv_as_device_mapper_names_them():
    assert volume_folder(2) == "p2"
    assert volume_folder("vg0/root") == "vg0-root"
    assert volume_folder("vg-data/lv-1") == "vg--data-lv--1"
