"""NBD exports as backup sources (nbd+unix:// and nbd://), served by a real qemu-nbd: the
same chunks as the file behind them, holes and zero extents never read, one-line errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from diskvault.sources import nbd_reader
from diskvault.store.repository import Repository

from ..conftest import run_cli
from .conftest import need

SPARSE_BYTES = 1 << 30  # a 1 GiB export holding 1 MiB of data


@contextmanager
def qemu_nbd(image: Path, folder: Path, *listen: str):
    """``image`` exported read-only as "disk" by qemu-nbd listening on ``listen`` (default:
    a Unix socket in ``folder``); yields the trace log, which names every read it served."""
    need("qemu-nbd", "libnbd")
    pid_file, trace = folder / "qemu-nbd.pid", folder / "qemu-nbd.trace"
    listen = listen or (f"--socket={folder / 'nbd.sock'}",)
    with open(trace, "wb") as log:
        process = subprocess.Popen(
            ["qemu-nbd", "--read-only", "--persistent", "--format=raw", "--export-name=disk",
             f"--pid-file={pid_file}", "--trace=nbd_co_send_structured_read*", *listen,
             str(image)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, trace.read_text()
            time.sleep(0.01)
        yield trace
    finally:
        process.terminate()
        process.wait()


def bytes_served(trace: Path) -> int:
    """Bytes of data qemu-nbd sent in read replies (holes it sent as such not counted)."""
    return sum(int(size) for size in re.findall(
        r"nbd_co_send_structured_read Send structured read data reply: .*len = (\d+)",
        trace.read_text()))


def backup(repo: Path, source: str, *args: str) -> dict:
    return json.loads(run_cli("backup", "-r", str(repo), source, "--json", *args,
                              check=True).stdout)


def blocks(repo: Path, snapshot_id: str) -> list:
    with Repository.open(repo) as repository:
        return repository.load_snapshot(snapshot_id).blocks


def test_unix_export_gives_the_files_chunks(disk_images, cli_repo, tmp_path):
    raw = disk_images["raw"]
    from_file = backup(cli_repo, str(raw), "--name", "vm")
    with qemu_nbd(raw, tmp_path) as trace:
        uri = f"nbd+unix:///disk?socket={tmp_path / 'nbd.sock'}"
        from_nbd = backup(cli_repo, uri, "--name", "vm")
        served = bytes_served(trace)
    assert from_nbd["source"] == uri
    assert from_nbd["stats"]["new_bytes"] == 0
    assert blocks(cli_repo, from_nbd["id"]) == blocks(cli_repo, from_file["id"])
    assert 0 < served == from_nbd["stats"]["bytes_read"] <= from_file["stats"]["bytes_read"]


def test_holes_of_an_export_are_not_read(cli_repo, tmp_path):
    """1 GiB exported, 1 MiB of it data: the server sends only that MiB (block status says
    the rest reads as zeros), and the snapshot is the file's."""
    sparse = tmp_path / "sparse.img"
    with open(sparse, "wb") as handle:
        handle.truncate(SPARSE_BYTES)
        handle.seek(SPARSE_BYTES // 2)
        handle.write(bytes(range(256)) * 4096)
    with qemu_nbd(sparse, tmp_path) as trace:
        snapshot = backup(cli_repo, f"nbd+unix:///disk?socket={tmp_path / 'nbd.sock'}",
                          "--name", "sparse")
        served = bytes_served(trace)
    assert snapshot["size"] == SPARSE_BYTES
    assert served == snapshot["stats"]["bytes_read"] == 1 << 20
    from_file = backup(cli_repo, str(sparse), "--name", "sparse")
    assert blocks(cli_repo, snapshot["id"]) == blocks(cli_repo, from_file["id"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tcp_export(disk_images, cli_repo, tmp_path):
    port = free_port()
    with qemu_nbd(disk_images["raw"], tmp_path, "--bind=127.0.0.1", f"--port={port}"):
        snapshot = backup(cli_repo, f"nbd://127.0.0.1:{port}/disk", "--name", "vm")
    cat = run_cli("cat", "-r", str(cli_repo), snapshot["id"], check=True)
    assert cat.stdout == disk_images["raw"].read_bytes()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_unreachable_server_is_one_line_exit_2(cli_repo, tmp_path):
    need("libnbd")
    result = run_cli("backup", "-r", str(cli_repo), f"nbd+unix:///disk?socket={tmp_path}/none",
                     "--name", "vm")
    assert result.returncode == 2
    assert "cannot open the NBD export" in one_line_error(result)


def test_unknown_export_is_one_line_exit_2(disk_images, cli_repo, tmp_path):
    with qemu_nbd(disk_images["raw"], tmp_path):
        result = run_cli("backup", "-r", str(cli_repo),
                         f"nbd+unix:///other?socket={tmp_path / 'nbd.sock'}", "--name", "vm")
    assert result.returncode == 2
    assert "cannot open the NBD export" in one_line_error(result)
    assert run_cli("list", "-r", str(cli_repo), "--json", check=True).stdout.strip() == b"[]"


def test_an_nbd_uri_needs_a_name_and_takes_no_raw(cli_repo):
    result = run_cli("backup", "-r", str(cli_repo), "nbd://127.0.0.1/disk")
    assert result.returncode == 2
    assert b"--name" in result.stderr
    result = run_cli("backup", "-r", str(cli_repo), "nbd://127.0.0.1/disk", "--name", "vm",
                     "--raw")
    assert result.returncode == 2
    assert b"--raw is for a disk-image file" in result.stderr


def test_the_reader_names_the_missing_binding():
    """Run by an interpreter without libnbd's binding (this venv's), the reader says which
    Debian package to install and exits 3 (which diskvault reports as ToolMissing)."""
    if subprocess.run([sys.executable, "-c", "import nbd"], capture_output=True).returncode == 0:
        pytest.skip("this interpreter has libnbd's binding")
    result = subprocess.run([sys.executable, "-I", nbd_reader.__file__, "nbd://x/y", "vm"],
                            capture_output=True)
    assert result.returncode == nbd_reader.EXIT_NO_BINDING == 3
    assert result.stderr.decode().strip().endswith("install the Debian package python3-libnbd")
