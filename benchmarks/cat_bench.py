"""`diskvault cat` of a vm-image snapshot into a pipe read by `cat > /dev/null`, against the
pipe limit (`cat image | cat > /dev/null`) and `diskvault restore` to a new file, alternating
in one run; optionally a second diskvault source tree (``--before``) beside this one.

    .venv/bin/python -m benchmarks.cat_bench [--size 1G] [--repeat 5] [--before SRC]

Whole commands, started anew each run (startup included), the image and the repository warm
in the page cache. Wall and CPU seconds (user + system of every process of the pipeline) of
each run, the median and the lowest; the ratio of the medians to the pipe limit is the figure
to keep, with the load average of the shared machine before and after.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .measure import RunStats, run_measured
from .micro import parse_size
from .vm_image import Plan, apply_night, build_night0

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"


def build(work: Path, size: int, source: Path) -> tuple[Path, Path]:
    """A vm-image night 1 (1 % of 4 KiB blocks rewritten) and a plaintext repository
    holding it as its one snapshot."""
    image, repository = work / "image.raw", work / "repo"
    plan = Plan(size, 7)
    apply_night(image, 1, plan, work, build_night0(image, plan, work))
    diskvault(source, "-r", str(repository), "init", "--encryption", "none")
    diskvault(source, "-r", str(repository), "backup", "--name", "vm", str(image))
    return image, repository


def running(source: Path) -> dict:
    """The environment in which ``python -m diskvault`` runs the tree at ``source``."""
    return {**os.environ, "PYTHONPATH": str(source)}


def diskvault(source: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "diskvault", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=running(source))


def measured(shell: str, source: Path | None = None) -> RunStats:
    return run_measured(["sh", "-c", shell], env=running(source) if source else None).check()


def warm(*paths: Path) -> None:
    """Read every file under ``paths`` once, so each run starts with them cached."""
    for path in paths:
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                           if p.is_file())):
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="image size (default 1G)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--before", type=Path,
                        help="another diskvault source tree (its src/) to measure beside")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="cat-bench-", dir=HERE / "work"
                                 if (HERE / "work").is_dir() else None))
    try:
        image, repository = build(work, size, SOURCE)
        python = shlex.quote(sys.executable)
        cat = f"{python} -m diskvault -r {repository} cat latest | cat > /dev/null"
        target = work / "restored.raw"
        restore = f"rm -f {target} && {python} -m diskvault -r {repository} restore " \
                  f"latest {target} > /dev/null"
        commands = {"pipe limit: cat image | cat": (f"cat {image} | cat > /dev/null", None)}
        if args.before:
            commands["diskvault cat | cat (before)"] = (cat, args.before.resolve())
        commands["diskvault cat | cat"] = (cat, SOURCE)
        commands["diskvault restore to a new file"] = (restore, SOURCE)
        warm(image, repository)
        load_before = os.getloadavg()
        started = time.strftime("%H:%M UTC", time.gmtime())
        runs: dict[str, list[RunStats]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, (shell, source) in commands.items():
                runs[name].append(measured(shell, source))
        report(runs, size, args.repeat, started, load_before, os.getloadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[RunStats]], size: int, repeat: int, started: str,
           load_before: tuple, load_after: tuple) -> None:
    limit = statistics.median(run.wall_s for run in next(iter(runs.values())))
    print(f"{size >> 20} MiB vm-image night 1, {started}, {repeat} runs of each, alternating; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| command | wall: median (lowest) | ratio to the pipe limit | CPU: median (lowest) "
          "| each run's wall |")
    print("|---|---|---:|---|---|")
    for name, stats in runs.items():
        walls = [run.wall_s for run in stats]
        cpus = [run.cpu_s for run in stats]
        wall = statistics.median(walls)
        label = name.replace("|", "\\|")  # a table cell
        print(f"| {label} | {wall:.2f} s ({min(walls):.2f}) | {wall / limit:.1f}x "
              f"| {statistics.median(cpus):.2f} s ({min(cpus):.2f}) "
              f"| {' '.join(f'{w:.2f}' for w in walls)} |")


if __name__ == "__main__":
    main()
