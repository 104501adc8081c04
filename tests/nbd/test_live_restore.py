"""Live restore as docs/instant-recovery.md describes it: QEMU's block-stream copies what the
overlay lacks from the export, after which the overlay stands alone (the QEMU block layer
run by qemu-storage-daemon, as in a running guest)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from ..conftest import run_cli
from .conftest import backed_up, require_tools, write_layout

MiB = 1024 * 1024
QMP_TIMEOUT_S = 120.0


class Qmp:
    """A QMP monitor connection: commands and the events that arrive meanwhile."""

    def __init__(self, path: Path):
        deadline = time.monotonic() + QMP_TIMEOUT_S
        self.socket = socket.socket(socket.AF_UNIX)
        while True:
            try:
                self.socket.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # qemu-storage-daemon is still starting
        self.socket.settimeout(QMP_TIMEOUT_S)
        self.lines = self.socket.makefile("r")
        self.events: list[dict] = []
        self.next_message()  # the greeting
        self.execute("qmp_capabilities")

    def next_message(self) -> dict:
        return json.loads(self.lines.readline())

    def execute(self, command: str, **arguments) -> dict:
        self.socket.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())
        while True:
            message = self.next_message()
            if "event" in message:
                self.events.append(message)
                continue
            assert "error" not in message, message
            return message["return"]

    def wait_event(self, name: str) -> dict:
        while True:
            for event in self.events:
                if event["event"] == name:
                    return event
            self.events.append(self.next_message())


def test_block_stream_makes_the_overlay_whole_and_free_of_the_export(tmp_path, serve):
    require_tools("nbdkit", "qemu-img", "qemu-io", "qemu-storage-daemon")
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    image = write_layout(tmp_path / "disk.img")
    served = serve("-r", str(repo), backed_up(repo, image))
    overlay = tmp_path / "live.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", served.uri, "-F", "raw",
                    str(overlay)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", str(overlay)],
                   check=True, capture_output=True)  # the guest's write
    monitor = tmp_path / "qmp.sock"
    with subprocess.Popen(["qemu-storage-daemon", "--blockdev",
                           f"driver=qcow2,node-name=live,file.driver=file,"
                           f"file.filename={overlay}",
                           "--chardev", f"socket,id=qmp,path={monitor},server=on,wait=off",
                           "--monitor", "chardev=qmp"], stderr=subprocess.PIPE):
        qmp = Qmp(monitor)
        qmp.execute("block-stream", **{"job-id": "restore", "device": "live"})
        completed = qmp.wait_event("BLOCK_JOB_COMPLETED")
        assert "error" not in completed["data"], completed
        qmp.execute("quit")
    assert served.stop()[0] == 0  # the export is gone: the overlay must not need it
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, check=True).stdout)
    assert "backing-filename" not in info
    restored = tmp_path / "restored.img"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(overlay),
                    str(restored)], check=True)
    expected = bytearray(image.read_bytes())
    expected[MiB: MiB + 64 * 1024] = b"\x5a" * 64 * 1024
    assert restored.read_bytes() == expected
