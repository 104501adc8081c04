"""check's peak memory against the number of chunks (or of packs and manifest blocks), old
code beside new in the same run.

    python -m benchmarks.check_memory [--image-mib 200] [--chunk-size 512] [--workdir DIR]
                                      [--source DIR]...
    python -m benchmarks.check_memory --packs 20000,50000 [--blocks-per-pack 1]
                                      [--workdir DIR] [--source DIR]...

Builds a repository holding one random image cut into small chunks (200 MiB at 512 B on
average: about 400 000 chunks, the chunk count of ~26 GiB of disk at the default 64 KiB),
then runs `diskvault check` on it with each --source tree's `src/` first on the path (by
default only the tree this file is in), and prints peak RSS, wall time and RSS per chunk.
Peak RSS includes the pages of the memory-mapped LMDB files that were touched (the index
file's size is printed beside it): the kernel may reclaim those, unlike the heap.

With --packs: for each count, a repository of that many packs, each holding
--blocks-per-pack manifest blocks of their own (synthetic: zero runs of distinct lengths,
indexed through the index's API), named by records of 1,000 blocks; check runs in a child
under tracemalloc for its peak of traced Python memory, then again for its CPU time; then
the bytes per pack and per block from the first count to the last, per source.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
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


def _block_ref():
    """BlockRef, from where the measured source tree defines it (format/block_list.py;
    format/manifest.py in trees from before it, which --source may name)."""
    try:
        from diskvault.store.format.block_list import BlockRef
    except ImportError:
        from diskvault.store.format.manifest import BlockRef
    return BlockRef


def packs_of_blocks(storage, packs: int, blocks_per_pack: int = 1) -> list:
    """``packs`` packs, each holding ``blocks_per_pack`` distinct manifest blocks (zero runs
    of lengths 1, 2, 3, ...), indexed through the index's own API; the blocks' BlockRefs
    laid end to end. The files are written as a pack writer writes them, less the fsync of
    each (a minute saved per 10,000 packs)."""
    from diskvault.store.format.manifest import ManifestEntry, encode_block
    from diskvault.store.format.packs import PACK_MAGIC, PackEntry, pack_name

    BlockRef = _block_ref()
    blocks, rows, offset = [], [], 0
    for _ in range(packs):
        pack_id = storage.packs.new_pack_id()
        entries, pack = [], PACK_MAGIC
        for _ in range(blocks_per_pack):
            length = len(blocks) + 1
            data = encode_block([ManifestEntry(length, None)])
            entries.append(PackEntry(storage.codec.chunk_id(data), len(pack), len(data),
                                     len(data), 0))
            pack += data
            blocks.append(BlockRef(entries[-1].digest, offset))
            offset += length
        pack += storage.packs.encode_footer(pack_id, entries)
        path = storage.backend.root / pack_name(pack_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(pack)
        rows.append((pack_id, entries, len(pack)))
        if len(rows) == 1000:
            storage.index.add_packs(rows)
            rows = []
    storage.index.add_packs(rows)
    return blocks


def save_in_records(storage, blocks: list, per_record: int = 1000) -> None:
    """Snapshot records naming ``blocks`` (as laid by packs_of_blocks), ``per_record`` to a
    record, each from offset 0 (small records: reading them costs little beside check)."""
    from diskvault.store.format.manifest import decode_block
    from diskvault.store.format.snapshots import BackupStats, SnapshotRecord

    BlockRef = _block_ref()
    end = blocks[-1].offset + decode_block(storage.chunks.get(blocks[-1].digest))[0].length
    for first in range(0, len(blocks), per_record):
        part = blocks[first:first + per_record]
        start = part[0].offset
        part_end = blocks[first + per_record].offset if first + per_record < len(blocks) \
            else end
        storage.snapshots.save(SnapshotRecord(
            SnapshotRecord.new_id(), "synthetic", datetime.now(timezone.utc), "/synthetic",
            part_end - start, "host", [], BackupStats(),
            [BlockRef(block.digest, block.offset - start) for block in part]))


def build_packs(repo: Path, packs: int, blocks_per_pack: int) -> None:
    from diskvault.store.repository import Repository
    from diskvault.store.storage import Storage

    Repository.init(repo, encryption="none").close()
    with Storage.open(repo, catch_up=False) as storage:
        save_in_records(storage, packs_of_blocks(storage, packs, blocks_per_pack))


# check in a child: its CPU time, or under tracemalloc (which slows what allocates) its peak
# of traced memory.
CHECK_IN_CHILD = """
import json, sys, time, tracemalloc
from diskvault.maintenance.check import check
from diskvault.store.storage import Storage

with Storage.open(sys.argv[1], catch_up=False) as storage:
    if sys.argv[2] == "traced":
        tracemalloc.start()
    cpu = time.process_time()
    report = check(storage)
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
assert not report.damaged, report.problems
print(json.dumps({"packs": report.packs, "manifest_blocks": report.manifest_blocks,
                  sys.argv[2]: peak if sys.argv[2] == "traced" else round(cpu, 2)}))
"""


def check_in_child(repo: Path, source: Path, figure: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHECK_IN_CHILD, str(repo), figure],
                          check=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(source / "src")})
    return json.loads(done.stdout)


def measure_packs(workdir: Path, counts: list[int], blocks_per_pack: int,
                  sources: list[Path]) -> None:
    first_last: dict[str, list[dict]] = {}
    for count in counts:
        repo = workdir / f"packs-{count}x{blocks_per_pack}"
        if not repo.exists():
            build_packs(repo, count, blocks_per_pack)
        for source in sources:
            figures = {"source": str(source), **check_in_child(repo, source, "traced"),
                       **check_in_child(repo, source, "cpu_s"), "load": os.getloadavg()[0]}
            print(json.dumps(figures))
            first_last.setdefault(str(source), []).append(figures)
    for source, runs in first_last.items():
        if len(runs) > 1:
            grown = runs[-1]["traced"] - runs[0]["traced"]
            print(json.dumps({"source": source, "traced_bytes_per_pack": round(
                grown / (runs[-1]["packs"] - runs[0]["packs"])), "per_manifest_block": round(
                grown / (runs[-1]["manifest_blocks"] - runs[0]["manifest_blocks"]))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-mib", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--packs", type=str, default=None,
                        help="comma-separated counts of synthetic packs, instead of an image")
    parser.add_argument("--blocks-per-pack", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--source", type=Path, action="append", default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dv-check-memory-"))
    if args.packs:
        measure_packs(workdir, [int(n) for n in args.packs.split(",")],
                      args.blocks_per_pack, args.source or [HERE])
        return
    repo = workdir / "repo"
    if not repo.exists():
        build(repo, args.image_mib, args.chunk_size)
    index_mib = (repo / "index" / "data.mdb").stat().st_size / 2**20
    for source in args.source or [HERE]:
        print(json.dumps({**measure(repo, source), "index_file_mib": round(index_mib, 1)}))


if __name__ == "__main__":
    main()
