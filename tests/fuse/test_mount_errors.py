"""What goes wrong, said in one line: bad mountpoints, unknown snapshots, missing FUSE
pieces, busy or dead mounts; and damaged data read through a mount is EIO, never bytes."""

from __future__ import annotations

import ctypes.util
import errno
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.fuse.mounttable import find_mount
from diskvault.store.format.packs import pack_name

from ..conftest import run_cli
from .conftest import require_fuse, unmount_for_good, wait_for


def fails_with(result: subprocess.CompletedProcess, exit_code: int, pattern: str) -> None:
    """One line on stderr, the CLI's error prefix, the expected words and exit code."""
    stderr = result.stderr.decode()
    assert result.returncode == exit_code, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("diskvault: error: "), stderr
    assert re.search(pattern, stderr), stderr


def mount_cli(repo, mountpoint: Path, *args: str, env: dict | None = None):
    return run_cli("mount", "-r", str(repo.root), str(mountpoint), *args, env=env)


@pytest.fixture
def snapshot(repo, make_image):
    return repo.backup(make_image(1 << 20, "random", name="vm1.img"), name="vm1")


def test_unusable_mountpoints_are_refused_with_the_reason(repo, snapshot, tmp_path):
    fails_with(mount_cli(repo, tmp_path / "missing"), 2, "does not exist")
    (tmp_path / "file").write_text("x")
    fails_with(mount_cli(repo, tmp_path / "file"), 2, "is not a folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    fails_with(mount_cli(repo, tmp_path / "full"), 2, "is not empty")


def test_a_mountpoint_that_is_already_a_mount_is_refused(repo, snapshot, mounted):
    mountpoint = mounted(repo)
    fails_with(mount_cli(repo, mountpoint), 2, "is already a mount")


def test_an_unknown_snapshot_is_refused(repo, snapshot, tmp_path):
    require_fuse()
    (tmp_path / "mnt").mkdir()
    fails_with(mount_cli(repo, tmp_path / "mnt", "nosuchsnapshot"), 2, "no snapshot")
    assert find_mount(str(tmp_path / "mnt")) is None


def test_missing_libfuse_and_fusermount_name_the_package_to_install(repo, snapshot, tmp_path):
    (tmp_path / "mnt").mkdir()
    fails_with(mount_cli(repo, tmp_path / "mnt",
                         env={"FUSE_LIBRARY_PATH": str(tmp_path / "no" / "libfuse3.so.3")}),
               1, r"install the Debian packages 'fuse3' and 'libfuse3-3'")
    libfuse2 = ctypes.util.find_library("fuse")  # the mount needs 3: its lseek
    if libfuse2 is not None:
        fails_with(mount_cli(repo, tmp_path / "mnt", env={"FUSE_LIBRARY_PATH": libfuse2}), 1,
                   r"is libfuse 2, not 3 .*'fuse3'")
    fails_with(mount_cli(repo, tmp_path / "mnt", env={"PATH": str(tmp_path / "nowhere")}),
               1, r"apt-get install fuse3")
    fails_with(run_cli("umount", str(tmp_path / "mnt"), env={"PATH": str(tmp_path)}), 2,
               "is not mounted")


def test_umount_of_something_else_is_refused(tmp_path):
    fails_with(run_cli("umount", str(tmp_path)), 2, "is not mounted")
    fails_with(run_cli("umount", "/proc"), 2, "is a proc mount, not a diskvault one")


def test_umount_of_a_busy_mount_says_so_and_works_once_released(repo, snapshot, mounted):
    mountpoint = mounted(repo)
    handle = open(mountpoint / "vm1" / "latest" / "vm1.img", "rb")
    try:
        fails_with(run_cli("umount", str(mountpoint)), 1, "is busy.*fuser -vm")
        assert find_mount(str(mountpoint)) is not None
    finally:
        handle.close()
    run_cli("umount", str(mountpoint), check=True)
    assert find_mount(str(mountpoint)) is None


def test_a_mount_whose_process_died_is_reported_and_cleared_by_umount(repo, snapshot, mounted):
    mountpoint = mounted(repo)
    log = Path(f"{mountpoint}.log").read_text()
    pid = int(re.search(r"\(pid (\d+)\)", log).group(1))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the killed mount process to go")
    fails_with(mount_cli(repo, mountpoint), 2, "whose process has died.*diskvault umount")
    run_cli("umount", str(mountpoint), check=True)
    assert find_mount(str(mountpoint)) is None and os.listdir(mountpoint) == []


def test_foreground_mount_stays_until_unmounted(repo, snapshot, tmp_path):
    require_fuse()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "diskvault", "mount", "-r",
                                str(repo.root), str(mountpoint), "--foreground"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_for(lambda: find_mount(str(mountpoint)) or process.poll() is not None,
                 "the foreground mount")
        assert process.poll() is None
        assert os.listdir(mountpoint) == ["vm1"]
        run_cli("umount", str(mountpoint), check=True)
        assert process.wait(timeout=30) == 0
        assert b"mounted at" in process.stderr.read()
    finally:
        if process.poll() is None:
            unmount_for_good(mountpoint, repo.root)
            process.wait(timeout=30)


def test_a_damaged_chunk_reads_as_eio_and_is_logged_with_snapshot_and_offset(
        repo, make_image, mounted):
    image = make_image(2 << 20, "random", name="vm1.img")
    original = image.read_bytes()
    record = repo.backup(image, name="vm1")
    offset, digest = data_entries(repo, record)[3]
    location = repo.storage.chunks.locate(digest)
    with open(repo.root / pack_name(location.pack_id), "r+b") as pack:
        pack.seek(location.offset + location.stored_size // 2)
        byte = pack.read(1)
        pack.seek(-1, os.SEEK_CUR)
        pack.write(bytes([byte[0] ^ 0x01]))
    mountpoint = mounted(repo)
    fd = os.open(mountpoint / "vm1" / record.time_label / "vm1.img", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as caught:
            os.pread(fd, 4096, offset)
        assert caught.value.errno == errno.EIO
        tail = len(original) - 65536
        assert os.pread(fd, 65536, tail) == original[tail:]
    finally:
        os.close(fd)
    log = Path(f"{mountpoint}.log").read_text()
    assert re.search(rf"snapshot {record.short_id} \(vm1, {record.time_label}\) at byte "
                     rf"offset {offset}: chunk {digest.hex()[:16]} .* does not match", log), log


def data_entries(repo, record) -> list[tuple[int, bytes]]:
    """(image offset, digest) of each data chunk of the snapshot's first manifest block."""
    entries, offset = [], record.blocks[0].offset
    for entry in repo.load_manifest_block(record.blocks[0].digest):
        if entry.digest is not None:
            entries.append((offset, entry.digest))
        offset += entry.length
    return entries
