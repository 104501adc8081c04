"""Deterministic content for the workloads: real files from /usr, text, logs, database pages, noise.

Everything is driven by a seeded random.Random; only the /usr selection depends on the machine
(the same Debian image gives the same bytes). Nothing here writes an image: see fs_image/vm_image.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import lru_cache

MiB = 1 << 20
PAGE = 4096

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pen", "dor", "gal", "ith", "um",
              "ber", "qua", "zen", "fy", "ol", "tra", "ex", "con", "ver", "sys", "net", "io"]


@dataclass(frozen=True)
class UsrFile:
    relpath: str  # relative to the root it was found under, e.g. "usr/lib/x/y.so"
    size: int


@lru_cache(maxsize=1)
def list_usr_files(root: str = "/usr", max_size: int = 64 * MiB) -> tuple[UsrFile, ...]:
    """Regular, readable files under root, sorted by path: the pool real files are taken from."""
    found: list[UsrFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not (0 < st.st_size <= max_size) or not os.path.isfile(full) or os.path.islink(full):
                continue
            if not os.access(full, os.R_OK):
                continue
            found.append(UsrFile(os.path.relpath(full, "/"), st.st_size))
    return tuple(found)


def split_pools(files: tuple[UsrFile, ...], seed: int, first_bytes: int,
                reserve_bytes: int) -> tuple[list[UsrFile], list[UsrFile]]:
    """A seeded shuffle cut into the night-0 selection and a reserve for later additions."""
    order = list(files)
    random.Random(seed).shuffle(order)
    first, reserve, taken = [], [], 0
    for item in order:
        if taken < first_bytes:
            first.append(item)
            taken += item.size
        elif reserve_bytes > 0:
            reserve.append(item)
            reserve_bytes -= item.size
        else:
            break
    return sorted(first, key=lambda f: f.relpath), sorted(reserve, key=lambda f: f.relpath)


def package_dirs(files: tuple[UsrFile, ...], low: int, high: int) -> list[tuple[str, int]]:
    """Directories (depth 3 to 5 under /) whose files add up to between low and high bytes."""
    totals: dict[str, int] = {}
    for item in files:
        parts = item.relpath.split("/")
        for depth in range(3, min(6, len(parts))):
            key = "/".join(parts[:depth])
            totals[key] = totals.get(key, 0) + item.size
    return sorted((path, size) for path, size in totals.items() if low <= size <= high)


class TextMaker:
    """Pseudo-English text from a seeded vocabulary: compresses like prose, rarely repeats."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        vocabulary = ["".join(self.rng.choices(_SYLLABLES, k=self.rng.randint(1, 4)))
                      for _ in range(4000)]
        lines = []
        for _ in range(20000):
            words = self.rng.choices(vocabulary, k=self.rng.randint(4, 16))
            lines.append((" ".join(words).capitalize() + ".\n").encode())
        self._corpus = lines

    def text(self, size: int) -> bytes:
        """About size bytes (exactly size) of lines drawn at random from the corpus."""
        pieces, total = [], 0
        corpus, rng = self._corpus, self.rng
        while total < size:
            start = rng.randrange(len(corpus) - 40)
            chunk = b"".join(corpus[start:start + rng.randint(1, 40)])
            pieces.append(chunk)
            total += len(chunk)
        return b"".join(pieces)[:size]

    def log_lines(self, size: int, night: int, service: str) -> bytes:
        """Syslog-style lines stamped with the night, about size bytes."""
        pieces, total, rng = [], 0, self.rng
        second = 0
        while total < size:
            second += rng.randint(0, 30)
            stamp = f"2026-11-{night + 1:02d}T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
            message = self._corpus[rng.randrange(len(self._corpus))].decode().rstrip(".\n")
            line = f"{stamp} vm1 {service}[{rng.randint(100, 32000)}]: {message}\n".encode()
            pieces.append(line)
            total += len(line)
        return b"".join(pieces)


def random_bytes(rng: random.Random, size: int) -> bytes:
    """Incompressible bytes (random.randbytes is limited per call, so build it in pieces)."""
    return b"".join(rng.randbytes(min(MiB, size - done)) for done in range(0, size, MiB))


def database_page(rng: random.Random, text: TextMaker, page_number: int, version: int) -> bytes:
    """One 4 KiB page of a database-like file: header, binary row data and text columns."""
    header = b"DBPG" + page_number.to_bytes(8, "little") + version.to_bytes(8, "little")
    body = rng.randbytes(1536) + text.text(PAGE - len(header) - 1536)
    return header + body
