"""A mount over a repository that keeps changing: backups made while mounted appear, open
files keep reading, half-written records never show, and compaction is held off."""

from __future__ import annotations

import hashlib
import os

from diskvault.store.coordination.readers import readers_excluded
from diskvault.store.format.snapshots import record_name

from ..conftest import run_cli
from .conftest import reader_lock_free, wait_for


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_backup_made_while_mounted_appears_and_old_reads_stay_right(repo, make_image,
                                                                      mounted):
    image = make_image(2 << 20, "mixed", name="vm1.img")
    old = repo.backup(image, name="vm1")
    old_bytes = image.read_bytes()
    mountpoint = mounted(repo)
    old_file = open(mountpoint / "vm1" / old.time_label / "vm1.img", "rb")
    try:
        with open(image, "r+b") as handle:
            handle.write(b"changed after the mount" * 1000)
        run_cli("backup", "-r", str(repo.root), str(image), "--name", "vm1", check=True)
        new_folders = wait_for(lambda: set(os.listdir(mountpoint / "vm1")) - {old.time_label,
                                                                             "latest"},
                               "the new snapshot to appear in the mount")
        (new_folder,) = new_folders
        assert os.readlink(mountpoint / "vm1" / "latest") == new_folder
        assert (mountpoint / "vm1" / new_folder / "vm1.img").read_bytes() == image.read_bytes()
        assert digest_of(old_file.read()) == digest_of(old_bytes)
    finally:
        old_file.close()


def test_a_snapshot_deleted_while_open_still_reads_and_leaves_the_tree(repo, make_image,
                                                                       mounted):
    record = repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    original = open(record.source, "rb").read()
    mountpoint = mounted(repo)
    with open(mountpoint / "vm1" / record.time_label / "vm1.img", "rb") as handle:
        repo.storage.snapshots.delete(record.id)
        wait_for(lambda: not os.listdir(mountpoint), "the deleted snapshot to leave the mount")
        assert handle.read() == original


def test_a_snapshot_record_being_written_is_never_listed(repo, make_image, mounted):
    image = make_image(1 << 20, "random", name="vm1.img")
    first = repo.backup(image, name="vm1")
    mountpoint = mounted(repo)
    # A record's temp file, as a backup leaves it between write and rename (or on a crash).
    half = repo.root / "snapshots" / f".{'0' * 16}.json.{'9' * 16}.tmp"
    half.write_bytes((repo.root / record_name(first.id)).read_bytes()[:100])
    second = repo.backup(image, name="other")
    wait_for(lambda: "other" in os.listdir(mountpoint), "the next snapshot to appear")
    assert sorted(os.listdir(mountpoint)) == ["other", "vm1"]
    assert sorted(os.listdir(mountpoint / "vm1")) == [first.time_label, "latest"]
    assert sorted(os.listdir(mountpoint / "other")) == [second.time_label, "latest"]


def test_the_mount_holds_off_compaction_until_unmounted(repo, make_image, mounted):
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = mounted(repo)
    with readers_excluded(repo.storage.backend) as no_readers:
        assert not no_readers
    run_cli("umount", str(mountpoint), check=True)
    wait_for(lambda: reader_lock_free(repo.root), "the mount to release its reader lock")


def test_a_damaged_or_odd_record_appearing_while_mounted_hides_only_itself(repo, make_image,
                                                                           mounted):
    image = make_image(1 << 20, "random", name="vm1.img")
    first = repo.backup(image, name="vm1")
    mountpoint = mounted(repo)
    good = (repo.root / record_name(first.id)).read_bytes()
    for fake_id, body in [("1" * 16, good[:-7]),  # cut short
                          ("2" * 16, good),  # a copy under another id
                          ("3" * 16, good.replace(b'"name":"vm1"', b'"name":5').replace(
                              first.id.encode(), b"3" * 16))]:
        (repo.root / record_name(fake_id)).write_bytes(body)
    second = repo.backup(image, name="other")
    wait_for(lambda: "other" in os.listdir(mountpoint), "the next snapshot to appear")
    assert sorted(os.listdir(mountpoint)) == ["other", "vm1"]
    assert sorted(os.listdir(mountpoint / "vm1")) == [first.time_label, "latest"]
    assert (mountpoint / "other" / second.time_label / "vm1.img").read_bytes() == \
        image.read_bytes()
    log = open(f"{mountpoint}.log").read()
    assert all(f"snapshot {fake} is not shown" in log for fake in ("1" * 16, "2" * 16, "3" * 16))
