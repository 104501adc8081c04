"""qcow2, vmdk, vhdx and vdi backed up as the disk they hold (through qemu-nbd): the same
chunks as the raw disk; --raw keeps the container; restore --format writes an image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskvault.sources.disk_formats import format_of_header
from diskvault.store.repository import Repository

from ..conftest import run_cli
from .conftest import need

FORMATS = ["qcow2", "qcow2-compressed", "vmdk", "vhdx", "vdi"]


def backup(repo: Path, source: Path | str, *args: str) -> dict:
    result = run_cli("backup", "-r", str(repo), str(source), "--json", *args, check=True)
    return json.loads(result.stdout)


def blocks(repo: Path, snapshot_id: str) -> list:
    with Repository.open(repo) as repository:
        return repository.load_snapshot(snapshot_id).blocks


@pytest.mark.parametrize("name", FORMATS)
def test_signature_names_the_format(disk_images, name):
    with open(disk_images[name], "rb") as handle:
        assert format_of_header(handle.read(512)) == name.split("-")[0]


def test_raw_disk_has_no_container_signature(disk_images):
    with open(disk_images["raw"], "rb") as handle:
        assert format_of_header(handle.read(512)) is None


def test_every_format_gives_the_raw_disks_chunks(disk_images, cli_repo):
    """Each container, backed up after the raw disk: the same manifest, 0 new bytes, and
    diff finds 0 changed ranges."""
    need("qemu-nbd", "libnbd")
    raw = backup(cli_repo, disk_images["raw"], "--name", "vm")
    for name in FORMATS:
        snapshot = backup(cli_repo, disk_images[name], "--name", "vm")
        assert snapshot["size"] == raw["size"], name
        assert snapshot["stats"]["new_bytes"] == 0, name
        assert blocks(cli_repo, snapshot["id"]) == blocks(cli_repo, raw["id"]), name
        diff = run_cli("diff", "-r", str(cli_repo), raw["id"], snapshot["id"], check=True)
        assert diff.stdout.decode().startswith("0 changed ranges"), name
        assert snapshot["source"] == str(disk_images[name]), name


def test_qcow2_over_a_backing_file_is_read_through_the_chain(disk_images, cli_repo):
    need("qemu-nbd", "libnbd")
    raw = backup(cli_repo, disk_images["raw-changed"], "--name", "vm")
    overlay = backup(cli_repo, disk_images["qcow2-overlay"], "--name", "vm")
    assert overlay["stats"]["new_bytes"] == 0
    assert blocks(cli_repo, overlay["id"]) == blocks(cli_repo, raw["id"])


def test_raw_flag_keeps_the_container_bytes(disk_images, cli_repo, tmp_path):
    qcow2 = disk_images["qcow2-compressed"]
    snapshot = backup(cli_repo, qcow2, "--name", "container", "--raw")
    assert snapshot["size"] == qcow2.stat().st_size
    out = run_cli("cat", "-r", str(cli_repo), snapshot["id"], check=True)
    assert out.stdout == qcow2.read_bytes()


def test_restore_format_qcow2_round_trips(disk_images, cli_repo, tmp_path):
    need("qemu-nbd", "libnbd")
    backup(cli_repo, disk_images["qcow2-overlay"], "--name", "vm")
    target = tmp_path / "back.qcow2"
    run_cli("restore", "-r", str(cli_repo), "vm", str(target), "--format", "qcow2",
            check=True)
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(disk_images["raw-changed"]), str(target)],
                             capture_output=True)
    assert compare.returncode == 0, compare.stdout
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(target)],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["actual-size"] < info["virtual-size"] // 2  # zeros left unallocated
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.qcow2", "cache", "repo", "state"]


def test_restore_format_refuses_an_existing_target(disk_images, cli_repo, tmp_path):
    backup(cli_repo, disk_images["raw"], "--name", "vm")
    target = tmp_path / "there.qcow2"
    target.write_bytes(b"keep me")
    result = run_cli("restore", "-r", str(cli_repo), "vm", str(target), "--format", "qcow2")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and b"exists" in result.stderr
    assert target.read_bytes() == b"keep me"


def test_missing_qemu_nbd_is_named_with_its_package(disk_images, cli_repo):
    result = run_cli("backup", "-r", str(cli_repo), str(disk_images["qcow2"]),
                     env={"PATH": "/nonexistent"})
    assert result.returncode == 1
    assert result.stderr.decode().strip() == ("diskvault: error: qemu-nbd is not installed: "
                                              "install the Debian package qemu-utils")


def test_unreadable_container_is_one_line(cli_repo, tmp_path):
    """A file with a qcow2 signature that qemu cannot open: one line, exit 2."""
    need("qemu-nbd")
    bogus = tmp_path / "bogus.qcow2"
    bogus.write_bytes(b"QFI\xfb" + bytes(4092))
    result = run_cli("backup", "-r", str(cli_repo), str(bogus))
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert b"qemu-nbd cannot read" in result.stderr and b"--raw" in result.stderr


def test_a_disk_held_for_writing_is_refused(disk_images, cli_repo, tmp_path):
    """A writable qemu-nbd holds the qcow2, as a running VM would: QEMU's image lock
    refuses the read, in one line, exit 2 (never a read of a disk being written)."""
    need("qemu-nbd", "libnbd")
    image = tmp_path / "running.qcow2"
    image.write_bytes(disk_images["qcow2"].read_bytes())
    pid_file = tmp_path / "writer.pid"
    writer = subprocess.Popen(["qemu-nbd", "--persistent", "--format=qcow2",
                               f"--socket={tmp_path / 'writer.sock'}",
                               f"--pid-file={pid_file}", str(image)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _poll(pid_file.exists, "the writer to open the image")
        result = run_cli("backup", "-r", str(cli_repo), str(image))
    finally:
        writer.terminate()
        writer.wait()
    assert result.returncode == 2
    line = result.stderr.decode().strip()
    assert "\n" not in line and "lock" in line and "in use" in line
    assert "--raw" not in line  # the container bytes of a disk being written are torn


def test_a_read_error_inside_a_qcow2_is_one_line_and_records_nothing(cli_repo, tmp_path):
    """Compressed clusters overwritten with garbage: QEMU cannot inflate them, qemu-nbd
    hangs up, and the backup fails in one line naming the file and QEMU's reason."""
    need("qemu-img", "qemu-nbd", "libnbd")
    raw, damaged = tmp_path / "text.raw", tmp_path / "damaged.qcow2"
    with open(raw, "wb") as handle:
        handle.truncate(4 << 20)
        handle.seek(1 << 20)
        handle.write(b"".join(b"line %d of some text\n" % i for i in range(50_000)))
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
                    str(damaged)], check=True)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:  # the compressed data lies after the tables
        handle.seek(size * 9 // 10)
        handle.write(b"\xff" * (size // 20))
    result = run_cli("backup", "-r", str(cli_repo), str(damaged))
    assert result.returncode == 1
    line = result.stderr.decode().strip()
    assert "\n" not in line and str(damaged) in line and "Input/output error" in line
    assert run_cli("list", "-r", str(cli_repo), "--json", check=True).stdout.strip() == b"[]"


def _children(pid: int) -> dict[int, str]:
    """The live children of ``pid``: pid -> command name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
            state, parent = rest.split()[:2]
            if int(parent) == pid and state != "Z":
                found[int(entry.name)] = name
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _poll(condition, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_diskvault_leaves_no_qemu_nbd(disk_images, repo, tmp_path):
    """diskvault waiting for the writer lock with qemu-nbd and the NBD reader running,
    killed with SIGKILL: both children go with it, and the next run removes the server's
    folder."""
    need("qemu-nbd", "libnbd")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = {**os.environ, "TMPDIR": str(temporary)}
    with repo.writer_lock("test holds the lock"):
        process = subprocess.Popen(
            [sys.executable, "-m", "diskvault", "backup", "-r", str(repo.location),
             str(disk_images["qcow2"]), "--lock-wait", "120"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
        try:
            children = _poll(lambda: (found := _children(process.pid)) and
                             {"qemu-nbd", "python3"} <= set(found.values()) and found,
                             "qemu-nbd and the NBD reader to start")
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        _poll(lambda: not any(_alive(pid) for pid in children), "the children to die")
    assert len(list(temporary.iterdir())) == 1  # the killed run's server folder
    run_cli("backup", "-r", str(repo.location), str(disk_images["qcow2"]),
            env={"TMPDIR": str(temporary)}, check=True)
    assert list(temporary.iterdir()) == []


def test_a_qcow2_inside_the_repository_is_refused(disk_images, cli_repo):
    inside = cli_repo / "vm.qcow2"
    inside.write_bytes(disk_images["qcow2"].read_bytes())
    result = run_cli("backup", "-r", str(cli_repo), str(inside))
    assert result.returncode == 2 and b"inside the repository" in result.stderr
