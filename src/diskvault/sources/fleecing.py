"""A point-in-time NBD export of a running QEMU guest's drive: image fleecing, asked of QEMU
over its monitor (qmp.py).

A temporary qcow2 overlay whose backing is the live drive is added to QEMU, and a
``blockdev-backup sync=none`` job from the drive into it starts at the instant: from then on
QEMU copies each block the guest is about to overwrite into the overlay first, so the
overlay reads as the drive was at that instant while the guest keeps writing. The overlay
is exported read-only over NBD on a Unix socket in a private folder. QEMU 7.2 (Debian 12)
also has the ``snapshot-access`` driver, but putting its ``copy-before-write`` filter above
a drive needs a graph change QEMU 7.2 has no command for (``blockdev-replace``); the backup
job inserts the same filter itself.

Everything made carries a ``diskvault-`` name, one set per guest (a run holds its guest's
lock, running_guest.py), so a killed run's export, job and overlay are recognised and
removed by the next run; ``release`` undoes each step on every way out."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import DiskvaultError, PointInTimeFailed, SourceError
from .children import require_tool
from .qmp import CommandFailed, Monitor

log = logging.getLogger(__name__)

OVERLAY_NODE = "diskvault-fleece"
JOB_ID = "diskvault-fleece"
EXPORT_ID = "diskvault-fleece"
EXPORT_NAME = "diskvault"
SOCKET_NAME = "nbd.sock"
OVERLAY_NAME = "fleece.qcow2"
GONE_WAIT_S = 30.0  # for QEMU to finish a cancelled job or a deleted export


@dataclass(frozen=True)
class Drive:
    """A guest's drive as QEMU knows it: the node the guest writes through, and its size."""
    node: str
    size: int


def find_drive(monitor: Monitor, name: str | None) -> Drive:
    """The drive the user means by ``name``: a -drive id, a -device id or a node name (a
    qemu-storage-daemon has only nodes: its --blockdev node-names); without a name, the
    guest's only drive."""
    drives = [entry for entry in monitor.execute("query-block") if entry.get("inserted")]
    if name is None:
        if not drives:
            raise SourceError(f"the QEMU at {monitor.path} has no drive with a disk in it "
                              f"(a qemu-storage-daemon's block node: name it with "
                              f"?drive=NODE)")
        if len(drives) > 1:
            raise SourceError(f"the guest at {monitor.path} has {len(drives)} drives: name "
                              f"one with ?drive= ({_names(drives)})")
        return _drive(drives[0]["inserted"])
    for entry in drives:
        if name in (entry.get("device"), entry.get("qdev")):
            return _drive(entry["inserted"])
    for node in monitor.execute("query-named-block-nodes", flat=True):
        if node["node-name"] == name:
            return _drive(node)
    raise SourceError(f"the QEMU at {monitor.path} has no drive or block node {name!r} "
                      f"(its drives: {_names(drives) or 'none'})")


def _drive(node: dict) -> Drive:
    """The Drive of a block node as QEMU describes it (an ``inserted`` medium is one)."""
    return Drive(node["node-name"], node["image"]["virtual-size"])


def _names(drives: list[dict]) -> str:
    return ", ".join(entry.get("device") or entry.get("qdev") or entry["inserted"]["node-name"]
                     for entry in drives)


@contextmanager
def fleecing_export(monitor: Monitor, drive: Drive, folder: Path,
                    at_the_instant: Sequence[dict] = (), bitmaps: Sequence[str] = (),
                    held_still=None) -> Iterator[str]:
    """The NBD URI of ``drive`` as it was at one instant, served by QEMU until the block
    ends. ``folder`` is private and empty; the overlay and socket go there. Extra
    ``transaction`` actions in ``at_the_instant`` happen in the same instant (a dirty
    bitmap's rotation); ``bitmaps`` named there are offered with the export
    (``qemu:dirty-bitmap:NAME``). ``held_still`` (a context manager factory, e.g. a guest
    freeze) is entered just around the instant."""
    with ExitStack() as undo:
        _add_overlay(monitor, drive, folder / OVERLAY_NAME)
        undo.push(_undoing(_delete_overlay_node, monitor))
        with (held_still or nullcontext)():
            backup = {"type": "blockdev-backup",
                      "data": {"job-id": JOB_ID, "device": drive.node,
                               "target": OVERLAY_NODE, "sync": "none"}}
            monitor.execute("transaction", actions=[backup, *at_the_instant])
        undo.push(_undoing(_cancel_job, monitor))
        socket = folder / SOCKET_NAME
        try:
            monitor.execute("nbd-server-start",
                            addr={"type": "unix", "data": {"path": str(socket)}})
        except CommandFailed as failed:
            raise PointInTimeFailed(
                f"QEMU at {monitor.path} cannot serve the point-in-time view: "
                f"{failed.description} (is another NBD server, such as libvirt's backup "
                f"job, running in that QEMU?)") from None
        undo.push(_undoing(_stop_server, monitor))
        arguments = {"node-name": OVERLAY_NODE, "name": EXPORT_NAME, "writable": False}
        if bitmaps:
            arguments["bitmaps"] = list(bitmaps)
        monitor.execute("block-export-add", type="nbd", id=EXPORT_ID, **arguments)
        undo.push(_undoing(_delete_export, monitor))
        yield f"nbd+unix:///{EXPORT_NAME}?socket={quote(str(socket))}"


def _undoing(step, monitor: Monitor):
    """An exit callback running ``step``: when the block failed, a failure of the step too
    is only logged, so the error the user reads is why the block failed (what the step
    left is a leftover the next run removes)."""
    def undo(exc_type, exc, traceback) -> bool:
        try:
            step(monitor)
        except DiskvaultError as error:
            if exc is None:
                raise
            log.warning("%s (left for the next backup of this guest to remove)", error)
        return False
    return undo


def remove_leftovers(monitor: Monitor, server_left: bool) -> None:
    """Remove what a killed run left in this QEMU (its export, job and overlay node), and
    stop the NBD server it started when ``server_left`` (its folder, with the socket, was
    found)."""
    if any(entry["id"] == EXPORT_ID for entry in monitor.execute("query-block-exports")):
        _delete_export(monitor)
    if server_left:
        try:
            _stop_server(monitor)
        except CommandFailed:
            pass  # QEMU was restarted since: no server runs
    if any(job["id"] == JOB_ID for job in monitor.execute("query-jobs")):
        _cancel_job(monitor)
    nodes = monitor.execute("query-named-block-nodes", flat=True)
    if any(node["node-name"] == OVERLAY_NODE for node in nodes):
        _delete_overlay_node(monitor)


def _add_overlay(monitor: Monitor, drive: Drive, overlay: Path) -> None:
    """A new qcow2 file of the drive's size, open in QEMU with the drive as its backing."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    made = subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "--", str(overlay),
                           str(drive.size)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if made.returncode != 0:
        raise PointInTimeFailed(f"qemu-img could not make the fleecing overlay {overlay}: "
                                f"{made.stderr.strip()}")
    overlay.chmod(0o600)
    monitor.execute("blockdev-add", driver="qcow2", **{"node-name": OVERLAY_NODE},
                    file={"driver": "file", "filename": str(overlay)}, backing=drive.node)


def _delete_overlay_node(monitor: Monitor) -> None:
    monitor.execute("blockdev-del", **{"node-name": OVERLAY_NODE})


def _cancel_job(monitor: Monitor) -> None:
    monitor.execute("block-job-cancel", device=JOB_ID, force=True)
    _wait_until_gone(monitor, "query-jobs", "id", JOB_ID)


def _stop_server(monitor: Monitor) -> None:
    monitor.execute("nbd-server-stop")


def _delete_export(monitor: Monitor) -> None:
    monitor.execute("block-export-del", id=EXPORT_ID, mode="hard")
    _wait_until_gone(monitor, "query-block-exports", "id", EXPORT_ID)


def _wait_until_gone(monitor: Monitor, query: str, key: str, value: str) -> None:
    """Until QEMU no longer lists ``value`` (cancelling a job, deleting an export, finish
    in the background)."""
    deadline = time.monotonic() + GONE_WAIT_S
    while any(entry[key] == value for entry in monitor.execute(query)):
        if time.monotonic() > deadline:
            raise PointInTimeFailed(f"QEMU at {monitor.path} did not remove {value} in "
                                    f"{GONE_WAIT_S:g} s")
        time.sleep(0.02)
