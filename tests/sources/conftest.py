"""Disk images made by the real qemu-img from one raw image, and qemu-nbd servers, for the
tests of sources/. They skip, saying what to install, where QEMU's tools are missing."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_cli

IMAGE_BYTES = 8 << 20  # 8 MiB: data runs, zero runs and holes, in qcow2 clusters and not
CHANGE_OFFSET, CHANGE = 5 << 20, b"\xab" * 65536  # what the overlay writes over its backing


def need(*tools: str) -> None:
    for tool, package in (("qemu-img", "qemu-utils"), ("qemu-nbd", "qemu-utils"),
                          ("qemu-io", "qemu-utils")):
        if tool in tools and shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt-get install {package}")
    if "libnbd" in tools and subprocess.run(["/usr/bin/python3", "-c", "import nbd"],
                                            capture_output=True).returncode != 0:
        pytest.skip("libnbd's Python binding is missing: apt-get install python3-libnbd")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def write_raw(path: Path, seed: int = 1) -> Path:
    """A sparse raw disk: random runs, a run of written zeros, text, holes between."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        handle.truncate(IMAGE_BYTES)
        for offset in (0, 1 << 20, 3 << 20, 6 << 20):
            handle.seek(offset + rng.randrange(0, 4096))
            handle.write(rng.randbytes(rng.randrange(100_000, 400_000)))
        handle.seek(2 << 20)
        handle.write(bytes(300_000))  # zeros really written: data to the file, zeros to NBD
        handle.seek(7 << 20)
        handle.write(b"line of text\n" * 20_000)
    return path


@pytest.fixture(scope="session")
def disk_images(tmp_path_factory) -> dict[str, Path]:
    """``raw`` and the same disk as qcow2, compressed qcow2, vmdk, vhdx and vdi; plus
    ``raw-changed`` and ``qcow2-overlay`` (a qcow2 over the qcow2 as its backing file, with
    CHANGE written at CHANGE_OFFSET), made once per session."""
    need("qemu-img", "qemu-io")
    folder = tmp_path_factory.mktemp("disk-images")
    raw = write_raw(folder / "disk.raw")
    images = {"raw": raw}
    for name, args in {"qcow2": ["-O", "qcow2"], "qcow2-compressed": ["-O", "qcow2", "-c"],
                       "vmdk": ["-O", "vmdk"], "vhdx": ["-O", "vhdx"],
                       "vdi": ["-O", "vdi"]}.items():
        images[name] = folder / f"disk.{name}"
        qemu_img("convert", "-f", "raw", *args, str(raw), str(images[name]))
    overlay = images["qcow2-overlay"] = folder / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(images["qcow2"]), "-F", "qcow2",
             str(overlay))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -P 0xab {CHANGE_OFFSET} {len(CHANGE)}", str(overlay)],
                   check=True, capture_output=True)
    changed = images["raw-changed"] = folder / "disk-changed.raw"
    shutil.copyfile(raw, changed)
    with open(changed, "r+b") as handle:
        handle.seek(CHANGE_OFFSET)
        handle.write(CHANGE)
    return images


@pytest.fixture
def cli_repo(tmp_path: Path) -> Path:
    """A new plaintext repository with small chunks, for the CLI."""
    path = tmp_path / "repo"
    run_cli("init", "-r", str(path), "--encryption", "none", "--chunk-size", "4096",
            check=True)
    return path
