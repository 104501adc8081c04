"""Reading snapshots through a real FUSE mount: whole images, random ranges, the tree's
names and attributes, and refusal of every write."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.fuse.layout import time_ns

from ..conftest import in_both_modes

encryption = in_both_modes()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def folder_of(record, folders: set[str]) -> str:
    """A snapshot's folder: its time label, with its short id added when another snapshot
    of the series was made in the same second (as they are in a fast test)."""
    suffixed = f"{record.time_label}-{record.short_id}"
    return suffixed if suffixed in folders else record.time_label


def change_in_place(path: Path, seed: int) -> None:
    """What a night does to an image: a few blocks rewritten."""
    rng = random.Random(seed)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        for _ in range(4):
            handle.seek(rng.randrange(size - 8192))
            handle.write(rng.randbytes(8192))


def test_every_snapshot_reads_back_equal_through_the_mount(repo, make_image, mounted):
    image = make_image(3 << 20, "mixed", name="vm1.img")
    expected = []
    for night in range(3):
        record = repo.backup(image, name="vm1")
        expected.append((record, sha256(image)))
        change_in_place(image, night)
    other = repo.backup(make_image(1 << 20, "sparse", seed=5, name="db.img"), name="db")
    mountpoint = mounted(repo)

    assert sorted(os.listdir(mountpoint)) == ["db", "vm1"]
    folders = set(os.listdir(mountpoint / "vm1"))
    assert len(folders) == 4 and "latest" in folders
    for record, digest in expected:
        assert sha256(mountpoint / "vm1" / folder_of(record, folders) / "vm1.img") == digest
    assert os.readlink(mountpoint / "vm1" / "latest") == folder_of(expected[-1][0], folders)
    assert sha256(mountpoint / "db" / "latest" / "db.img") == sha256(
        Path(other.source))


def test_one_snapshot_mounts_at_the_root(repo, make_image, mounted):
    image = make_image(2 << 20, "mixed", name="vm1.img")
    first = repo.backup(image, name="vm1")
    digest = sha256(image)
    change_in_place(image, 1)
    repo.backup(image, name="vm1")
    mountpoint = mounted(repo, first.short_id)
    assert os.listdir(mountpoint) == ["vm1.img", "vm1.img.files"]
    assert sha256(mountpoint / "vm1.img") == digest


def test_random_ranges_read_through_the_mount_equal_the_original(repo, make_image, mounted):
    image = make_image(3 << 20, "mixed", seed=11)
    original = image.read_bytes()
    repo.backup(image, name="vm1")
    path = next((mounted(repo, "latest")).iterdir())
    fd = os.open(path, os.O_RDONLY)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.integers(0, len(original) + 4096), st.integers(0, 600_000))
    def check(offset: int, length: int) -> None:
        assert os.pread(fd, length, offset) == original[offset:offset + length]

    try:
        check()
    finally:
        os.close(fd)


def test_files_and_folders_are_read_only_and_images_readable_by_the_mounting_user_only(
        repo, make_image, mounted):
    record = repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = mounted(repo)
    image = mountpoint / "vm1" / record.time_label / "vm1.img"
    for path, kind, mode in [(mountpoint, stat.S_IFDIR, 0o555),
                             (mountpoint / "vm1", stat.S_IFDIR, 0o555),
                             (image.parent, stat.S_IFDIR, 0o555), (image, stat.S_IFREG, 0o400)]:
        status = path.stat()
        assert (stat.S_IFMT(status.st_mode), stat.S_IMODE(status.st_mode)) == (kind, mode), path
        assert (status.st_uid, status.st_gid) == (os.geteuid(), os.getegid())
    status = image.stat()
    assert status.st_size == record.size
    assert status.st_mtime_ns == time_ns(record)
    assert stat.S_ISLNK((mountpoint / "vm1" / "latest").lstat().st_mode)


def test_every_write_is_refused_read_only(repo, make_image, mounted):
    record = repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    folder = mounted(repo) / "vm1" / record.time_label
    attempts = [lambda: os.open(folder / "vm1.img", os.O_WRONLY),
                lambda: os.open(folder / "vm1.img", os.O_RDWR),
                lambda: os.open(folder / "new", os.O_WRONLY | os.O_CREAT),
                lambda: os.mkdir(folder / "sub"), lambda: os.unlink(folder / "vm1.img"),
                lambda: os.rename(folder / "vm1.img", folder / "x"),
                lambda: os.utime(folder / "vm1.img"), lambda: os.chmod(folder / "vm1.img", 0o600),
                lambda: os.truncate(folder / "vm1.img", 0)]
    for attempt in attempts:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS
    assert sha256(folder / "vm1.img") == sha256(Path(record.source))


def mount_options(mountpoint: Path) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == str(mountpoint):
            return set(fields[-1].split(",")) | set(fields[5].split(","))
    raise AssertionError(f"{mountpoint} is not mounted")


def test_other_users_are_let_in_only_when_asked(repo, make_image, mounted):
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    private, shared = mounted(repo), mounted(repo, None, "--allow-other")
    assert "allow_other" not in mount_options(private)
    assert {"allow_other", "ro", "default_permissions"} <= mount_options(shared)


def test_a_mount_made_by_root_reads_ahead_whole_1_mib_requests(repo, make_image, mounted):
    """libfuse 3 takes 1 MiB requests, and the kernel sends one per read-ahead window: the
    mount raises its window from the kernel's 128 KiB (only root may)."""
    if os.geteuid() != 0:
        pytest.skip("only root may set a mount's read-ahead")
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    device = os.stat(mounted(repo)).st_dev
    setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    assert setting.read_text().strip() == "1024"  # already when `mount` has returned


def test_an_image_with_zero_runs_reports_its_data_blocks_and_copies_sparse(repo, make_image,
                                                                           mounted, tmp_path):
    source = make_image(16 << 20, "sparse", seed=4, name="vm1.img")
    record = repo.backup(source, name="vm1")
    image = mounted(repo, "vm1") / "vm1.img"
    data_bytes = record.size - record.stats.zero_bytes
    assert data_bytes < record.size // 4
    assert image.stat().st_blocks == -(-data_bytes // 512)
    copy = tmp_path / "copy.img"
    subprocess.run(["cp", str(image), str(copy)], check=True)
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_blocks * 512 <= 2 * data_bytes  # holes where the image has zeros


def test_the_mount_process_holds_no_passphrase_in_its_arguments_or_environment(
        repo, make_image, mounted, encryption):
    """The mount runs for days: `ps e` and /proc/PID/environ must not show the passphrase
    (the forked mount keeps the unlocked key in memory and erases the passphrase variable)."""
    repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")
    mountpoint = mounted(repo)
    log = Path(f"{mountpoint}.log").read_text()
    pid = int(re.search(r"\(pid (\d+)\)", log).group(1))
    passphrase = os.environ["DISKVAULT_PASSWORD"].encode()
    assert passphrase not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert passphrase not in Path(f"/proc/{pid}/environ").read_bytes()
