"""A real qemu-storage-daemon serving a qcow2 with a persistent dirty bitmap over NBD, with a
QMP monitor: QEMU's own block layer, as a running guest has it, without a guest."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import need, qemu_img

START_WAIT_S = 30.0
EXPORT = "vm"
NODE = "disk"


def need_storage_daemon() -> None:
    need("qemu-img", "qemu-io", "libnbd")
    if shutil.which("qemu-storage-daemon") is None:
        pytest.skip("qemu-storage-daemon is missing: apt-get install qemu-system-common")


def make_disk(path: Path, size: int, bitmaps: tuple[str, ...] = ("B",), seed: int = 7) -> Path:
    """A qcow2 of ``size`` bytes, its first half random data, with persistent, enabled
    dirty bitmaps ``bitmaps`` (empty: the data was written before them)."""
    qemu_img("create", "-q", "-f", "qcow2", str(path), str(size))
    data = path.with_suffix(".data")
    data.write_bytes(random.Random(seed).randbytes(size // 2))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {data} 0 {size // 2}",
                    str(path)], check=True, capture_output=True)
    data.unlink()
    for bitmap in bitmaps:
        qemu_img("bitmap", "--add", "--enable", str(path), bitmap)
    return path


class StorageDaemon:
    """qemu-storage-daemon serving ``disk`` (qcow2) as the writable NBD export "vm" with
    the dirty bitmaps ``exported``, or with no export (``exported`` None: the backup makes
    its own through QMP); its QMP monitor at ``qmp``; every read it serves traced."""

    def __init__(self, disk: Path, folder: Path, exported: tuple[str, ...] | None = ("B",)):
        need_storage_daemon()
        self.disk, self.folder, self.exported = disk, folder, exported
        self.socket, self.qmp = folder / "nbd.sock", folder / "qmp.sock"
        self.test_qmp = folder / "test-qmp.sock"  # a second monitor, for the test's questions
        self.trace = folder / "qsd.trace"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///{EXPORT}?socket={self.socket}"

    def start(self) -> "StorageDaemon":
        pid_file = self.folder / "qsd.pid"
        for stale in (pid_file, self.socket, self.qmp, self.test_qmp):
            stale.unlink(missing_ok=True)
        export = []
        if self.exported is not None:
            bitmaps = [f"bitmaps.{i}={name}" for i, name in enumerate(self.exported)]
            export = ["--nbd-server", f"addr.type=unix,addr.path={self.socket}",
                      "--export", ",".join([f"type=nbd,id=e,node-name={NODE},name={EXPORT}",
                                            "writable=on", *bitmaps])]
        with open(self.trace, "ab") as log:
            self.process = subprocess.Popen(
                ["qemu-storage-daemon",
                 "--blockdev", f"driver=file,node-name=file,filename={self.disk}",
                 "--blockdev", f"driver=qcow2,node-name={NODE},file=file", *export,
                 "--chardev", f"socket,id=monitor,path={self.qmp},server=on,wait=off",
                 "--monitor", "chardev=monitor",
                 "--chardev", f"socket,id=test,path={self.test_qmp},server=on,wait=off",
                 "--monitor", "chardev=test", "--pidfile", str(pid_file),
                 "--trace", "nbd_co_send_*"], stdout=log, stderr=log)
        deadline = time.monotonic() + START_WAIT_S
        while not (pid_file.exists() and self.qmp.exists()):
            assert self.process.poll() is None and time.monotonic() < deadline, \
                self.trace.read_text()
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None

    def __enter__(self) -> "StorageDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write(self, offset: int, data: bytes) -> None:
        """``data`` written at ``offset`` through the export, as a guest would."""
        source = self.folder / "write.data"
        source.write_bytes(data)
        subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -s {source} {offset} {len(data)}",
                        self.uri], check=True, capture_output=True)
        os.unlink(source)

    def write_offline(self, offset: int, data: bytes) -> None:
        """``data`` written at ``offset`` into the qcow2 while the daemon is stopped:
        qemu-io loads the image's persistent bitmaps, and the enabled ones record it."""
        assert self.process is None
        source = self.folder / "write.data"
        source.write_bytes(data)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -s {source} {offset} {len(data)}", str(self.disk)],
                       check=True, capture_output=True)
        os.unlink(source)

    def bitmaps_offline(self) -> dict[str, list[str]]:
        """The qcow2's persistent bitmaps and their flags ("auto": enabled), daemon
        stopped."""
        assert self.process is None
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", str(self.disk)], check=True,
            capture_output=True).stdout)
        found = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
        return {bitmap["name"]: bitmap["flags"] for bitmap in found}

    def image_offline(self) -> bytes:
        """The disk's bytes as a guest sees them, daemon stopped."""
        assert self.process is None
        raw = self.folder / "image.raw"
        qemu_img("convert", "-f", "qcow2", "-O", "raw", str(self.disk), str(raw))
        try:
            return raw.read_bytes()
        finally:
            raw.unlink()

    def served_bytes(self) -> int:
        """Bytes of data the daemon has sent in NBD read replies so far."""
        return sum(int(size) for size in re.findall(
            r"nbd_co_send_structured_read Send structured read data reply: .*len = (\d+)",
            self.trace.read_text()))

    def status_replies(self) -> int:
        """Block-status replies the daemon has sent so far (a reader asking for extents)."""
        return self.trace.read_text().count("nbd_co_send_extents")

    def image(self) -> bytes:
        """The whole export as a reader sees it now."""
        return subprocess.run(["nbdcopy", self.uri, "-"], check=True,
                              capture_output=True).stdout
