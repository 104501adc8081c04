"""An LVM snapshot of a logical volume: made at the start, read, removed on every way out.

A snapshot carries the tag SNAPSHOT_TAG and is made only under a lock on its origin
(exclusive.py). So when a run holds the lock, every tagged snapshot of the origin is a
leftover of a run that was killed, and is removed before a new one is made."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import PointInTimeFailed
from .exclusive import held_alone

SNAPSHOT_TAG = "diskvault_point_in_time"
DEFAULT_SNAPSHOT_SIZE = "20%ORIGIN"  # room for the origin's writes while it is read
LVM_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LogicalVolume:
    group: str
    name: str
    thin: bool  # a thin volume's snapshot takes no size and shares the pool

    @property
    def full_name(self) -> str:
        return f"{self.group}/{self.name}"


def logical_volume(path: Path) -> LogicalVolume | None:
    """The logical volume ``path`` is, as ``lvs`` sees it; None for anything else (and
    where lvm2 is missing or may not be asked)."""
    try:
        found = _lvm("lvs", "--noheadings", "--separator", "|", "-o",
                     "vg_name,lv_name,lv_attr", str(path))
    except PointInTimeFailed:
        return None
    fields = found.strip().split("|")
    if len(fields) != 3:
        return None
    group, name, attributes = (field.strip() for field in fields)
    return LogicalVolume(group, name, attributes.startswith("V"))


@contextmanager
def lvm_snapshot(volume: LogicalVolume, size: str | None = None) -> Iterator[Path]:
    """The device of a new snapshot of ``volume``, removed on the way out; a killed run's
    snapshot of it is removed first."""
    with held_alone(f"lvm-{volume.group}-{volume.name}",
                    f"another diskvault backup of {volume.full_name} holds its LVM snapshot "
                    f"now: wait for it to end"):
        for leftover in _tagged_snapshots(volume):
            _lvm("lvremove", "--yes", f"{volume.group}/{leftover}")
        name = f"{volume.name}.diskvault-{os.getpid()}"
        room = (["--setactivationskip", "n"] if volume.thin
                else ["--extents" if "%" in (size or DEFAULT_SNAPSHOT_SIZE) else "--size",
                      size or DEFAULT_SNAPSHOT_SIZE])
        _lvm("lvcreate", "--snapshot", "--name", name, "--addtag", SNAPSHOT_TAG,
             "--permission", "r", *room, volume.full_name)
        try:
            yield Path("/dev") / volume.group / name
        finally:
            _lvm("lvremove", "--yes", f"{volume.group}/{name}")


def _tagged_snapshots(volume: LogicalVolume) -> list[str]:
    listing = _lvm("lvs", "--noheadings", "--separator", "|", "-o", "lv_name,origin,lv_tags",
                   volume.group)
    names = []
    for line in listing.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) == 3 and fields[1] == volume.name and SNAPSHOT_TAG in fields[2].split(","):
            names.append(fields[0])
    return names


def _lvm(*arguments: str) -> str:
    """Run one lvm2 command; its stdout, or PointInTimeFailed with its own message."""
    try:
        result = subprocess.run(arguments, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=LVM_TIMEOUT_S,
                                env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"})
    except FileNotFoundError:
        raise PointInTimeFailed(f"{arguments[0]} is not installed (apt-get install lvm2)") \
            from None
    except subprocess.TimeoutExpired:
        raise PointInTimeFailed(f"{arguments[0]} did not answer in {LVM_TIMEOUT_S:g} s") \
            from None
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["no message"])[-1].strip()
        raise PointInTimeFailed(f"{arguments[0]} failed: {said}")
    return result.stdout
