"""Fixtures for the NBD export: a real `diskvault serve` in a subprocess, real NBD clients."""

from __future__ import annotations

import hashlib
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import run_cli

READY_TIMEOUT_S = 120.0
MiB = 1024 * 1024
# data, hole, data, hole: the zero runs an export must report as holes
LAYOUT = [(0, 3 * MiB), (8 * MiB, 1 * MiB)]
IMAGE_BYTES = 16 * MiB


def require_tools(*programs: str) -> None:
    """Skip, naming the Debian package, when a client or the server is missing."""
    packages = {"nbdkit": "nbdkit", "nbdinfo": "libnbd-bin", "nbdcopy": "libnbd-bin",
                "qemu-img": "qemu-utils", "qemu-io": "qemu-utils",
                "qemu-system-x86_64": "qemu-system-x86",
                "qemu-storage-daemon": "qemu-system-common"}
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install {packages[program]})")
    if "nbdkit" in programs and subprocess.run(["nbdkit", "python", "--version"],
                                               capture_output=True).returncode != 0:
        pytest.skip("nbdkit's Python plugin is not installed "
                    "(apt-get install nbdkit-plugin-python)")


@dataclass
class Served:
    """A running `diskvault serve --json`: its process, the JSON line it printed, and what
    it wrote on stderr once stopped."""
    process: subprocess.Popen
    info: dict

    @property
    def uri(self) -> str:
        return self.info["uri"]

    def nbdkit_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        [pid] = children.read_text().split()
        return int(pid)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit status and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr.decode(errors="replace")


def start_serve(*args: str, env: dict | None = None) -> Served:
    """`diskvault serve --json ARGS`, returned once its JSON line says it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "diskvault", "serve", "--json", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **(env or {})})
    line = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                process.kill()
                raise AssertionError("diskvault serve printed no JSON line in time")
            piece = os.read(process.stdout.fileno(), 4096)
            if not piece:
                _, stderr = process.communicate(timeout=60)
                raise AssertionError(f"diskvault serve ended ({process.returncode}): "
                                     f"{stderr.decode(errors='replace')}")
            line += piece
    return Served(process, json.loads(line))


@pytest.fixture
def serve():
    """``serve(*args)`` starts `diskvault serve --json`; every one is stopped at teardown."""
    started: list[Served] = []

    def start(*args: str, env: dict | None = None) -> Served:
        served = start_serve(*args, env=env)
        started.append(served)
        return served

    yield start
    for served in started:  # SIGTERM, so that serve removes its socket and folder
        try:
            served.stop()
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


def backed_up(repo_path: Path | str, image: Path, name: str = "vm") -> str:
    """The id of a new snapshot of ``image`` in the repository at ``repo_path``."""
    result = run_cli("backup", "-r", str(repo_path), str(image), "--name", name, "--json",
                     "--no-progress", check=True)
    return json.loads(result.stdout)["id"]


def write_layout(path: Path, seed: int = 0) -> Path:
    """An image of random data at LAYOUT and holes everywhere else."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        for offset, length in LAYOUT:
            handle.seek(offset)
            handle.write(rng.randbytes(length))
        handle.truncate(IMAGE_BYTES)
    return path


def nbd_sha256(uri: str) -> str:
    """sha256 of every byte of the export, read by nbdcopy (which must succeed)."""
    digest = hashlib.sha256()
    with subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE) as copy:
        for piece in iter(lambda: copy.stdout.read(1 << 20), b""):
            digest.update(piece)
    assert copy.returncode == 0, f"nbdcopy {uri} failed ({copy.returncode})"
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
