"""Disk-image formats (qcow2, vmdk, vhdx, vdi) read as the guest sees the disk, and written.

diskvault parses none of them: QEMU's block layer does, through ``qemu-nbd --read-only``
serving the file on a Unix socket in a private folder, read as any NBD export. So backing
chains, compressed clusters, snapshots-in-file and every subformat are QEMU's job, and a
qcow2 gives the same chunks as its raw conversion. A format is told by its signature, so a
plain raw image never needs qemu-utils.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..errors import DiskvaultError, SourceError, TargetExists
from .children import require_tool, start_child, stop_child
from .nbd import NbdReadFailed

QEMU_PACKAGE = "qemu-utils"
SIGNATURE_BYTES = 512
VDI_SIGNATURE = 0xBEDA107F  # a little-endian u32 at byte 0x40 of a VDI header
READY_WAIT_S = 30.0
FOLDER_PREFIX = "diskvault-nbd-"  # in $TMPDIR: the socket, pid file and log of one server
PID_FILE = "qemu-nbd.pid"
WRITABLE_FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vdi")


def format_of_header(header: bytes) -> str | None:
    """The container format whose signature ``header`` (the first bytes) starts with."""
    if header.startswith(b"QFI\xfb"):
        return "qcow2"
    if header.startswith((b"KDMV", b"# Disk DescriptorFile")):
        return "vmdk"
    if header.startswith(b"vhdxfile"):
        return "vhdx"
    if len(header) >= 0x44 and struct.unpack_from("<I", header, 0x40)[0] == VDI_SIGNATURE:
        return "vdi"
    return None


def detect_format(path: Path) -> str | None:
    """The container format of the file or block device at ``path``, or None (raw, or not
    something this module reads: the plain source reports that)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return None
        return format_of_header(os.pread(fd, SIGNATURE_BYTES, 0))
    finally:
        os.close(fd)


@contextmanager
def served(path: Path, image_format: str) -> Iterator[str]:
    """``path`` served read-only by qemu-nbd as ``image_format``; yields its NBD URI. The
    server, its socket and folder are gone when the block ends (or with diskvault)."""
    qemu_nbd = require_tool("qemu-nbd", QEMU_PACKAGE)
    remove_leftovers()
    with tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX) as folder:
        socket_path = Path(folder) / "nbd.sock"
        pid_path = Path(folder) / PID_FILE  # written once the export is open
        log_path = Path(folder) / "qemu-nbd.log"
        with open(log_path, "xb") as log:
            process = start_child(
                [qemu_nbd, "--read-only", "--persistent", "--shared=4",
                 f"--format={image_format}", f"--socket={socket_path}", "--export-name=disk",
                 f"--pid-file={pid_path}", "--", str(path.absolute())],
                stdout=log, stderr=log)
        try:
            _wait_until_serving(process, pid_path, log_path, path, image_format)
            yield f"nbd+unix:///disk?socket={quote(str(socket_path))}"
        except NbdReadFailed as error:  # qemu-nbd hangs up on a read error: say which
            raise NbdReadFailed(f"{error.reason} (qemu-nbd: {_first_line(log_path)})") \
                from None
        finally:
            stop_child(process)


def _first_line(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return lines[0].removeprefix("qemu-nbd: ") if lines else "no reason given"


def remove_leftovers() -> None:
    """Remove the server folders of runs that were killed (their qemu-nbd died with them,
    see children.py); a folder in use or still starting up is left alone."""
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        if _is_leftover(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _is_leftover(folder: Path) -> bool:
    """This user's folder whose pid file names no live qemu-nbd, or that got no pid file
    long after it was made."""
    try:
        status = folder.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        return False
    try:
        pid = (folder / PID_FILE).read_text().strip()
    except FileNotFoundError:
        return time.time() - status.st_mtime > 2 * READY_WAIT_S
    except OSError:
        return False
    try:
        process = Path(f"/proc/{pid}/stat").read_text() if pid.isdigit() else ""
    except OSError:
        return True  # no such process
    # "PID (COMM) STATE ...": a zombie (its parent gone, not yet reaped) serves nothing
    name, _, rest = process.rpartition(")")
    return not name.endswith("(qemu-nbd") or rest.split()[0] == "Z"


def _wait_until_serving(process: subprocess.Popen, pid_path: Path, log_path: Path,
                        path: Path, image_format: str) -> None:
    """Until qemu-nbd wrote its pid file, which it does once the image is open and the
    socket listens (it listens before it opens the image, so a connection proves nothing)."""
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _first_line(log_path)
            hint = ("in use, by a running VM?: back it up through the hypervisor's "
                    "point-in-time export, or from a snapshot" if "lock" in reason else
                    "to back up the file's bytes as they are, give --raw")
            raise SourceError(f"qemu-nbd cannot read {path} as {image_format}: {reason} "
                              f"({hint})")
        if pid_path.exists():
            return
        time.sleep(0.01)
    raise SourceError(f"qemu-nbd did not start serving {path} within {READY_WAIT_S:.0f} s")


@contextmanager
def written_as(target: Path, image_format: str) -> Iterator[Path]:
    """Where to restore the raw image so that ``target`` ends up in ``image_format``: the
    target itself for raw; else a private folder beside it, converted when the block ends
    without error (into a new file: ``target`` must not exist)."""
    if image_format == "raw":
        yield target
        return
    if os.path.lexists(target):
        raise TargetExists(f"{target} exists; restore --format {image_format} writes a new "
                           f"file")
    require_tool("qemu-img", QEMU_PACKAGE)
    with tempfile.TemporaryDirectory(prefix=".diskvault-restore-",
                                     dir=Path(target).absolute().parent) as folder:
        raw = Path(folder) / "image.raw"
        yield raw
        _convert(raw, Path(target), image_format)


def _convert(raw: Path, target: Path, image_format: str) -> None:
    """The raw image ``raw`` written to ``target`` (created exclusively, 0600, never through
    a link) as ``image_format``; zeros are left unallocated (qemu-img convert's default)."""
    qemu_img = require_tool("qemu-img", QEMU_PACKAGE)
    converted = raw.with_name("image." + image_format)
    result = subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", image_format,
                             "--", str(raw), str(converted)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise DiskvaultError(f"qemu-img could not write {target} as {image_format}: "
                          f"{lines[-1] if lines else 'no reason given'}")
    os.chmod(converted, 0o600)
    try:
        os.link(converted, target)  # fails if target exists, and never follows a link there
    except FileExistsError:
        raise TargetExists(f"{target} exists; restore --format writes a new file") from None
