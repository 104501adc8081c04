"""What is mounted where, from /proc/self/mountinfo (``os.path.ismount`` cannot tell a
diskvault mount from any other, and fails on a mount whose daemon died)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
FS_TYPE = "fuse.diskvault"  # "fuse." + the subtype the mount is made with
_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline, \ as \ooo


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mounts() -> list[MountEntry]:
    entries = []
    for line in MOUNTINFO.read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        mountpoint = _unescape(fields.split(" ")[4])
        fs_type, source = (tail.split(" ") + [""])[:2]
        entries.append(MountEntry(mountpoint, fs_type, _unescape(source)))
    return entries


def find_mount(path: str) -> MountEntry | None:
    """The mount on ``path`` (an absolute, resolved path), the last one if stacked."""
    found = [entry for entry in mounts() if entry.mountpoint == path]
    return found[-1] if found else None
