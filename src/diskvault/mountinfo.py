"""What is mounted where, read from /proc/self/mountinfo: the one parser behind the
mount's checks (fuse/mounttable.py) and restore's refusal of a mounted device
(store/host/devices.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline, \ as \ooo


@dataclass(frozen=True)
class MountEntry:
    device_number: str  # "major:minor" of the mounted filesystem
    mountpoint: str
    fs_type: str
    source: str


def unescape(field: str) -> str:
    """A mount table field with its octal escapes (\\040) decoded."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def read_mounts(table: Path = MOUNTINFO) -> list[MountEntry]:
    """Every mount of this process's namespace, in the table's order (OSError if the
    table cannot be read)."""
    entries = []
    for line in table.read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split(" ")
        fs_type, source = (tail.split(" ") + [""])[:2]
        entries.append(MountEntry(parts[2], unescape(parts[4]), fs_type, unescape(source)))
    return entries
