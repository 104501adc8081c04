"""A running QEMU guest's drive as a backup source: ``qmp+unix:///PATH/TO/MONITOR?drive=NAME``
(a qemu-storage-daemon's block node too: ``?drive=NODE``).

diskvault connects to the QMP monitor socket, asks QEMU for a point-in-time view of the
drive (fleecing.py), reads it as an NBD export (nbd.py) and releases it. With a dirty
bitmap, the bitmap's rotation starts in the view's own instant and the bitmap is offered
with the export, so that only what it marks is read; it is rotated once the snapshot is
recorded, and merged back otherwise (bitmap_rotation.py). One run per monitor at a time
(exclusive.py); a killed run's leftovers, in QEMU and on disk, are removed by the next run
on that monitor."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SourceError
from .exclusive import held_alone
from .guest_freeze import DEFAULT_FREEZE_LIMIT_S, GuestFreeze
from .nbd import NbdSource

log = logging.getLogger(__name__)

QMP_SCHEME = "qmp+unix://"
FOLDER_PREFIX = "diskvault-qmp-"  # in $TMPDIR, then the guest's key: one run's overlay and socket
# What a snapshot record's "consistency" says of the view.
CRASH_CONSISTENT, FROZEN = "qemu", "qemu-frozen"


def is_qmp_uri(text: str) -> bool:
    return str(text).startswith(QMP_SCHEME)


@dataclass(frozen=True)
class GuestDrive:
    """Which guest (its monitor socket) and which of its drives (None: its only one)."""
    monitor: Path
    drive: str | None


def parse_qmp_uri(text: str) -> GuestDrive:
    parts = urlsplit(text)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"drive"})
    if parts.netloc or not parts.path or unknown or len(query.get("drive", [])) > 1:
        raise SourceError(f"{text} is not a QMP source: write qmp+unix:///PATH/TO/SOCKET or "
                          f"qmp+unix:///PATH/TO/SOCKET?drive=NAME")
    drive = query.get("drive", [None])[0]
    return GuestDrive(Path(unquote(parts.path)), drive or None)


@dataclass(frozen=True)
class Freeze:
    """Freeze the guest's filesystems through the qemu-guest-agent at ``agent``."""
    agent: Path
    limit_s: float = DEFAULT_FREEZE_LIMIT_S


@contextmanager
def running_guest_source(uri: str, freeze: Freeze | None = None,
                         bitmap: str | None = None) -> Iterator[NbdSource]:
    """The drive ``uri`` names, as one instant saw it, open for reading (with a dirty
    ``bitmap``: what it marked until that instant, too; tell the source when its snapshot
    is ``recorded``); everything made in QEMU and on disk for it is gone when the block
    ends."""
    # Here, not above: qemu.qmp (and asyncio) load only when a guest is backed up, not with
    # every command that can name a source.
    from .fleecing import fleecing_export, find_drive
    from .qmp import Monitor

    target = parse_qmp_uri(uri)
    key = guest_key(target.monitor)
    with held_alone(f"qmp-{key}", f"another diskvault backup through the QEMU monitor at "
                                  f"{target.monitor} is running: wait for it to end"), \
            Monitor(target.monitor) as monitor:
        _remove_leftovers(monitor, key)
        drive = find_drive(monitor, target.drive)
        freezer = GuestFreeze(freeze.agent, freeze.limit_s) if freeze else None
        with _rotation(monitor, drive.node, bitmap) as rotation, \
                tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{key}-") as folder, \
                fleecing_export(monitor, drive, Path(folder),
                                at_the_instant=rotation.start_actions,
                                bitmaps=[bitmap] if bitmap else [],
                                held_still=freezer.held if freezer else None) as view, \
                NbdSource(view, label=uri, consistency=_consistency(freezer), bitmap=bitmap,
                          counts_from=rotation.counts_from,
                          on_recorded=rotation.recorded) as source:
            yield source


def guest_key(monitor: Path) -> str:
    """The short name of a monitor's runs: their lock, and their folders in $TMPDIR
    (``diskvault-qmp-KEY-*``, an overlay and a socket each)."""
    return hashlib.sha256(os.path.realpath(monitor).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Rotating:
    """What a read does with its bitmap's rotation: actions for the view's instant, the
    snapshot the bitmap counts from, whom to tell the recorded snapshot."""
    start_actions: list[dict]
    counts_from: str | None
    recorded: Callable[[str], None] | None


@contextmanager
def _rotation(monitor, node: str, bitmap: str | None) -> Iterator[_Rotating]:
    """``bitmap``'s rotation on ``node`` around the block, a killed run's merged back first
    (none without a bitmap)."""
    if bitmap is None:
        yield _Rotating([], None, None)
        return
    from .bitmap_rotation import BitmapRotation

    rotation = BitmapRotation.find(monitor, bitmap, node)
    rotation.recover()
    with rotation.settled() as recorded:
        yield _Rotating(rotation.start_actions(), rotation.counts_from(), recorded)


def _consistency(freezer: GuestFreeze | None) -> str:
    """What the record says of a view made with ``freezer`` (None: no freeze asked)."""
    if freezer is None:
        return CRASH_CONSISTENT
    if not freezer.filesystems:
        log.warning("the guest agent at %s froze no filesystem (none mounted that it can "
                    "freeze): the snapshot is crash-consistent only", freezer.agent)
        return CRASH_CONSISTENT
    return FROZEN


def _remove_leftovers(monitor, key: str) -> None:
    """A killed run of this guest left its folder (overlay, socket) and, in QEMU, what
    fleecing.remove_leftovers removes; the guest's lock is held, so no run uses them."""
    from .fleecing import SOCKET_NAME, remove_leftovers

    folders = run_folders(key)
    remove_leftovers(monitor, server_left=any((folder / SOCKET_NAME).exists()
                                              for folder in folders))
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def run_folders(key: str) -> list[Path]:
    """The folders the runs through the monitor ``key`` (guest_key) have now."""
    return list(Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}{key}-*"))
