"""Same bytes, same chunks: one image backed up as a sparse file, as its dense copy and
through a loop device, into one series, beside a read of the image in the same run.

    .venv/bin/python -m benchmarks.holes [--size 256M] [--repeat 3]

Prints the bytes each backup stored (after the first, 0 when the manifest depends only on
the image's bytes) and each backup's time as a ratio to reading the dense image from the page
cache. The loop device needs root (skipped otherwise).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diskvault.store.repository import Repository

from .micro import best_seconds, mixed_pieces, parse_size

MiB = 1 << 20


def make_sparse_image(path: Path, size: int, seed: int = 1) -> None:
    """Mixed data with holes of 4 KiB to 8 MiB between its pieces (about a third holes)."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        for piece in mixed_pieces(size, seed):
            if rng.random() < 0.5:
                handle.seek(min(rng.randrange(1, 2048) * 4096, size // 8), os.SEEK_CUR)
            handle.write(piece[: max(0, size - handle.tell())])
        handle.truncate(size)


def read_file(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        while handle.read(4 * MiB):
            pass


@contextmanager
def loop_device(backing: Path) -> Iterator[Path | None]:
    if os.geteuid() != 0:
        yield None
        return
    device = Path(subprocess.run(["losetup", "--find", "--show", "--read-only", str(backing)],
                                 check=True, capture_output=True, text=True).stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=True)


def run(size: int, repeat: int, work: Path) -> list[tuple[str, str, str]]:
    sparse, dense = work / "sparse.img", work / "dense.img"
    make_sparse_image(sparse, size)
    subprocess.run(["cp", "--sparse=never", str(sparse), str(dense)], check=True)
    read_file(dense)  # warm the page cache for every row alike
    baseline = best_seconds(lambda: read_file(dense), repeat)
    rows = [("read the dense image (page cache)", f"{baseline:.2f} s", "1.00x")]
    with Repository.init(work / "repo", encryption="none") as repo, loop_device(sparse) as device:
        sources = [("sparse file, first backup", sparse), ("dense copy, same series", dense),
                   ("loop device over the sparse file", device),
                   ("sparse file again (nightly, unchanged)", sparse)]
        for index, (label, source) in enumerate(sources):
            if source is None:
                rows.append((label, "skipped (not root)", ""))
                continue
            records = []
            # The first backup once (a repeat would find everything stored already).
            seconds = best_seconds(lambda: records.append(repo.backup(source, name="vm")),
                                   1 if index == 0 else repeat)
            stored = records[0].stats.stored_bytes
            rows.append((label, f"{seconds:.2f} s, stored {stored / MiB:.1f} MiB",
                         f"{seconds / baseline:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="image size (default 256M)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="diskvault-holes-") as work:
        rows = run(parse_size(args.size), args.repeat, Path(work))
    width = max(len(label) for label, _, _ in rows)
    print(f"{'backup of one image':<{width}}  {'time, bytes stored':<28}  vs read")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:<28}  {ratio}")


if __name__ == "__main__":
    main()
