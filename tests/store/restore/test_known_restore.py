"""Delta restore onto a file that a completed restore left unchanged: the snapshot it holds is
remembered with the file's change stamp, so only where the two manifests differ is compared;
any change to the file since, or any doubt, falls back to comparing the whole file."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time

from ...conftest import in_both_modes, run_cli, run_killed_at_random, write_image
from ...fsimages import fuse_mount, loop_device, require_tool, run
from .test_delta_restore import MAX_CHUNK_BYTES, MiB, edited_copy, sha256

encryption = in_both_modes()


def nights(tmp_path):
    """(yesterday's image, today's image): 6 MiB, today with two stretches rewritten."""
    yesterday = write_image(tmp_path / "yesterday.img", 6 * MiB, "mixed", seed=3)
    rng = random.Random(5)
    today = edited_copy(yesterday, tmp_path / "today.img",
                        [(1 * MiB + 123, rng.randbytes(300_000)),
                         (4 * MiB + 7, rng.randbytes(100_000))])
    return yesterday, today


def changed_bytes(repo, a, b) -> tuple[int, int]:
    """(bytes where the manifests of a and b differ, number of ranges)."""
    ranges = repo.diff(a, b)
    return sum(end - start for start, end in ranges), len(ranges)


def test_restore_onto_the_last_restored_file_compares_only_the_changed_ranges(
        repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    target = tmp_path / "target.img"
    repo.restore(old, target)
    result = repo.restore(new, target, force=True)
    assert sha256(target) == sha256(today)
    assert result.known_snapshot == old.short_id
    changed, count = changed_bytes(repo, old, new)
    assert changed <= result.compared_bytes <= changed + 2 * count * MAX_CHUNK_BYTES
    assert result.compared_bytes < new.size // 4
    assert result.written_bytes <= result.compared_bytes


def test_in_place_restores_back_and_forth_use_what_the_file_holds(repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    target = tmp_path / "target.img"
    repo.restore(old, target)
    forward = repo.restore(new, target, force=True, in_place=True)
    back = repo.restore(old, target, force=True, in_place=True)
    assert sha256(target) == sha256(yesterday)
    assert (forward.known_snapshot, back.known_snapshot) == (old.short_id, new.short_id)
    assert back.compared_bytes < old.size // 4


def test_file_touched_after_the_restore_is_compared_whole_and_restored_exactly(
        repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    target = tmp_path / "target.img"
    repo.restore(old, target)
    before = target.stat()
    with open(target, "r+b") as handle:  # outside the changed ranges, same size
        handle.seek(5 * MiB + 100)
        handle.write(b"edited by someone else")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    result = repo.restore(new, target, force=True)
    assert result.known_snapshot is None
    assert result.compared_bytes == new.size
    assert sha256(target) == sha256(today)


def test_held_snapshot_since_deleted_falls_back_to_comparing(
        repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    target = tmp_path / "target.img"
    repo.restore(old, target)
    run_cli("delete", "-r", str(repo.root), old.id, check=True)
    result = repo.restore(new, target, force=True)
    assert (result.known_snapshot, result.compared_bytes) == (None, new.size)
    assert sha256(target) == sha256(today)


def test_cli_names_the_snapshot_the_target_held(repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old = repo.backup(yesterday, name="vm")
    repo.backup(today, name="vm")
    target = tmp_path / "target.img"
    run_cli("restore", "-r", str(repo.root), old.id, str(target), check=True)
    result = run_cli("restore", "-r", str(repo.root), "latest", str(target), "--force",
                     "--json", check=True)
    report = json.loads(result.stdout)
    assert report["known_snapshot"] == old.short_id
    assert report["compared_bytes"] < report["image_bytes"] // 4
    assert sha256(target) == sha256(today)


def test_killed_in_place_restore_onto_a_known_file_is_not_trusted_next_time(repo, tmp_path):
    old = write_image(tmp_path / "old.img", 24 * MiB, "mixed", seed=11)
    rng = random.Random(12)
    new = edited_copy(old, tmp_path / "new.img", [(offset, rng.randbytes(2 * MiB))
                                                   for offset in (MiB, 9 * MiB, 20 * MiB)])
    before, after = repo.backup(old, name="vm"), repo.backup(new, name="vm")
    target = tmp_path / "target.img"
    command = [sys.executable, "-m", "diskvault", "restore", "-r", str(repo.root), after.id,
               str(target), "--force", "--in-place", "--no-progress"]
    repo.restore(before, target)
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    whole_run_s = time.monotonic() - started  # only to spread the kill points over a run
    for attempt in range(3):
        repo.restore(before, target, force=True, full=True)  # known to hold night 0 again
        run_killed_at_random(command, rng, whole_run_s)
        repo.restore(before, target, force=True, in_place=True)
        assert sha256(target) == sha256(old), f"attempt {attempt}: a mix was trusted"


def test_known_file_of_another_size_is_grown_or_cut_exactly(repo, tmp_path):
    small = write_image(tmp_path / "small.img", 3 * MiB, "mixed", seed=6)
    large = tmp_path / "large.img"
    large.write_bytes(small.read_bytes() + random.Random(7).randbytes(MiB + 5))
    first, second = repo.backup(small, name="vm"), repo.backup(large, name="vm")
    target = tmp_path / "target.img"
    repo.restore(first, target)
    grown = repo.restore(second, target, force=True)
    assert sha256(target) == sha256(large) and grown.known_snapshot == first.short_id
    cut = repo.restore(first, target, force=True, in_place=True)
    assert sha256(target) == sha256(small) and cut.known_snapshot == second.short_id
    assert cut.compared_bytes < MiB


def test_records_of_files_deleted_since_are_dropped_by_the_next_restore(repo, tmp_path):
    image = write_image(tmp_path / "image.img", MiB, "mixed", seed=9)
    record = repo.backup(image, name="vm")
    repo.restore(record, tmp_path / "gone.img")
    (tmp_path / "gone.img").unlink()
    repo.restore(record, tmp_path / "kept.img")
    records = list((tmp_path / "state" / "diskvault" / "restored").iterdir())
    assert [json.loads(path.read_text())["target"] for path in records] == \
        [str(tmp_path / "kept.img")]


@contextlib.contextmanager
def mounted_filesystem(tmp_path, kind: str):
    """A folder on a freshly made, loop-mounted filesystem: 'exfat' through exfat-fuse
    (ctime is the mtime, in whole seconds, and utime sets both), 'ext4-128' an ext4 with
    128-byte inodes (whole-second times, as ext2/3 keep them)."""
    image = tmp_path / f"{kind}.img"
    with open(image, "wb") as handle:
        handle.truncate(64 * MiB)
    if kind == "exfat":
        require_tool("mkfs.exfat")
        run("mkfs.exfat", image)
        with loop_device(image) as device, \
                fuse_mount(["mount.exfat-fuse", device], image) as folder:
            yield folder
        return
    require_tool("mkfs.ext4")
    run("mkfs.ext4", "-q", "-I", "128", image)
    folder = tmp_path / "ext4.mnt"
    folder.mkdir()
    with loop_device(image) as device:
        run("mount", device, folder)
        try:
            yield folder
        finally:
            run("umount", folder)


def test_a_write_with_the_mtime_put_back_on_exfat_is_found_and_restored_exactly(
        repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    with mounted_filesystem(tmp_path, "exfat") as folder:
        target = folder / "target.img"
        repo.restore(old, target)
        before = target.stat()
        with open(target, "r+b") as handle:  # outside the changed ranges, same size
            handle.seek(5 * MiB + 100)
            handle.write(b"edited by someone else")
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -d`
        assert target.stat().st_ctime_ns == before.st_ctime_ns  # the stamp cannot tell
        result = repo.restore(new, target, force=True)
        assert result.known_snapshot is None and result.compared_bytes == new.size
        assert sha256(target) == sha256(today)


def test_a_file_with_whole_second_ctimes_is_never_known(repo, tmp_path):
    yesterday, today = nights(tmp_path)
    old, new = repo.backup(yesterday, name="vm"), repo.backup(today, name="vm")
    with mounted_filesystem(tmp_path, "ext4-128") as folder:
        target = folder / "target.img"
        repo.restore(old, target)
        assert target.stat().st_ctime_ns % 10**9 == 0
        result = repo.restore(new, target, force=True)
        assert result.known_snapshot is None and result.compared_bytes == new.size
        assert sha256(target) == sha256(today)

