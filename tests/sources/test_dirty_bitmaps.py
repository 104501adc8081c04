"""backup --dirty-bitmap over a real qemu-storage-daemon: the next night reads only the
extents QEMU's bitmap marks dirty and restores bit-exact; a base not made with the bitmap,
or of another size, means a full read with a warning; a server without the bitmap is one
line, exit 2."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

from diskvault.store.backup.bitmap_base import bitmap_base
from diskvault.store.backup.source import CHECKED, UNCHECKED
from diskvault.store.format.snapshots import BackupStats, SnapshotRecord

from ..conftest import run_cli
from .conftest import qemu_img
from .storage_daemon import StorageDaemon, make_disk

DISK_BYTES = 16 << 20
CHANGES = ((1 << 20, 65536), (5 << 20, 4096), (11 << 20, 131072))  # (offset, length)
DIRTY_BYTES = 65536 + 65536 + 131072  # the bitmap's granularity is 64 KiB


def backup(repo: Path, uri: str, *args: str):
    """(the snapshot's JSON, the backup's standard error)."""
    result = run_cli("backup", "-r", str(repo), uri, "--name", "vm", "--json", *args,
                     check=True)
    return json.loads(result.stdout), result.stderr.decode()


def cat(repo: Path, snapshot_id: str) -> bytes:
    return run_cli("cat", "-r", str(repo), snapshot_id, check=True).stdout


def change(daemon: StorageDaemon, seed: int) -> None:
    rng = random.Random(seed)
    for offset, length in CHANGES:
        daemon.write(offset, rng.randbytes(length))


def test_next_night_reads_only_the_dirty_extents(cli_repo, tmp_path):
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path) as daemon:
        first, said = backup(cli_repo, daemon.uri, "--dirty-bitmap", "B")
        assert "the series has no snapshot yet: the whole of" in said
        assert first["dirty_bitmap"] == "B" and first["stats"]["bytes_read"] == DISK_BYTES // 2
        change(daemon, 1)
        served_before = daemon.served_bytes()
        second, said = backup(cli_repo, daemon.uri, "--dirty-bitmap", "B",
                              "--verify-unchanged", "4")
        served = daemon.served_bytes() - served_before
        assert "warning" not in said
        assert second["base_id"] == first["id"] and second["dirty_bitmap"] == "B"
        # What was read is the dirty extents and the little around them that puts the
        # chunker back in step (4 KiB chunks here), and the 4 verified chunks.
        assert DIRTY_BYTES <= second["stats"]["bytes_read"] < 2 * DIRTY_BYTES
        assert served <= second["stats"]["bytes_read"] + 4 * 16384
        assert cat(cli_repo, second["id"]) == daemon.image()
    info = run_cli("info", "-r", str(cli_repo), second["id"], check=True).stdout.decode()
    assert "dirty bitmap B (counts the changes since this read began)" in info


def test_a_server_without_the_bitmap_is_one_line_exit_2(cli_repo, tmp_path):
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path) as daemon:
        result = run_cli("backup", "-r", str(cli_repo), daemon.uri, "--name", "vm",
                         "--dirty-bitmap", "nightly")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "offers no dirty bitmap nightly (meta context qemu:dirty-bitmap:nightly)" in lines[0]
    assert json.loads(run_cli("list", "-r", str(cli_repo), "--json", check=True).stdout) == []


def test_a_base_made_without_the_bitmap_means_a_full_read(cli_repo, tmp_path):
    with StorageDaemon(make_disk(tmp_path / "disk.qcow2", DISK_BYTES), tmp_path) as daemon:
        plain, _ = backup(cli_repo, daemon.uri)
        assert "dirty_bitmap" not in plain
        change(daemon, 2)
        whole, said = backup(cli_repo, daemon.uri, "--dirty-bitmap", "B")
        assert f"snapshot {plain['id'][:8]} was made from {daemon.uri} without a dirty " \
               f"bitmap" in said
        assert whole["stats"]["bytes_read"] >= DISK_BYTES // 2 and "base_id" not in whole
        assert cat(cli_repo, whole["id"]) == daemon.image()


def test_a_grown_disk_means_a_full_read(cli_repo, tmp_path):
    disk = make_disk(tmp_path / "disk.qcow2", DISK_BYTES)
    with StorageDaemon(disk, tmp_path) as daemon:
        first, _ = backup(cli_repo, daemon.uri, "--dirty-bitmap", "B")
    qemu_img("resize", "-q", str(disk), str(2 * DISK_BYTES))
    with StorageDaemon(disk, tmp_path) as daemon:
        grown, said = backup(cli_repo, daemon.uri, "--dirty-bitmap", "B")
        assert f"size changed since snapshot {first['id'][:8]} ({DISK_BYTES} -> " \
               f"{2 * DISK_BYTES} bytes)" in said
        assert "base_id" not in grown and grown["size"] == 2 * DISK_BYTES
        assert cat(cli_repo, grown["id"]) == daemon.image()


def test_dirty_bitmap_wants_a_qmp_or_nbd_uri(cli_repo, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    result = run_cli("backup", "-r", str(cli_repo), str(image), "--dirty-bitmap", "B")
    assert result.returncode == 2
    assert "--dirty-bitmap reads a bitmap QEMU keeps: give a running guest's drive" in \
        result.stderr.decode()


def record(**fields) -> SnapshotRecord:
    values = dict(id="a" * 16, name="vm", time=datetime.now(timezone.utc), source="nbd://h/vm",
                  size=100, host="h", tags=[], stats=BackupStats(), dirty_bitmap="B",
                  consistency=CHECKED)
    return SnapshotRecord(**{**values, **fields})


def test_the_base_is_the_latest_snapshot_made_with_the_bitmap():
    latest = record()
    assert bitmap_base(latest, "nbd://h/vm", "B", 100).record is latest
    for candidate, why in ((None, "no snapshot yet"),
                           (record(dirty_bitmap="C"), "with dirty bitmap C, not from"),
                           (record(source="nbd://other/vm"), "made from nbd://other/vm"),
                           (record(consistency=UNCHECKED), "not held still"),
                           (record(size=99), "size changed since snapshot aaaaaaaa (99 -> 100")):
        base = bitmap_base(candidate, "nbd://h/vm", "B", 100)
        assert base.record is None and why in base.why_not
    assert bitmap_base(latest, "nbd://h/vm", "B", 100, counts_from="a" * 16).record is latest
    base = bitmap_base(latest, "nbd://h/vm", "B", 100, counts_from="b" * 16)
    assert base.record is None and "counts the changes since snapshot bbbbbbbb" in base.why_not
