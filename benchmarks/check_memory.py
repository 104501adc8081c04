"""check's peak memory against the number of chunks, old code beside new in the same run.

    python -m benchmarks.check_memory [--image-mib 200] [--chunk-size 512] [--workdir DIR]
                                      [--source DIR]...

Builds a repository holding one random image cut into small chunks (200 MiB at 512 B on
average: about 400 000 chunks, the chunk count of ~26 GiB of disk at the default 64 KiB),
then runs `diskvault check` on it with each --source tree's `src/` first on the path (by
default only the tree this file is in), and prints peak RSS, wall time and RSS per chunk.
Peak RSS includes the pages of the memory-mapped LMDB files that were touched (the index
file's size is printed beside it): the kernel may reclaim those, unlike the heap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .measure import run_measured

HERE = Path(__file__).resolve().parents[1]


def build(repo: Path, image_mib: int, chunk_size: int) -> None:
    image = repo.parent / "image.raw"
    with open(image, "wb") as out:
        for _ in range(image_mib):
            out.write(os.urandom(1 << 20))
    env = {**os.environ, "PYTHONPATH": str(HERE / "src")}
    for argv in (["init", "-r", str(repo), "--chunk-size", str(chunk_size), "--encryption",
                  "none"], ["backup", "-r", str(repo), str(image), "--name", "a",
                            "--no-progress"]):
        run_measured([sys.executable, "-m", "diskvault", *argv], env=env).check()
    image.unlink()


def measure(repo: Path, source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    stats = run_measured([sys.executable, "-m", "diskvault", "check", "-r", str(repo),
                          "--json"], env=env).check()
    report = json.loads(stats.stdout)
    chunks = report["chunks_referenced"]
    return {"source": str(source), "chunks": chunks, "wall_s": round(stats.wall_s, 2),
            "peak_rss_mib": round(stats.peak_rss_bytes / 2**20, 1),
            "rss_bytes_per_chunk": round(stats.peak_rss_bytes / chunks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-mib", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--source", type=Path, action="append", default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dv-check-memory-"))
    repo = workdir / "repo"
    if not repo.exists():
        build(repo, args.image_mib, args.chunk_size)
    index_mib = (repo / "index" / "data.mdb").stat().st_size / 2**20
    for source in args.source or [HERE]:
        print(json.dumps({**measure(repo, source), "index_file_mib": round(index_mib, 1)}))


if __name__ == "__main__":
    main()
