"""Which point-in-time view a backup reads its source through, and the source opened
through it (docs/point-in-time.md).

``auto`` (the default) reads an image file on XFS or btrfs through a reflink clone: the
clone costs no data copy and no space until the file is written again, and it is gone when
the backup ends, so it only ever makes a backup more right. Anything without a view is read
in place and checked for changes afterwards (a block device cannot be checked: a warning
says so and the snapshot record keeps it)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError
from ..store.backup.source import ImageSource
from .commands import AroundTheInstant, ViewCommands
from .reflink import ReflinkUnavailable, reflink_clone

log = logging.getLogger(__name__)

AUTO, REFLINK, NONE = "auto", "reflink", "none"
METHODS = (AUTO, REFLINK, NONE)


@dataclass(frozen=True)
class PointInTime:
    """How the user asked the source to be held still: a ``method`` of METHODS and the
    commands run around the instant the view is made."""
    method: str = AUTO
    commands: ViewCommands = field(default_factory=ViewCommands)


@contextmanager
def open_point_in_time(path: Path, request: PointInTime) -> Iterator[ImageSource]:
    """The source as one instant saw it, open for reading; the view is released on every
    way out. The --post-command runs once the view is made, or, for a source read in place
    (the read is the view), once the backup is over."""
    with AroundTheInstant(request.commands, path) as around:
        with open_view(path, request.method) as source:
            if not source.in_place:
                around.done()
            yield source


def open_view(path: Path, method: str) -> ImageSource:
    """``path`` opened through the view ``method`` asks for, or in place."""
    if method not in METHODS:
        raise SourceError(f"unknown point-in-time method {method!r}: use one of "
                          f"{', '.join(METHODS)}")
    regular_file = _is_regular_file(path)
    if method == REFLINK and not regular_file:
        raise SourceError(f"--snapshot reflink clones image files, and {path} is not a "
                          f"regular file: use --snapshot none")
    if method in (AUTO, REFLINK) and regular_file:
        try:
            return ImageSource(path, view=reflink_clone(path), consistency=REFLINK)
        except ReflinkUnavailable as unavailable:
            if method == REFLINK:
                raise SourceError(f"{path} cannot be cloned: {unavailable.reason}; back it up "
                                  f"in place with --snapshot none (a change during the read "
                                  f"is detected)") from None
            log.debug("%s is read in place: %s", path, unavailable.reason)
    source = ImageSource(path)
    if source.is_block_device:
        log.warning("%s is a block device read in place: a write to it during the read "
                    "cannot be detected; stop its writer, or back up a snapshot of it", path)
    return source


def _is_regular_file(path: Path) -> bool:
    """What ``path`` names now (ImageSource says why when it names nothing usable)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
