"""How cost grows: time and peak memory of each command against snapshots and chunks.

    python -m benchmarks.scale [--snapshots 10,1000,10000] [--chunks 100000,1000000,10000000]
                               [--pack-bytes 262144] [--backup-only] [--workdir DIR]
                               [--results DIR]

Two series of repositories, each measured with `diskvault` commands run as children through
GNU time (benchmarks/measure.py: wall time, CPU time, the child's own peak RSS, and its
peak anonymous RSS sampled every 20 ms: the heap, without the LMDB pages it maps):

- **snapshots**: a 4 MiB image backed up 10 times through the facade (a few 4 KiB blocks
  rewritten each night), then its records copied under new ids and older times until the
  repository holds N snapshots (built in seconds; backing up 10,000 images one by one takes
  hours, because each backup reads every record). Measured: one more backup, list, restore
  of the latest, check, prune to a tenth, compact.
- **chunks**: one random image of N × 256 bytes backed up at `--chunk-size 256` (N chunks
  of 256 B on average: the chunk count of N × 64 KiB of disk at the default size, in 1/256
  of the bytes) into packs of 256 KiB (about as many chunks per pack as the default 64 MiB
  packs of 64 KiB chunks), then a 1 MiB image into the same series. Measured: both backups, list,
  restore of each, check, an index rebuild from the pack footers (the catch-up that fills an
  empty object-store cache), the rebuild of a whole index found distrusted (into its spare
  generation), prune of the big snapshot and the compaction that frees it.
  With --backup-only, the first backup alone (for before/after runs of the backup path).

Results go to --results (default benchmarks/results/scale/): results.json and report.md,
with the load average before and after each case. Caches stay warm (the repositories fit in
RAM); the figures are about growth, not absolute speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

from .measure import allocated_size, run_measured
from .scale_report import write_report

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"
MIB = 1 << 20
SMALL_CHUNK = 256           # the smallest average chunk `init` accepts
# Packs of 256 KiB hold about as many 256 B chunks as default packs (64 MiB) hold chunks
# of 64 KiB: what is bounded per pack then weighs what it would at the default size.
SMALL_PACK_BYTES = 256 << 10
REAL_NIGHTS = 10            # real backups in a snapshots repository; the rest are copies
NIGHT_IMAGE_BYTES = 4 * MIB
BLOCKS_PER_NIGHT = 16       # 4 KiB blocks rewritten in the nightly image
SMALL_IMAGE_BYTES = MIB
SEED = 1

# The catch-up an object-store cache does when it is empty: every pack's footer indexed.
REBUILD_INDEX = """
import sys
from diskvault.store.storage import Storage
with Storage.open(sys.argv[1], catch_up=False) as storage:
    print(storage.catch_up_index().packs_added)
"""
# The rebuild of a whole index that is not to be trusted (it names another copy of the
# repository): every footer indexed into the spare generation, then the switch.
REBUILD_DISTRUSTED_INDEX = """
import sys
from diskvault.store.storage import Storage
with Storage.open(sys.argv[1], catch_up=False) as storage:
    storage.index.record_identity("0123 file:///elsewhere")
    print(storage.catch_up_index().rebuilt_because)
"""


def log(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child_env() -> dict:
    """This checkout's diskvault first on the path of every child."""
    return {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def diskvault(*args) -> list[str]:
    return [sys.executable, "-m", "diskvault", *map(str, args)]


def measured(step: str, argv: list[str], figures: dict, must_succeed: bool = False) -> str:
    """Run one command; keep its wall time, CPU time and peak RSS under ``step``. A command
    that fails is recorded with its last line (a failure at some size is itself a result)
    and the case goes on, unless the steps after it need its output."""
    stats = run_measured(argv, env=child_env(), sample_anon_rss=True)
    if must_succeed:
        stats.check()
    figures[step] = {"wall_s": round(stats.wall_s, 3), "cpu_s": round(stats.cpu_s, 3),
                     "peak_rss_mib": round(stats.peak_rss_bytes / MIB, 1),
                     "peak_anon_mib": round(stats.extra["peak_anon_rss_bytes"] / MIB, 1)}
    if stats.returncode != 0:
        figures[step]["failed"] = (stats.stderr.strip().splitlines() or ["(no message)"])[-1]
    log(f"    {step:28} {stats.wall_s:8.2f} s  cpu {stats.cpu_s:8.2f} s  rss "
        f"{stats.peak_rss_bytes / MIB:7.1f} MiB  anon {figures[step]['peak_anon_mib']:7.1f} MiB"
        + (f"  FAILED: {figures[step]['failed']}" if stats.returncode else ""))
    return stats.stdout


def write_random(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "wb") as out:
        for offset in range(0, size, 4 * MIB):
            out.write(rng.randbytes(min(4 * MIB, size - offset)))


def init(repo: Path, *options) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    run_measured(diskvault("init", "-r", repo, "--encryption", "none", *options),
                 env=child_env()).check()


# -- snapshots ---------------------------------------------------------------------------
def build_snapshots(repo: Path, image: Path, count: int, rng: random.Random) -> None:
    """REAL_NIGHTS real backups, then copies of their records (new ids, older times)."""
    sys.path.insert(0, str(SOURCE))
    from diskvault.store.repository import Repository

    init(repo)
    data = bytearray(rng.randbytes(NIGHT_IMAGE_BYTES))
    with Repository.open(repo, writer=True) as repository:
        real = []
        for _ in range(min(count, REAL_NIGHTS)):
            rewrite_blocks(data, rng)
            image.write_bytes(data)
            real.append(repository.backup(image, name="vm"))
        store = repository.storage.snapshots
        oldest = real[0].time
        for copy in range(count - len(real)):
            record = real[copy % len(real)]
            store.save(dataclasses.replace(record, id=record.new_id(),
                                           time=oldest - timedelta(minutes=copy + 1)))
    rewrite_blocks(data, rng)
    image.write_bytes(data)  # the next night, for the measured backup


def rewrite_blocks(data: bytearray, rng: random.Random) -> None:
    for _ in range(BLOCKS_PER_NIGHT):
        offset = rng.randrange(0, len(data) // 4096) * 4096
        data[offset:offset + 4096] = rng.randbytes(4096)


def snapshots_case(work: Path, count: int) -> dict:
    repo, image, target = work / "repo", work / "night.img", work / "restored.img"
    rng = random.Random(SEED)
    started = time.perf_counter()
    build_snapshots(repo, image, count, rng)
    build_s = time.perf_counter() - started
    log(f"  built {count} snapshots in {build_s:.1f} s")
    figures: dict = {}
    measured("backup (4 MiB nightly)", diskvault("backup", "-r", repo, image, "--name", "vm",
                                                  "--no-progress"), figures)
    measured("list", diskvault("list", "-r", repo), figures)
    measured("restore latest", diskvault("restore", "-r", repo, "latest", target), figures)
    target.unlink()
    measured("check", diskvault("check", "-r", repo), figures)
    measured("prune to a tenth", diskvault("prune", "-r", repo, "--keep-last",
                                           max(1, (count + 1) // 10)), figures)
    measured("compact", diskvault("compact", "-r", repo), figures)
    return {"snapshots": count + 1, "build_s": round(build_s, 1), "commands": figures,
            "index_bytes": index_bytes(repo), "repo_bytes": allocated_size(repo)}


# -- chunks ------------------------------------------------------------------------------
def set_pack_target(repo: Path, pack_bytes: int) -> None:
    """A plaintext config has no authenticator: its pack target is set by editing it."""
    config = json.loads((repo / "config").read_text())
    (repo / "config").write_text(json.dumps({**config, "pack_target_bytes": pack_bytes}))


def chunks_case(work: Path, count: int, pack_bytes: int, backup_only: bool) -> dict:
    repo, image = work / "repo", work / "big.img"
    small = work / "small.img"
    rng = random.Random(SEED)
    started = time.perf_counter()
    write_random(image, count * SMALL_CHUNK, rng)
    write_random(small, SMALL_IMAGE_BYTES, rng)
    log(f"  wrote a {count * SMALL_CHUNK / MIB:.0f} MiB image in "
        f"{time.perf_counter() - started:.1f} s")
    init(repo, "--chunk-size", SMALL_CHUNK)
    set_pack_target(repo, pack_bytes)
    figures: dict = {}
    first = json.loads(measured("backup (whole image)", diskvault(
        "backup", "-r", repo, image, "--name", "big", "--json", "--no-progress"), figures,
        must_succeed=True))
    image.unlink()
    index = (index_bytes(repo) if backup_only
             else measure_the_rest(repo, small, work / "restored.img", first["id"], figures))
    shutil.rmtree(repo)
    return {"chunks": first["stats"]["new_chunks"], "image_bytes": count * SMALL_CHUNK,
            "pack_target_bytes": pack_bytes,
            "commands": figures, "index_bytes": index}


def measure_the_rest(repo: Path, small: Path, target: Path, first_id: str,
                     figures: dict) -> int:
    """The commands after the whole-image backup; returns the index's size before its
    rebuild."""
    measured("backup (1 MiB into it)", diskvault("backup", "-r", repo, small, "--name", "big",
                                                 "--no-progress"), figures)
    measured("list", diskvault("list", "-r", repo), figures)
    measured("restore (1 MiB)", diskvault("restore", "-r", repo, "latest", target), figures)
    target.unlink()
    measured("restore (whole image)", diskvault("restore", "-r", repo, first_id, target),
             figures)
    target.unlink()
    measured("check", diskvault("check", "-r", repo), figures)
    index = index_bytes(repo)
    shutil.rmtree(repo / "index")
    measured("index rebuild", [sys.executable, "-c", REBUILD_INDEX, str(repo)], figures)
    measured("index rebuild (distrusted)",
             [sys.executable, "-c", REBUILD_DISTRUSTED_INDEX, str(repo)], figures)
    measured("prune (forgets the image)", diskvault("prune", "-r", repo, "--keep-last", 1),
             figures)
    measured("compact", diskvault("compact", "-r", repo), figures)
    return index


def index_bytes(repo: Path) -> int:
    return allocated_size(repo / "index")


def run_case(kind: str, size: int, work: Path, pack_bytes: int, backup_only: bool) -> dict:
    folder = work / f"{kind}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    before = load_average()
    log(f"{kind} = {size} (load average {before})")
    started = time.perf_counter()
    result = (snapshots_case(folder, size) if kind == "snapshots"
              else chunks_case(folder, size, pack_bytes, backup_only))
    shutil.rmtree(folder, ignore_errors=True)
    return {**result, "case_s": round(time.perf_counter() - started, 1),
            "load_before": before, "load_after": load_average()}


def sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=sizes, default=[10, 1000, 10000])
    parser.add_argument("--chunks", type=sizes, default=[10**5, 10**6, 10**7])
    parser.add_argument("--pack-bytes", type=int, default=SMALL_PACK_BYTES,
                        help="pack target of the chunks repositories (default 262144)")
    parser.add_argument("--backup-only", action="store_true",
                        help="chunks series: measure the whole-image backup alone")
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "scale")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "scale")
    args = parser.parse_args()
    results = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cores": os.cpu_count(), "snapshots": [], "chunks": []}
    args.results.mkdir(parents=True, exist_ok=True)
    for kind in ("snapshots", "chunks"):
        for size in getattr(args, kind):
            results[kind].append(run_case(kind, size, args.workdir, args.pack_bytes,
                                          args.backup_only))
            # After every case, so that an interrupted run keeps what it measured.
            (args.results / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(write_report(results, args.results / "report.md"))


if __name__ == "__main__":
    main()
