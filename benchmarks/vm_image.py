"""The "vm-image" workload: a raw image of mixed content where ~1 % of 4 KiB blocks change nightly.

The image is laid out in extents of text-like, binary-like, random and zero content (half of the
zero extents are holes, half are written zeros), like a VM disk that has been in use for a while.
Each night rewrites randomly chosen 4 KiB blocks in place with content of their extent's kind.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from .content import PAGE, MiB, TextMaker, list_usr_files, random_bytes

EXTENT = 4 * MiB
KINDS = ["text", "binary", "random", "hole", "zeros"]
WEIGHTS = [30, 25, 25, 10, 10]
CHANGED_FRACTION = 0.01


class Plan:
    def __init__(self, image_size: int, seed: int):
        self.image_size = image_size
        self.seed = seed
        self.pull_bytes = max(4, min(50, int(50 * image_size / (2 << 30)))) * MiB
        rng = random.Random(seed)
        self.kinds = rng.choices(KINDS, WEIGHTS, k=-(-image_size // EXTENT))

    def pull_offset(self) -> int:
        """The pulled range starts in the first text extent, so it has real, non-zero content."""
        first = self.kinds.index("text") if "text" in self.kinds else 0
        return min(first * EXTENT, max(0, self.image_size - self.pull_bytes))


class _Writer:
    """Makes the bytes of each kind of content; binary comes from real executables in /usr/bin."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.text = TextMaker(seed)
        self.binary = _binary_corpus(32 * MiB)

    def make(self, kind: str, size: int) -> bytes:
        if kind == "text":
            return self.text.text(size)
        if kind == "random":
            return random_bytes(self.rng, size)
        if kind == "binary":
            pieces, total = [], 0
            while total < size:
                length = self.rng.randint(512, 16 * 1024)
                start = self.rng.randrange(max(1, len(self.binary) - length))
                pieces.append(self.binary[start:start + length])
                total += length
            return b"".join(pieces)[:size]
        return bytes(size)


def build_night0(image: Path, plan: Plan, scratch: Path) -> dict:
    writer = _Writer(plan.seed)
    with open(image, "wb") as disk:
        disk.truncate(plan.image_size)
        for number, kind in enumerate(plan.kinds):
            if kind == "hole":
                continue
            offset = number * EXTENT
            size = min(EXTENT, plan.image_size - offset)
            os.pwrite(disk.fileno(), writer.make(kind, size), offset)
    from .measure import sha256_file
    offset = plan.pull_offset()
    return {"image_offset": offset, "size": plan.pull_bytes,
            "sha256": sha256_file(image, offset, plan.pull_bytes),
            "extent_kinds": {kind: plan.kinds.count(kind) for kind in KINDS}}


def apply_night(image: Path, night: int, plan: Plan, scratch: Path, pull: dict) -> dict:
    """Rewrite CHANGED_FRACTION of the 4 KiB blocks at random offsets; holes and zeros included."""
    rng = random.Random(plan.seed * 1000 + night)
    writer = _Writer(plan.seed * 1000 + night)
    blocks = plan.image_size // PAGE
    chosen = sorted(rng.sample(range(blocks), int(blocks * CHANGED_FRACTION)))
    fd = os.open(image, os.O_WRONLY)
    try:
        for block in chosen:
            kind = plan.kinds[block * PAGE // EXTENT]
            new_kind = kind if kind in ("text", "binary", "random") else rng.choice(KINDS[:3])
            os.pwrite(fd, writer.make(new_kind, PAGE), block * PAGE)
    finally:
        os.close(fd)
    return {"blocks_rewritten": len(chosen)}


def _binary_corpus(size: int) -> bytes:
    """The first size bytes of the executables in /usr/bin, in path order."""
    pieces, total = [], 0
    for item in list_usr_files():
        if item.relpath.startswith("usr/bin/") and total < size:
            with open("/" + item.relpath, "rb") as source:
                data = source.read(size - total)
            pieces.append(data)
            total += len(data)
    return b"".join(pieces) or bytes(size)
