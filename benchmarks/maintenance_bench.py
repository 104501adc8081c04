"""Maintenance benchmark: prune + compact after many nightly snapshots, and check throughput.

    python -m benchmarks.maintenance_bench [--image-mib 512] [--nights 60] [--keep 30]
                                           [--thresholds 0,20,50] [--workdir DIR]

1. Builds the "vm-image" workload (benchmarks/vm_image.py: text, binary, random and zero
   extents) and evolves it in place for --nights nights (1 % of its 4 KiB blocks rewritten
   each night), backing it up after every night with `diskvault backup`, as the timer would.
2. `diskvault prune --keep-last KEEP` (forgets the oldest nights), then `diskvault compact
   --threshold T` for each threshold, each on its own copy of the pruned repository: wall
   and CPU time, peak memory, the bytes the process wrote to disk (its block writes: packs,
   LMDB, fsyncs) and the pack bytes compact wrote, against the pack bytes it freed.
3. Deletes one snapshot in the middle and compacts again: the cost of a small change.
4. `check` and `check --read-data`, with the packs' pages dropped from the cache first
   (posix_fadvise on the pack files only: other work on the machine keeps its cache) and
   warm: MB/s of stored (pack) bytes.
5. Reads the newest and the oldest kept snapshot back with `diskvault cat` and compares them
   with that night's image (sha256): the numbers are only worth something if this holds.

Prints a table and writes everything to results.json in the work folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import vm_image

MIB = 1 << 20
SEED = 7
DEFAULT_THRESHOLD = 20.0  # percent, compact's default


@dataclass
class Run:
    """One finished `diskvault` process: its cost, measured with wait4."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    disk_write_bytes: int  # the process's block writes (ru_oublock), fsync'd data included
    stdout: str


def diskvault(*args: str | os.PathLike) -> Run:
    """Run one command to completion; output goes to temp files so wait4 can reap it."""
    argv = [sys.executable, "-m", "diskvault", *map(str, args)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {process.returncode}: "
                             f"{err.read().decode().strip()}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                   usage.ru_oublock * 512, out.read().decode())


def pack_files(repo: Path) -> list[Path]:
    return sorted((repo / "packs").glob("*/*.pack"))


def pack_bytes(repo: Path) -> int:
    return sum(path.stat().st_size for path in pack_files(repo))


def drop_pack_cache(repo: Path) -> None:
    """Drop the pack files' pages only (other work on a shared machine keeps its cache)."""
    os.sync()
    for path in pack_files(repo):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_snapshot(repo: Path, snapshot_id: str) -> str:
    digest = hashlib.sha256()
    with subprocess.Popen([sys.executable, "-m", "diskvault", "cat", "-r", str(repo),
                           snapshot_id], stdout=subprocess.PIPE) as process:
        while block := process.stdout.read(4 * MIB):
            digest.update(block)
    if process.returncode != 0:
        raise SystemExit(f"diskvault cat {snapshot_id} failed")
    return digest.hexdigest()


# -- the steps -------------------------------------------------------------------------
def build(work: Path, image_bytes: int, nights: int, keep: int) -> dict:
    """The repository after ``nights`` nightly backups; reused if already complete."""
    repo, image, meta_path = work / "repo", work / "disk.img", work / "build.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (meta["image_bytes"], meta["nights"], meta["keep"]) == (image_bytes, nights, keep):
            return meta
    shutil.rmtree(repo, ignore_errors=True)
    diskvault("init", "-r", repo)
    plan = vm_image.Plan(image_bytes, SEED)
    pull = vm_image.build_night0(image, plan, work / "scratch")
    ids, hashes, backup_s = [], {}, []
    for night in range(nights):
        if night:
            vm_image.apply_night(image, night, plan, work / "scratch", pull)
        run = diskvault("backup", "-r", repo, image, "--name", "vm", "--json", "--no-progress")
        ids.append(json.loads(run.stdout)["id"])
        backup_s.append(run.wall_s)
        if night in (nights - keep, nights - 1):  # the oldest kept and the newest
            hashes[ids[-1]] = sha256_of(image)
        print(f"  night {night:2d}: backup {run.wall_s:5.1f} s, packs "
              f"{pack_bytes(repo) / MIB:8.1f} MiB", flush=True)
    meta = {"image_bytes": image_bytes, "nights": nights, "keep": keep, "ids": ids,
            "hashes": hashes, "backup_s": backup_s, "pack_bytes": pack_bytes(repo)}
    meta_path.write_text(json.dumps(meta, indent=1))
    image.unlink()
    return meta


def prune_and_compact(work: Path, keep: int, threshold: float) -> dict:
    repo = work / f"compact-{threshold:g}"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(work / "repo", repo)
    before = pack_bytes(repo)
    prune = diskvault("prune", "-r", repo, "--keep-last", keep)
    compact = diskvault("compact", "-r", repo, "--threshold", threshold, "--json")
    result = json.loads(compact.stdout)
    after = pack_bytes(repo)
    check = json.loads(diskvault("check", "-r", repo, "--json").stdout)
    return {"threshold_percent": threshold, "repo": str(repo),
            "pack_bytes_before": before, "pack_bytes_after": after,
            "freed_bytes": before - after, "prune": asdict(prune) | {"stdout": ""},
            "compact": asdict(compact) | {"stdout": ""}, "compact_result": result,
            "unused_bytes_left": check["unreferenced_bytes"]}


def delete_one_and_compact(repo: Path, snapshot_id: str) -> dict:
    diskvault("delete", "-r", repo, snapshot_id)
    run = diskvault("compact", "-r", repo, "--json")
    return {"compact": asdict(run) | {"stdout": ""}, "compact_result": json.loads(run.stdout)}


def check_throughput(repo: Path) -> dict:
    stored = pack_bytes(repo)
    figures = {}
    for label, args in (("check", []), ("check --read-data", ["--read-data"])):
        for cache in ("cold", "warm"):
            if cache == "cold":
                drop_pack_cache(repo)
            run = diskvault("check", "-r", repo, "--json", *args)
            figures[f"{label} ({cache})"] = {
                "wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mib": run.peak_rss_mib,
                "mb_s": stored / run.wall_s / 1e6,
                "damaged": json.loads(run.stdout)["damaged"]}
    return {"stored_bytes": stored, "runs": figures}


# -- report ----------------------------------------------------------------------------
def print_report(meta: dict, compacts: list[dict], small: dict, checks: dict,
                 verified: bool) -> None:
    print(f"\n{meta['nights']} nightly snapshots of a {meta['image_bytes'] / MIB:.0f} MiB "
          f"vm-image: {meta['pack_bytes'] / MIB:.0f} MiB of packs; backups "
          f"{sum(meta['backup_s']):.0f} s in all")
    print(f"prune --keep-last {meta['keep']}, then compact (each threshold on its own copy):")
    print(f"{'threshold':>9} {'prune s':>8} {'compact s':>9} {'cpu s':>6} {'rss MiB':>8} "
          f"{'deleted MiB':>11} {'written MiB':>11} {'net freed MiB':>13} "
          f"{'written/freed':>13} {'disk writes MiB':>15} {'unused left MiB':>15}")
    for c in compacts:
        result = c["compact_result"]
        print(f"{c['threshold_percent']:8g}% {c['prune']['wall_s']:8.2f} "
              f"{c['compact']['wall_s']:9.1f} {c['compact']['cpu_s']:6.1f} "
              f"{c['compact']['peak_rss_mib']:8.0f} {result['bytes_freed'] / MIB:11.1f} "
              f"{result['bytes_written'] / MIB:11.1f} {c['freed_bytes'] / MIB:13.1f} "
              f"{result['bytes_written'] / max(c['freed_bytes'], 1):13.2f} "
              f"{c['compact']['disk_write_bytes'] / MIB:15.1f} "
              f"{c['unused_bytes_left'] / MIB:15.1f}")
    result = small["compact_result"]
    print(f"then delete one snapshot and compact: {small['compact']['wall_s']:.2f} s, "
          f"reviewed {result['packs_reviewed']} packs, read {result['blocks_released']} "
          f"released manifest blocks, freed "
          f"{(result['bytes_freed'] - result['bytes_written']) / MIB:.1f} MiB")
    print(f"check over {checks['stored_bytes'] / MIB:.0f} MiB of packs:")
    for label, run in checks["runs"].items():
        print(f"  {label:26} {run['wall_s']:6.2f} s {run['mb_s']:8.0f} MB/s  cpu "
              f"{run['cpu_s']:.1f} s  rss {run['peak_rss_mib']:.0f} MiB")
    print(f"restored snapshots match their images: {verified}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-mib", type=int, default=512)
    parser.add_argument("--nights", type=int, default=60)
    parser.add_argument("--keep", type=int, default=30)
    parser.add_argument("--thresholds", default="0,20,50",
                        help="compact --threshold values, percent, comma separated")
    parser.add_argument("--workdir", type=Path,
                        default=Path(__file__).parent / "work" / "maintenance_bench")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"building {args.nights} nights of a {args.image_mib} MiB image in {work}")
    meta = build(work, args.image_mib * MIB, args.nights, args.keep)
    compacts = [prune_and_compact(work, args.keep, float(t))
                for t in args.thresholds.split(",")]
    chosen = next((c for c in compacts if c["threshold_percent"] == DEFAULT_THRESHOLD),
                  compacts[0])  # check and the small change run on the default's result
    main_repo = Path(chosen["repo"])
    verified = all(sha256_of_snapshot(main_repo, i) == h for i, h in meta["hashes"].items())
    checks = check_throughput(main_repo)
    small = delete_one_and_compact(main_repo, meta["ids"][args.nights - args.keep // 2])
    results = {"build": meta, "compacts": compacts, "delete_one": small, "checks": checks,
               "restores_verified": verified, "load_average": os.getloadavg()}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_report(meta, compacts, small, checks, verified)


if __name__ == "__main__":
    main()
