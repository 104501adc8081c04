"""Is a block device in use? Restore writes a whole device in place, so it must never write
one that is mounted, used as swap, or held by another device (device mapper, md RAID) --
neither the device itself nor any of its partitions.

The kernel's own answer is an exclusive open (``O_EXCL`` on a block device fails with
EBUSY while it is mounted or claimed); it covers the device, not its partitions, and it
does not say who holds it. So the mount table, /proc/swaps and sysfs ``holders`` are read
too, for the partitions and for a message that names the user.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ...errors import BadInput
from ...mountinfo import read_mounts, unescape

SWAPS = Path("/proc/swaps")


def _family(device: Path) -> dict[str, Path]:
    """The device and its partitions: 'major:minor' -> their sysfs folder, whose name is
    the kernel's name of the device (sda, sda1, loop0p1)."""
    rdev = os.stat(device).st_rdev
    number = f"{os.major(rdev)}:{os.minor(rdev)}"
    folder = Path(os.path.realpath(f"/sys/dev/block/{number}"))
    if not folder.is_dir():
        return {number: Path(os.path.realpath(device))}  # no sysfs: the name under /dev
    family = {number: folder}
    for child in sorted(folder.iterdir()):
        if (child / "partition").is_file():
            family[(child / "dev").read_text().strip()] = child
    return family


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _dev_paths(family: dict[str, Path]) -> set[str]:
    return {f"/dev/{folder.name}" for folder in family.values()}


def _mounts(family: dict[str, Path]) -> list[str]:
    paths = _dev_paths(family)
    found = []
    try:
        mounts = read_mounts()
    except OSError:
        return []
    for mount in mounts:
        if mount.device_number in family:
            found.append(f"/dev/{family[mount.device_number].name} is mounted at "
                         f"{mount.mountpoint}")
        elif os.path.realpath(mount.source) in paths:
            found.append(f"{os.path.realpath(mount.source)} is mounted at {mount.mountpoint}")
    return found


def _swaps(family: dict[str, Path]) -> list[str]:
    paths = _dev_paths(family)
    swapped = (os.path.realpath(unescape(line.split()[0])) for line in _lines(SWAPS)[1:]
               if line.strip())
    return [f"{path} is used as swap" for path in swapped if path in paths]


def _holders(family: dict[str, Path]) -> list[str]:
    found = []
    for folder in family.values():
        holders = folder / "holders"
        if holders.is_dir():
            found += [f"/dev/{folder.name} is held by {holder.name}"
                      for holder in sorted(holders.iterdir())]
    return found


def device_users(device: Path) -> list[str]:
    """What uses the block device or one of its partitions, one phrase each
    ("/dev/sdb1 is mounted at /srv", "/dev/sdb is held by dm-0"); empty if nothing."""
    family = _family(device)
    return _mounts(family) + _swaps(family) + _holders(family)


def open_unused_device(device: Path) -> int:
    """The device opened for reading and writing (a delta restore reads it), exclusively (nobody can mount or claim it while the fd
    is open), or BadInput naming what uses it."""

    def refuse(users: list[str]) -> BadInput:
        what = "; ".join(users) or "another program has it open exclusively"
        return BadInput(f"block device {device} is in use ({what}); unmount it or stop "
                        f"what holds it, then restore again")

    users = device_users(device)
    if users:
        raise refuse(users)
    try:
        return os.open(device, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.EBUSY:
            raise refuse(device_users(device)) from None
        raise
