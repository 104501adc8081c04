"""Live restore as docs/instant-recovery.md describes it: QEMU's block-stream copies what the
overlay lacks from the export, after which the overlay stands alone (the QEMU block layer
run by qemu-storage-daemon, as in a running guest)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from ..conftest import run_cli
from .conftest import backed_up, require_tools, write_layout

MiB = 1024 * 1024
QMP_TIMEOUT_S = 120.0


def connected_monitor(path: Path) -> QEMUMonitorProtocol:
    """A QMP connection to the socket at ``path``, once qemu-storage-daemon listens there."""
    deadline = time.monotonic() + QMP_TIMEOUT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"no QMP socket at {path}"
        time.sleep(0.05)  # qemu-storage-daemon is still starting
    qmp = QEMUMonitorProtocol(str(path))
    qmp.connect()
    qmp.settimeout(QMP_TIMEOUT_S)
    return qmp


def next_event(qmp: QEMUMonitorProtocol, name: str) -> dict:
    while (event := qmp.pull_event(wait=QMP_TIMEOUT_S))["event"] != name:
        pass
    return event


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
                           "--monitor", "chardev=qmp"], stderr=subprocess.PIPE) as daemon:
        with connected_monitor(monitor) as qmp:
            qmp.cmd("block-stream", **{"job-id": "restore", "device": "live"})
            completed = next_event(qmp, "BLOCK_JOB_COMPLETED")
            assert "error" not in completed["data"], completed
        daemon.terminate()  # not 'quit': its answer may race the hang-up
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
