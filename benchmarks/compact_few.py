"""Compaction that frees one small snapshot in a large index: before/after, in one run.

    python -m benchmarks.compact_few --before-src DIR [--chunks 1000000] [--rounds 2]
                                     [--workdir DIR] [--results DIR]

One random image of N × 256 B chunks (benchmarks/scale.py's chunks repository: packs of
256 KiB), and 2 × ROUNDS small images of 64 KiB (one pack of data each) beside it; one
compaction makes the reference counts. Then, ROUNDS times: a small snapshot is deleted and
`diskvault compact` runs with the code in --before-src (e.g. `git archive main src`), then
another is deleted and compact runs with this checkout's: the same work, alternated, so
that the load weighs on both alike. Each figure has the load average beside it.

Then, in this process, what the choice between the pass over the whole index and the lookup
of the listed footers' digests (maintenance/sweep_choice.py) rests on: the pass's CPU per
index entry, and the listed sweep's CPU per record for 1, 16, 64 and 256 of the big image's
packs (footer reads, sort on disk, lookups and deletions: it frees those chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from .measure import run_measured
from .scale import (MIB, SMALL_CHUNK, SMALL_PACK_BYTES, diskvault, init, load_average, log,
                    set_pack_target, write_random)

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"
SMALL_BYTES = 64 * 1024
LISTED_PACKS = (1, 16, 64, 256)


def env_with(source: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(source)}


def run(step: str, argv: list, source: Path, figures: list) -> str:
    load = load_average()
    stats = run_measured([str(a) for a in argv], env=env_with(source))
    stats.check()
    figures.append({"step": step, "source": str(source), "wall_s": round(stats.wall_s, 3),
                    "cpu_s": round(stats.cpu_s, 3),
                    "peak_rss_mib": round(stats.peak_rss_bytes / MIB, 1), "load": load})
    log(f"  {step:34} {stats.wall_s:7.2f} s  cpu {stats.cpu_s:7.2f} s  "
        f"rss {stats.peak_rss_bytes / MIB:6.1f} MiB  load {load}")
    return stats.stdout


def build(work: Path, chunks: int, smalls: int, figures: list) -> tuple[Path, list[str]]:
    repo, image = work / "repo", work / "big.img"
    rng = random.Random(1)
    write_random(image, chunks * SMALL_CHUNK, rng)
    init(repo, "--chunk-size", SMALL_CHUNK)
    set_pack_target(repo, SMALL_PACK_BYTES)
    run("backup (big image)", diskvault("backup", "-r", repo, image, "--name", "big",
                                        "--no-progress"), SOURCE, figures)
    image.unlink()
    ids = []
    for n in range(smalls):
        small = work / f"small{n}.img"
        small.write_bytes(rng.randbytes(SMALL_BYTES))
        out = run(f"backup (64 KiB, {n})", diskvault(
            "backup", "-r", repo, small, "--name", f"small{n}", "--json", "--no-progress"),
            SOURCE, figures)
        ids.append(json.loads(out)["id"])
    run("compact (first: counts made)", diskvault("compact", "-r", repo), SOURCE, figures)
    return repo, ids


def sweep_costs(repo: Path) -> dict:
    """CPU of the pass per index entry, and of the listed sweep per record listed."""
    sys.path.insert(0, str(SOURCE))
    from diskvault.maintenance import sweep_choice
    from diskvault.maintenance.liveness import Liveness
    from diskvault.store.storage import Storage

    sweep_choice.LISTED_SHARE = 1.0  # list them all, to compare the costs

    costs: dict = {"listed": []}
    with Storage.open(str(repo)) as storage:
        index = storage.index
        counts = Liveness.existing(index)
        entries = index.chunk_count()
        started = time.process_time()
        index.sweep_out(["00" * 16])  # no such pack: the walk alone
        costs["pass_us_per_entry"] = round((time.process_time() - started) / entries * 1e6, 3)
        costs["entries"] = entries
        big = sorted(storage.packs.list(), key=storage.packs.size, reverse=True)
        taken = 0
        for count in LISTED_PACKS:
            packs, taken = big[taken:taken + count], taken + count
            if len(packs) < count:
                break
            records = index.records_in(packs)
            load = load_average()
            started = time.process_time()
            with sweep_choice.listed_digests(storage, packs) as listed:
                counts.remove_unused_locations(packs, lambda: None, listed)
            cpu = time.process_time() - started
            costs["listed"].append({"packs": count, "records": records, "share": round(
                records / entries, 5), "us_per_record": round(cpu / records * 1e6, 3),
                "load": load})
        log(f"  sweep costs: {costs}")
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=10**6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/dv-compact-few"))
    parser.add_argument("--results", type=Path,
                        default=HERE / "results" / "scale" / "compact-few")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    figures: list = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    log(f"{args.chunks} chunks (load average {load_average()})")
    repo, ids = build(args.workdir, args.chunks, 2 * args.rounds, figures)
    sources = [("before", args.before_src.resolve()), ("after", SOURCE)]
    for round_number in range(args.rounds):
        for (label, source), snapshot in zip(sources, ids[2 * round_number:]):
            run("delete (64 KiB snapshot)", diskvault("delete", "-r", repo, snapshot),
                SOURCE, figures)
            run(f"compact {label}", diskvault("compact", "-r", repo), source, figures)
    costs = sweep_costs(repo)
    shutil.rmtree(args.workdir)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(json.dumps(
        {"started": started, "cores": os.cpu_count(),
         "chunks": args.chunks, "figures": figures, "sweep_costs": costs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
