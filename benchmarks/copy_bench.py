"""`diskvault copy` against its own yardsticks, measured in the same run.

    .venv/bin/python -m benchmarks.copy_bench [--size 256M] [--workdir DIR]

One mixed image (benchmarks/micro.py) is backed up into a plaintext source repository;
then, into fresh destinations: a first copy plain -> plain (same chunk ids), and plain ->
encrypted (new ids: every chunk read, hashed again, sealed). A second night (1 % of the
image's 64 KiB blocks rewritten) is backed up into the source and copied again into both.
Yardsticks from the same run, on the same image: a first `backup` into a fresh plaintext
repository (the write side of a copy) and `cat` of the snapshot to nowhere (the read side).
Each copy is also checked bit-exact against its source image (else the figures are void).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import tempfile
import time
from pathlib import Path

from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE

from .micro import make_image, new_repository, parse_size

PASSPHRASE = "benchmark"
LABELS = {PLAINTEXT_MODE: "plain", REPOKEY_MODE: "encrypted"}
BLOCK = 64 * 1024


class HashSink:
    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def evolve(image: Path, seed: int) -> None:
    """Rewrite 1 % of the image's 64 KiB blocks in place with random bytes."""
    rng = random.Random(seed)
    blocks = image.stat().st_size // BLOCK
    with open(image, "r+b") as handle:
        for block in rng.sample(range(blocks), max(1, blocks // 100)):
            handle.seek(block * BLOCK)
            handle.write(rng.randbytes(BLOCK))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 22):
            digest.update(piece)
    return digest.hexdigest()


def image_sha(repository, snapshot_id: str) -> str:
    sink = HashSink()
    repository.cat(repository.find_snapshot(snapshot_id), sink)
    return sink.digest.hexdigest()


def run(size: int, work: Path) -> list[tuple[str, float, str]]:
    image = work / "image.img"
    make_image(image, size)
    rows = []
    with new_repository(work / "baseline", PLAINTEXT_MODE, PASSPHRASE, True) as baseline:
        record, seconds = timed(lambda: baseline.backup(image, "vm"))
        rows.append(("backup, first (yardstick)", seconds, ""))
        _, seconds = timed(lambda: baseline.cat(record, HashSink()))
        rows.append(("cat to nowhere (yardstick)", seconds, ""))
    backup_seconds = rows[0][1]
    destinations = {mode: new_repository(work / f"to-{mode}", mode, PASSPHRASE, True)
                    for mode in (PLAINTEXT_MODE, REPOKEY_MODE)}
    with new_repository(work / "source", PLAINTEXT_MODE, PASSPHRASE, True) as source:
        for night in (1, 2):
            if night == 2:
                evolve(image, seed=night)
            snapshot = source.backup(image, "vm").id
            expected = sha256_file(image)
            for mode, destination in destinations.items():
                report, seconds = timed(lambda: destination.copy_from(source))
                assert image_sha(destination, snapshot) == expected, f"{mode}: wrong bytes"
                rows.append((f"copy night {night} plain -> {LABELS[mode]}", seconds,
                             f"{report.chunks_sent} chunks / {report.bytes_sent >> 20} MiB "
                             f"sent, {report.chunks_skipped} skipped"))
    for destination in destinations.values():
        destination.close()
    return [(name, seconds, f"{seconds / backup_seconds:.2f}x backup; {size / seconds / 1e6:.0f} "
             f"MB/s of image; {note}".rstrip("; ")) for name, seconds, note in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", type=parse_size)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copy-bench-", dir=args.workdir))
    try:
        rows = run(args.size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"image {args.size >> 20} MiB (mixed); times are wall seconds of one run")
    for name, seconds, note in rows:
        print(f"{name:<34} {seconds:7.2f} s  {note}")


if __name__ == "__main__":
    main()
