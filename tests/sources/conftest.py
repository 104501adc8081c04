"""Real filesystems that can make reflink clones (XFS with reflink=1, btrfs), each on a
loop-mounted image made once per session, and a writer process that never pauses."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

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
