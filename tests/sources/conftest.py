"""Fixtures of the sources/ tests: real filesystems that can make reflink clones (XFS with
reflink=1, btrfs), each on a loop-mounted image made once per session, and a writer process
that never pauses; disk images made by the real qemu-img from one raw image, and qemu-nbd
servers. They skip, saying what to install, where a tool is missing."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import run_cli
from ..fsimages import require_root, require_tool, run

BLOCK_BYTES = 4096
FILESYSTEM_IMAGE_BYTES = 320 * 1024 * 1024  # mkfs.xfs refuses less than 300 MB
MKFS = {"xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"], "btrfs": ["mkfs.btrfs", "-q"]}

# Rewrites every block in order, generation after generation, until killed: block i of
# generation g holds (g, i). At any instant the file is generation g up to some block and
# g-1 after it, so a copy made at one instant has that shape and a torn read rarely does.
WRITER_SCRIPT = r"""
import os, struct, sys
path, blocks = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
generation = 0
while True:
    generation += 1
    for index in range(blocks):
        os.pwrite(fd, struct.pack("<QQ", generation, index) * 256, index * 4096)
    if generation == 1:
        print("writing", flush=True)
"""


@pytest.fixture(scope="session", params=sorted(MKFS))
def reflink_folder(request, tmp_path_factory) -> Path:
    """A folder on a freshly made, loop-mounted XFS (reflink=1) or btrfs."""
    kind = request.param
    require_root(f"mounting a loop {kind} image")
    require_tool(MKFS[kind][0])
    image = tmp_path_factory.mktemp(f"{kind}-image") / f"{kind}.img"
    with open(image, "wb") as handle:
        handle.truncate(FILESYSTEM_IMAGE_BYTES)
    run(*MKFS[kind], image)
    mountpoint = image.with_name("mnt")
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop {kind} image: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        run("umount", mountpoint)


def write_generations(path: Path, blocks: int) -> Path:
    """The writer's file as it is before the writer starts: generation 0 everywhere."""
    with open(path, "wb") as handle:
        for index in range(blocks):
            handle.write(struct.pack("<QQ", 0, index) * (BLOCK_BYTES // 16))
    return path


def generations(image: bytes) -> list[int]:
    """The generation of every block, checking each block is whole and in its place."""
    found = []
    for index in range(len(image) // BLOCK_BYTES):
        block = image[index * BLOCK_BYTES:(index + 1) * BLOCK_BYTES]
        generation, where = struct.unpack_from("<QQ", block)
        assert where == index and block == block[:16] * 256, f"block {index} is torn"
        found.append(generation)
    return found


def is_one_instant(found: list[int]) -> bool:
    """Generation g up to some block and g-1 after it (or all one generation)."""
    return all(a >= b for a, b in zip(found, found[1:])) and found[0] - found[-1] <= 1


class Writer:
    """The writer process, started and known to be writing; killed on exit."""

    def __init__(self, path: Path, blocks: int):
        self.process = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path),
                                         str(blocks)], stdout=subprocess.PIPE)

    def __enter__(self) -> "Writer":
        assert self.process.stdout.readline() == b"writing\n"
        return self

    def still_writing(self) -> bool:
        return self.process.poll() is None

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


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
