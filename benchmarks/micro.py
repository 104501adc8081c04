"""Micro-benchmarks of diskvault's hot paths, each beside a baseline from the same run.

    .venv/bin/python -m benchmarks.micro [--size 256M] [--repeat 3]

Every figure is MB/s of image bytes (best of ``--repeat``), printed with its ratio to the
baseline: reading the same image file from the page cache.
Runs in seconds on a warm page cache, so a change to a hot path can be measured before and
after it; the machine is shared, so compare ratios from one run, never absolute figures
from two.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import zstandard

from diskvault.store.backup.chunker import Chunker
from diskvault.store.format.config import FORMAT_VERSION, PLAINTEXT_MODE, REPOKEY_MODE, ChunkerParams
from diskvault.store.format.crypto import Keys, chunker_permutation
from diskvault.store.keys.key_file import TEST_KDF_VARIABLE
from diskvault.store.repository import Repository

READ_BYTES = 4 * 1024 * 1024
RANDOM_READS = 2000
RANDOM_READ_BYTES = 4096
NIGHTLY_EDITS = 64  # 16 KiB changed at each of as many places in the nightly image


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def mixed_pieces(size: int, seed: int = 1) -> Iterator[bytes]:
    """``size`` bytes in pieces, half compressible text-like data, half random: a fair mix
    for zstd and the chunker (the AEADs do not care)."""
    rng = random.Random(seed)
    written = 0
    while written < size:
        piece = rng.randbytes(1 << 20) if rng.random() < 0.5 else \
            b"".join(b"line %d of a log file\n" % rng.randrange(10**6) for _ in range(40000))
        piece = piece[: size - written]
        written += len(piece)
        yield piece


def make_image(path: Path, size: int, seed: int = 1) -> None:
    with open(path, "wb") as handle:
        handle.writelines(mixed_pieces(size, seed))


def best_seconds(function: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def nightly_image(image: Path, target: Path) -> Path:
    """``image`` with NIGHTLY_EDITS places rewritten: a night of a mostly unchanged disk."""
    data = bytearray(image.read_bytes())
    rng = random.Random(3)
    for _ in range(NIGHTLY_EDITS):
        offset = rng.randrange(0, len(data) - 16384)
        data[offset: offset + 16384] = rng.randbytes(16384)
    target.write_bytes(bytes(data))
    return target


def nightly_seconds(repository: Repository, image: Path, night: Path, series: str) -> float:
    """Back ``image`` up into a new series (not timed), then time the backup of ``night``
    into it: guided by the chunks of ``image`` as hints."""
    repository.backup(image, name=series)
    started = time.perf_counter()
    repository.backup(night, name=series)
    return time.perf_counter() - started


def chunk_pieces(data: bytes, permutation: bytes | None = None) -> list[memoryview]:
    chunker = Chunker(ChunkerParams(), permutation=permutation)
    view = memoryview(data)
    pieces = []
    for start in range(0, len(data), READ_BYTES):
        pieces += [chunk for chunk, _ in chunker.feed(view[start:start + READ_BYTES])]
    return pieces + [chunk for chunk, _ in chunker.finish()]


def run(size: int, repeat: int, work: Path) -> list[tuple[str, float, str]]:
    image = work / "image.raw"
    make_image(image, size)
    data = image.read_bytes()
    pieces = chunk_pieces(data)
    compressor = zstandard.ZstdCompressor(level=3)
    compressed = [compressor.compress(piece) for piece in pieces]
    decompressor = zstandard.ZstdDecompressor()
    permutation = chunker_permutation(Keys.generate())

    def read_file() -> None:
        with open(image, "rb", buffering=0) as handle:
            while handle.read(READ_BYTES):
                pass

    timings: dict[str, float] = {
        "baseline: read from page cache": best_seconds(read_file, repeat),
        "chunking (FastCDC)": best_seconds(lambda: chunk_pieces(data), repeat),
        "keyed chunking (FastCDC over the keyed translation)":
            best_seconds(lambda: chunk_pieces(data, permutation), repeat),
        "hashing (blake3, 1 thread)":
            best_seconds(lambda: [blake3.blake3(p).digest() for p in pieces], repeat),
        "compression (zstd 3, 1 thread)":
            best_seconds(lambda: [compressor.compress(p) for p in pieces], repeat),
        "decompression (zstd, 1 thread)":
            best_seconds(lambda: [decompressor.decompress(c) for c in compressed], repeat),
    }
    timings.update(repository_timings(image, size, repeat, work))
    timings.update(repository_timings(image, size, repeat, work, REPOKEY_MODE))
    baseline = timings["baseline: read from page cache"]
    return [(name, size / seconds / 1e6, f"{baseline / seconds:.3f}x read")
            for name, seconds in timings.items()]


def repository_timings(image: Path, size: int, repeat: int, work: Path,
                       encryption: str = PLAINTEXT_MODE) -> dict[str, float]:
    """Pack writing (a first backup), a nightly backup of a mostly unchanged image (the
    previous snapshot's chunks as hints), a sequential restore read, random reads; with
    ``encryption``, only the first three (the rows named "encrypted")."""
    timings = {}
    # A cheap KDF: unlocking is paid once per command, not per byte, and is not measured.
    options = {"encryption": encryption, "passphrase": "micro",
               "kdf_for_tests": encryption != PLAINTEXT_MODE}
    label = "" if encryption == PLAINTEXT_MODE else "encrypted "

    def first_backup() -> None:
        root = Path(tempfile.mkdtemp(dir=work)) / "repo"
        with new_repository(root, **options) as repository:
            repository.backup(image, name="micro")

    timings[f"{label}first backup (chunk, hash, compress, write packs)"] = best_seconds(
        first_backup, repeat)
    night = nightly_image(image, work / "nightly.raw")
    with new_repository(Path(tempfile.mkdtemp(dir=work)) / "repo", **options) as repository:
        record = repository.backup(image, name="micro")
        timings[f"{label}nightly backup ({NIGHTLY_EDITS} places changed, hints)"] = min(
            nightly_seconds(repository, image, night, f"night-{run}") for run in range(repeat))
        with open(os.devnull, "wb") as sink:
            timings[f"{label}sequential restore read (cat to /dev/null)"] = best_seconds(
                lambda: repository.cat(record, sink), repeat)
        if encryption != PLAINTEXT_MODE:
            return timings
        rng = random.Random(2)
        offsets = [rng.randrange(0, size - RANDOM_READ_BYTES) for _ in range(RANDOM_READS)]

        def random_reads() -> None:
            reader = repository.open_image(record)
            for offset in offsets:
                reader.read(offset, RANDOM_READ_BYTES)

        # Scaled to image bytes: as if the whole image were read in these random pieces.
        seconds = best_seconds(random_reads, repeat)
        timings[f"random {RANDOM_READ_BYTES} B reads through the image reader"] = \
            seconds * size / (RANDOM_READS * RANDOM_READ_BYTES)
    return timings


def new_repository(root: Path, encryption: str, passphrase: str,
                   kdf_for_tests: bool, version: int = FORMAT_VERSION) -> Repository:
    if kdf_for_tests:
        os.environ[TEST_KDF_VARIABLE] = "1"
    try:
        return Repository.init(root, encryption=encryption, passphrase=passphrase,
                               version=version)
    finally:
        os.environ.pop(TEST_KDF_VARIABLE, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="image size (default 256M)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="diskvault-micro-") as work:
        rows = run(size, args.repeat, Path(work))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'hot path':<{width}}  {'MB/s':>8}  vs baseline")
    for name, rate, ratio in rows:
        print(f"{name:<{width}}  {rate:>8.0f}  {ratio}")


if __name__ == "__main__":
    main()
