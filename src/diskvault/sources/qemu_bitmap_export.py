"""``backup --qmp SOCKET --dirty-bitmap B NODE``: a block node of a QEMU (a stopped guest's
disk served by qemu-storage-daemon, say) exported over NBD with its dirty bitmap for one
backup, the bitmap rotated through QMP (bitmap_rotation.py) only once the snapshot is
recorded (docs/vm-sources.md).

The export is made for the backup and deleted after it: QEMU keeps an exported bitmap busy
(no clear, no merge into it), so a bitmap can only be rotated between exports. It serves
the node as it is, not a point-in-time view: for a running guest, use the guest's
point-in-time source. QMP is spoken through QEMU's own ``qemu.qmp`` library.

One run at a time per monitor (exclusive.py): while a run holds it, an export or successor
bitmap it finds is a killed run's. The export's socket lives in a private folder named after
the monitor's path, so that the run after a killed one removes that folder as well."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import PointInTimeFailed, SourceError
from .bitmap_rotation import BitmapRotation
from .exclusive import held_alone

FOLDER_PREFIX = "diskvault-qmp-"
EXPORT_ID = "diskvault-bitmap"
EXPORT_NAME = "diskvault"
COMMAND_TIMEOUT_S = 60.0
GONE_WAIT_S = 30.0


class Monitor:
    """A QMP connection: ``execute`` returns QEMU's answer or raises PointInTimeFailed."""

    def __init__(self, path: Path):
        from qemu.qmp import ConnectError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self.path = path
        self._protocol = QEMUMonitorProtocol(str(path))
        try:
            self._protocol.connect()
        except (ConnectError, OSError) as error:
            raise SourceError(f"cannot reach the QEMU monitor at {path}: {error}") from None
        self._protocol.settimeout(COMMAND_TIMEOUT_S)

    def execute(self, command: str, **arguments) -> object:
        from qemu.qmp import ExecuteError, QMPError

        try:
            return self._protocol.cmd(command, **arguments)
        except ExecuteError as error:
            raise PointInTimeFailed(f"QEMU at {self.path} refused {command}: "
                                    f"{error.error.error.desc}") from None
        except QMPError as error:
            raise PointInTimeFailed(f"the connection to QEMU at {self.path} broke during "
                                    f"{command} ({error})") from None

    def close(self) -> None:
        self._protocol.close()


@dataclass
class BitmapExport:
    """The export's NBD URI; the id of the snapshot the bitmap counts from, if QEMU says;
    and, once the backup has written it, the id of the new snapshot (``recorded``)."""
    uri: str
    counts_from: str | None
    recorded: str | None = None

    def note_recorded(self, snapshot_id: str) -> None:
        self.recorded = snapshot_id


@contextmanager
def rotating_export(qmp: Path, bitmap: str, node: str | None) -> Iterator[BitmapExport]:
    """``node`` exported with ``bitmap`` for the length of the block. The bitmap is rotated
    when the block ends with ``recorded`` set (the snapshot is written), else merged back;
    a killed run's export and successor are undone first."""
    folder = export_folder(qmp)
    with held_alone(folder.name, f"another diskvault backup is using the QEMU at {qmp} "
                                 f"now: wait for it to end"):
        with _rotated(Monitor(qmp), bitmap, node, folder) as export:
            yield export


@contextmanager
def _rotated(monitor: Monitor, bitmap: str, node: str | None,
             folder: Path) -> Iterator[BitmapExport]:
    try:
        rotation = BitmapRotation.find(monitor, bitmap, node)
        _remove_leftovers(monitor, folder)
        rotation.recover()
        export = None
        rotation.start()
        try:
            with _export(monitor, rotation, folder) as uri:
                export = BitmapExport(uri, rotation.counts_from())
                yield export
        finally:
            if export is not None and export.recorded is not None:
                rotation.commit(export.recorded)
            else:
                rotation.abandon()
    finally:
        monitor.close()


def export_folder(qmp: Path) -> Path:
    """The private folder of the export's socket, one per QEMU monitor."""
    digest = hashlib.sha256(str(qmp.absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / (FOLDER_PREFIX + digest)


@contextmanager
def _export(monitor: Monitor, rotation: BitmapRotation, folder: Path) -> Iterator[str]:
    os.mkdir(folder, 0o700)  # exclusively: never into a folder someone else made
    try:
        socket = folder / "nbd.sock"
        monitor.execute("nbd-server-start",
                        addr={"type": "unix", "data": {"path": str(socket)}})
        try:
            monitor.execute("block-export-add", type="nbd", id=EXPORT_ID,
                            **{"node-name": rotation.node}, name=EXPORT_NAME,
                            writable=False, bitmaps=[rotation.bitmap])
            try:
                yield f"nbd+unix:///{EXPORT_NAME}?socket={quote(str(socket))}"
            finally:
                _delete_export(monitor)
        finally:
            monitor.execute("nbd-server-stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_leftovers(monitor: Monitor, folder: Path) -> None:
    """A killed run's export, the NBD server it started (ours: it has our export) and its
    folder (this user's, a real folder)."""
    if any(entry["id"] == EXPORT_ID for entry in monitor.execute("query-block-exports")):
        _delete_export(monitor)
        monitor.execute("nbd-server-stop")
    try:
        status = folder.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        raise SourceError(f"{folder} is in the way of the export's socket and is not a "
                          f"folder of this user's: remove it")
    shutil.rmtree(folder)


def _delete_export(monitor: Monitor) -> None:
    """Delete the export and wait until QEMU has let go of it (and of the bitmap)."""
    monitor.execute("block-export-del", id=EXPORT_ID, mode="hard")
    deadline = time.monotonic() + GONE_WAIT_S
    while any(entry["id"] == EXPORT_ID for entry in monitor.execute("query-block-exports")):
        if time.monotonic() > deadline:
            raise PointInTimeFailed(f"QEMU at {monitor.path} did not remove the export "
                                    f"{EXPORT_ID} in {GONE_WAIT_S:g} s")
        time.sleep(0.01)
