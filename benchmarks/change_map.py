"""Nightly backup with a change map and from a pipe, against a full read, in one run.

    .venv/bin/python -m benchmarks.change_map [--size 2G] [--changed 0.5] [--repeat 3]

Night 0 is a mixed image (micro.mixed_pieces); night 1 rewrites ``--changed`` percent of it
in 64 KiB blocks (QEMU's default dirty-bitmap granularity) at random places. Each repeat
backs night 0 up into fresh series (not timed), then times, for night 1: a full nightly
backup (reads everything, guided by night 0), the same backup with the change map of the
rewritten blocks, and a backup of the image piped through ``cat`` (`backup -`). The
baseline is reading the image from the page cache. Best of ``--repeat``; every row is also
a ratio against the baseline and against the full backup of the same run.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

from diskvault.store.backup.change_map import ChangeMap, merge_ranges
from diskvault.store.repository import Repository

from .micro import READ_BYTES, make_image, parse_size

DIRTY_BLOCK_BYTES = 64 * 1024


def rewrite_blocks(image: Path, size: int, percent: float, seed: int = 7,
                   block_bytes: int = DIRTY_BLOCK_BYTES) -> tuple:
    """Overwrite random blocks with new random bytes; the changed ranges."""
    rng = random.Random(seed)
    blocks = size // block_bytes
    chosen = rng.sample(range(blocks), max(1, int(blocks * percent / 100)))
    with open(image, "r+b") as handle:
        for block in chosen:
            handle.seek(block * block_bytes)
            handle.write(rng.randbytes(block_bytes))
    return merge_ranges((b * block_bytes, (b + 1) * block_bytes) for b in chosen)


def read_file(image: Path) -> None:
    with open(image, "rb", buffering=0) as handle:
        while handle.read(READ_BYTES):
            pass


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def from_pipe(repository: Repository, image: Path, name: str):
    with subprocess.Popen(["cat", str(image)], stdout=subprocess.PIPE) as cat:
        return repository.backup_stream(cat.stdout, name)


def one_round(repository: Repository, night0: Path, night1: Path, ranges, round_: int) -> dict:
    """Seconds and bytes read of each night-1 backup, each in its own series."""
    bases = {how: repository.backup(night0, f"{how}-{round_}") for how in ("full", "map", "pipe")}
    runs = {
        "full nightly backup (reads all)": lambda: repository.backup(night1, f"full-{round_}"),
        "nightly backup with a change map": lambda: repository.backup(
            night1, f"map-{round_}", changes=ChangeMap(ranges, bases["map"].id)),
        "nightly backup from a pipe (cat |)": lambda: from_pipe(repository, night1,
                                                                f"pipe-{round_}"),
    }
    results = {}
    for label, run in runs.items():
        seconds, record = timed(run)
        results[label] = (seconds, record.stats.bytes_read)
    return results


def run(size: int, percent: float, repeat: int, work: Path) -> list[tuple[str, float, int]]:
    night0, night1 = work / "night0.img", work / "night1.img"
    make_image(night0, size)
    subprocess.run(["cp", "--sparse=never", str(night0), str(night1)], check=True)
    ranges = rewrite_blocks(night1, size, percent)
    baseline = min(timed(lambda: read_file(night1))[0] for _ in range(repeat))
    best: dict[str, tuple[float, int]] = {}
    with Repository.init(work / "repo", encryption="none") as repository:
        repository.backup(night0, "warm-up")
        for round_ in range(repeat):
            for label, (seconds, read) in one_round(repository, night0, night1, ranges,
                                                    round_).items():
                if label not in best or seconds < best[label][0]:
                    best[label] = (seconds, read)
    rows = [("baseline: read from page cache", baseline, size)]
    return rows + [(label, seconds, read) for label, (seconds, read) in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="image size (default 256M)")
    parser.add_argument("--changed", type=float, default=0.5,
                        help="percent of the image rewritten in 64 KiB blocks (default 0.5)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="diskvault-change-map-", dir="/var/tmp") as work:
        rows = run(size, args.changed, args.repeat, Path(work))
    baseline, full = rows[0][1], rows[1][1]
    print(f"image {size >> 20} MiB, {args.changed}% rewritten in 64 KiB blocks, "
          f"best of {args.repeat}")
    width = max(len(name) for name, _, _ in rows)
    print(f"{'run':<{width}}  {'s':>7}  {'MB/s':>7}  {'MiB read':>8}  vs read  vs full")
    for name, seconds, read in rows:
        print(f"{name:<{width}}  {seconds:>7.3f}  {size / seconds / 1e6:>7.0f}  "
              f"{read / (1 << 20):>8.1f}  {baseline / seconds:>6.2f}x  {full / seconds:>6.2f}x")


if __name__ == "__main__":
    main()
