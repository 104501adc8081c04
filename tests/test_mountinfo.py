"""The one mountinfo parser: fields by position, the optional fields before ' - ' skipped,
octal escapes decoded, stacked mounts kept in order."""

from __future__ import annotations

from pathlib import Path

from diskvault.mountinfo import MountEntry, read_mounts

TABLE = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 0:45 / /mnt/my\\040disk rw,nosuid master:3 unbindable - fuse.diskvault "
    "diskvault\\134vm rw,user_id=0\n"
    "41 40 7:1 / /mnt/my\\040disk rw - vfat /dev/loop1 rw\n"
)


def test_entries_are_read_in_order_with_escapes_decoded(tmp_path: Path):
    table = tmp_path / "mountinfo"
    table.write_text(TABLE)
    assert read_mounts(table) == [
        MountEntry("254:0", "/", "ext4", "/dev/vda"),
        MountEntry("0:45", "/mnt/my disk", "fuse.diskvault", "diskvault\\vm"),
        MountEntry("7:1", "/mnt/my disk", "vfat", "/dev/loop1"),
    ]


def test_this_process_sees_its_root_mounted():
    assert any(entry.mountpoint == "/" for entry in read_mounts())
