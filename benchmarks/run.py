"""Entry point: python -m benchmarks.run [--workload fs-image|vm-image|all] [--image-size 2G]
[--nights N] [--tools diskvault,borg,borg64k,restic,casync] [--quick]

Builds (or reuses) the workloads, runs every tool over every night, and writes report.md,
results.json and repo-size.png into benchmarks/results/<workload>/ (default parameters) or
benchmarks/results/custom/<workload>-<size>-<nights>n/ (anything else, --quick included).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import cleanup, install, workload
from .peers import DEFAULT_TOOLS, make_peer
from .report import write_report
from .runner import Session

HERE = Path(__file__).resolve().parent
DEFAULTS = {"workload": "fs-image", "image_size": 2 << 30, "nights": 5}
QUICK = {"workload": "all", "image_size": 256 << 20, "nights": 2}
WORKLOADS = list(workload.BUILDERS)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1])
    parser.add_argument("--workload", choices=WORKLOADS + ["all"],
                        help="default fs-image (all with --quick); all takes about 22 minutes")
    parser.add_argument("--image-size", type=parse_size, help="image size, e.g. 2G (default 2G)")
    parser.add_argument("--nights", type=int, help="nights of change after night 0 (default 5)")
    parser.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                        help=f"comma-separated subset of {','.join(DEFAULT_TOOLS)}")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: both workloads, 256 MiB, 2 nights (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=HERE / "work",
                        help="where images and repositories live (default benchmarks/work)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--keep-repos", action="store_true",
                        help="leave the tools' repositories in the work folder after the run")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    args.workload = args.workload or preset["workload"]
    args.image_size = args.image_size or preset["image_size"]
    args.nights = args.nights if args.nights is not None else preset["nights"]
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in DEFAULT_TOOLS]
    if unknown or not args.tools:
        parser.error(f"--tools: choose from {','.join(DEFAULT_TOOLS)} (got {args.tools})")
    if args.nights < 0:
        parser.error("--nights must be 0 or more")
    return args


def results_folder(args: argparse.Namespace, name: str) -> Path:
    if args.image_size == DEFAULTS["image_size"] and args.nights == DEFAULTS["nights"] \
            and args.seed == 1:
        return args.results / name
    return args.results / "custom" / f"{name}-{args.image_size >> 20}M-{args.nights}n"


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root: it loop-mounts images and drops the page cache",
              file=sys.stderr)
        return 2
    # The diskvault measured is the one installed beside this interpreter (the checkout's
    # .venv), not whatever copy is first on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    started = time.perf_counter()
    repos = args.work / "repos"
    cleanup.set_aside(repos, args.work)  # left by --keep-repos or an interrupted run
    cleanup.finish_earlier_deletions(args.work, log)
    names = WORKLOADS if args.workload == "all" else [args.workload]
    install.ensure_harness_tools(log)
    probe = [make_peer(tool, args.work / "repos" / "probe" / tool) for tool in args.tools]
    skipped = install.ensure_peers(probe, log)
    for tool, reason in skipped.items():
        log(f"{tool}: not run: {reason}")
    plot = install.ensure_matplotlib(log)
    for name in names:
        log(f"== {name}: {args.image_size >> 20} MiB, night 0 + {args.nights} nights")
        prepared = workload.prepare(name, args.image_size, args.nights, args.seed, args.work, log)
        peers = [make_peer(tool, args.work / "repos" / name / tool) for tool in args.tools]
        session = Session(prepared, peers, args.work, log)
        results = session.run(skipped)
        if not args.keep_repos:
            cleanup.set_aside(repos / name, args.work)
        folder = results_folder(args, name)
        print(write_report(results, folder, plot=plot), flush=True)
        log(f"written to {folder}")
    log(f"total {(time.perf_counter() - started) / 60:.1f} min")
    cleanup.delete_in_background(args.work, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
