"""Which point-in-time view a backup reads its source through, and the source opened
through it (docs/point-in-time.md).

``auto`` (the default) reads an image file on XFS or btrfs through a reflink clone, and an
LVM logical volume through an LVM snapshot: a clone costs no data copy and no space until
the file is written again, a snapshot only room for the writes made while it is read, and
both are gone when the backup ends, so they only ever make a backup more right. Anything
without a view is read in place and checked for changes afterwards (a block device cannot
be checked: a warning says so and the snapshot record keeps it)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PointInTimeFailed, SourceError
from ..store.backup.source import ImageSource
from .commands import AroundTheInstant, ViewCommands
from .lvm import logical_volume, lvm_snapshot
from .reflink import ReflinkUnavailable, reflink_clone

log = logging.getLogger(__name__)

AUTO, REFLINK, LVM, NONE = "auto", "reflink", "lvm", "none"
METHODS = (AUTO, REFLINK, LVM, NONE)


@dataclass(frozen=True)
class PointInTime:
    """How the user asked the source to be held still: a ``method`` of METHODS, the room an
    LVM snapshot gets (lvcreate's --size, or --extents with a %), and the commands run
    around the instant the view is made."""
    method: str = AUTO
    commands: ViewCommands = field(default_factory=ViewCommands)
    lvm_size: str | None = None


@contextmanager
def open_point_in_time(path: Path, request: PointInTime) -> Iterator[ImageSource]:
    """The source as one instant saw it, open for reading; the view is released on every
    way out. The --post-command runs once the view is made, or, for a source read in place
    (the read is the view), once the backup is over."""
    if request.method not in METHODS:
        raise SourceError(f"unknown point-in-time method {request.method!r}: use one of "
                          f"{', '.join(METHODS)}")
    with AroundTheInstant(request.commands, path) as around:
        with _view(path, request) as source:
            if not source.in_place:
                around.done()
            yield source


@contextmanager
def _view(path: Path, request: PointInTime) -> Iterator[ImageSource]:
    method = request.method
    kind = _kind(path)
    if method == REFLINK and kind != stat.S_IFREG:
        raise SourceError(f"--snapshot reflink clones image files, and {path} is not a "
                          f"regular file: use --snapshot none")
    if method == LVM and kind != stat.S_IFBLK:
        raise SourceError(f"--snapshot lvm snapshots logical volumes, and {path} is not a "
                          f"block device: use --snapshot none")
    if method in (AUTO, REFLINK) and kind == stat.S_IFREG:
        clone = _reflink_clone(path, required=method == REFLINK)
        if clone is not None:
            with ImageSource(path, view=clone, consistency=REFLINK) as source:
                yield source
            return
    if method in (AUTO, LVM) and kind == stat.S_IFBLK:
        volume = logical_volume(path)
        if volume is None and method == LVM:
            raise SourceError(f"{path} is not an LVM logical volume (lvs does not know it): "
                              f"use --snapshot none")
        if volume is not None:
            with lvm_snapshot(volume, request.lvm_size) as device, \
                    ImageSource(path, view=_open_device(device), consistency=LVM) as source:
                yield source
            return
    with ImageSource(path) as source:
        if source.is_block_device:
            log.warning("%s is a block device read in place: a write to it during the read "
                        "cannot be detected; stop its writer, or back up a snapshot of it "
                        "(--snapshot lvm for a logical volume)", path)
        yield source


def _reflink_clone(path: Path, required: bool) -> int | None:
    """A clone's descriptor; None where there can be none and it is not ``required``."""
    try:
        return reflink_clone(path)
    except ReflinkUnavailable as unavailable:
        if required:
            raise SourceError(f"{path} cannot be cloned: {unavailable.reason}; back it up in "
                              f"place with --snapshot none (a change during the read is "
                              f"detected)") from None
        log.debug("%s is read in place: %s", path, unavailable.reason)
        return None


def _open_device(device: Path) -> int:
    try:
        return os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise PointInTimeFailed(f"the LVM snapshot {device} cannot be opened "
                                f"({error.strerror})") from None


def _kind(path: Path) -> int | None:
    """The file type ``path`` names now (ImageSource says why when it names nothing
    usable)."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except OSError:
        return None
