"""Entry point: python -m benchmarks.restore_ab --before SRC [--size 2G] [--rounds 4]

A full restore of the last night (night 1) by two source trees of diskvault, alternating in
one run (old, new, old, new, ...), the page cache dropped before each, the target fsynced
inside the time: wall and CPU seconds (user + sys) of each, and the load average at its
start. The way to judge a change to the restore on a shared machine, where one run of each
says little. ``--before`` is the old tree's src/ (e.g. of a `git worktree add` of main), run
through PYTHONPATH like this one's. Both restore from one repository, made by this tree.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from . import workload
from .measure import Stopwatch, drop_caches, flush_file, run_measured
from .run import log, parse_size

HERE = Path(__file__).resolve().parent


def restore_once(source: Path, repo: Path, target: Path) -> dict:
    target.unlink(missing_ok=True)
    drop_caches()
    env = {**os.environ, "PYTHONPATH": str(source)}
    load = os.getloadavg()[0]
    stats = run_measured([sys.executable, "-m", "diskvault", "restore", "-r", str(repo),
                          "bench", str(target), "--no-progress"], env=env).check()
    with Stopwatch() as flush:
        flush_file(target)
    return {"wall_s": stats.wall_s + flush.elapsed_s, "cpu_s": stats.cpu_s,
            "user_s": stats.user_s, "sys_s": stats.sys_s, "load": load}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore_ab")
    parser.add_argument("--before", type=Path, required=True, help="the old tree's src/")
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root: it drops the page cache", file=sys.stderr)
        return 2
    prepared = workload.prepare("vm-image", args.size, 1, 1, args.work, log)
    scratch = args.work / "restore-ab"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    repo, target = scratch / "repo", scratch / "target.img"
    new = HERE.parent / "src"
    env = {**os.environ, "PYTHONPATH": str(new)}
    diskvault = [sys.executable, "-m", "diskvault"]
    subprocess.run([*diskvault, "init", "-r", str(repo), "--encryption", "none"], env=env,
                   check=True, capture_output=True)
    for night in (0, 1):
        subprocess.run([*diskvault, "backup", "-r", str(repo), str(prepared.state(night)),
                        "--name", "bench", "--no-progress"], env=env, check=True,
                       capture_output=True)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, source in (("old", args.before), ("new", new)):
            row = restore_once(source, repo, target)
            runs[name].append(row)
            print(f"{name} wall {row['wall_s']:.2f} s  cpu {row['cpu_s']:.2f} s (user "
                  f"{row['user_s']:.2f}, sys {row['sys_s']:.2f})  load {row['load']:.2f}",
                  flush=True)
    for name, rows in runs.items():
        walls, cpus = [r["wall_s"] for r in rows], [r["cpu_s"] for r in rows]
        print(f"{name}: wall median {statistics.median(walls):.2f} s ({min(walls):.2f}-"
              f"{max(walls):.2f}), cpu median {statistics.median(cpus):.2f} s "
              f"({min(cpus):.2f}-{max(cpus):.2f})")
    shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
