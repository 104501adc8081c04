"""NBD export benchmark: a snapshot read through `diskvault serve` against `diskvault cat`.

    python -m benchmarks.serve_bench [--size-mib 1024] [--repeat 5] [--workdir DIR]

Builds an image of 4 MiB blocks (random, text-like, and every eighth a hole), backs it up
once, then runs ``--repeat`` rounds. Each round measures, one right after the other so that the
machine's load (which swings widely here) weighs on all of them alike, each with a fresh process
and with the repository's packs cold (dropped from the page cache) and then warm:

- `diskvault cat > /dev/null` (the whole command: it opens the repository too);
- `nbdcopy URI /dev/null` against a `serve` started beforehand (it skips the holes the export
  reports);
- `nbdcopy URI - | cat > /dev/null` (every byte, as cat writes them);

then time to first byte: `serve` started until a `qemu-io` read of the first 4 KiB returned,
against `cat` started until its first 4 KiB arrived. A ratio is cat's time over the export's
within one round; the report gives each ratio's median and spread over the rounds, and the load
average around each round. Writes benchmarks/results/serve/serve-<size>M.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .mount_bench import drop_cache

MIB = 1 << 20
BLOCK = 4 * MIB
RESULTS = Path(__file__).parent / "results" / "serve"


def diskvault(*args: str) -> list[str]:
    return [sys.executable, "-m", "diskvault", *args]


def write_image(path: Path, size: int) -> None:
    rng = random.Random(0)
    with open(path, "wb") as image:
        for index in range(size // BLOCK):
            if index % 8 == 7:
                image.seek(BLOCK, os.SEEK_CUR)
            elif index % 2:
                image.write(rng.randbytes(BLOCK))
            else:
                line = b"diskvault benchmark line %d\n" % index
                image.write((line * (BLOCK // len(line) + 1))[:BLOCK])
        image.truncate(size)


def timed(command: list[str] | str, **options) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **options)
    return time.monotonic() - start


class Served:
    """`diskvault serve --json` running until the block ends."""

    def __init__(self, repo: Path):
        self.started = time.monotonic()
        self.process = subprocess.Popen(diskvault("serve", "--json", "-r", str(repo), "vm"),
                                        stdout=subprocess.PIPE)
        self.uri = json.loads(self.process.stdout.readline())["uri"]

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()


def measures(repo: Path) -> dict:
    def cat() -> float:
        return timed(diskvault("cat", "-r", str(repo), "vm"))

    def nbdcopy_null() -> float:
        with Served(repo) as served:
            return timed(["nbdcopy", served.uri, "/dev/null"])

    def nbdcopy_pipe() -> float:
        with Served(repo) as served:
            return timed(f"nbdcopy '{served.uri}' - | cat > /dev/null", shell=True)

    def cat_first_byte() -> float:
        start = time.monotonic()
        with subprocess.Popen(diskvault("cat", "-r", str(repo), "vm"),
                              stdout=subprocess.PIPE) as process:
            process.stdout.read(4096)
            elapsed = time.monotonic() - start
            process.kill()
        return elapsed

    def serve_first_byte() -> float:
        with Served(repo) as served:
            subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", served.uri],
                           check=True, capture_output=True)
            return time.monotonic() - served.started

    return {"cat": cat, "nbdcopy /dev/null": nbdcopy_null, "nbdcopy - (every byte)": nbdcopy_pipe,
            "cat: first 4 KiB": cat_first_byte, "serve: first 4 KiB": serve_first_byte}


RATIOS = {  # name: (baseline, measured); a ratio above 1 means the export was faster
    "nbdcopy /dev/null vs cat": ("cat", "nbdcopy /dev/null"),
    "every byte vs cat": ("cat", "nbdcopy - (every byte)"),
    "first byte, cat vs serve": ("cat: first 4 KiB", "serve: first 4 KiB"),
}


def run_rounds(repo: Path, repeat: int) -> list[dict]:
    """``repeat`` rounds of every measure, cold then warm; each round's times and load."""
    packs = [path for path in (repo / "packs").rglob("*") if path.is_file()]
    rounds = []
    for number in range(repeat):
        for cache in ("cold", "warm"):
            load_before = os.getloadavg()[0]
            times = {}
            for name, measure in measures(repo).items():
                if cache == "cold":
                    drop_cache(packs)
                times[name] = measure()
            rounds.append({"round": number, "cache": cache, "times_s": times,
                           "load_1min": [load_before, os.getloadavg()[0]]})
            print(f"round {number} {cache}: " + ", ".join(f"{name} {seconds:.2f} s"
                  for name, seconds in times.items()) + f"; load {load_before:.1f}", flush=True)
    return rounds


def summary(rounds: list[dict]) -> dict:
    """Per cache state and ratio: the median, lowest and highest of the rounds' ratios."""
    result = {}
    for cache in ("cold", "warm"):
        chosen = [entry["times_s"] for entry in rounds if entry["cache"] == cache]
        for label, (baseline, measured) in RATIOS.items():
            ratios = [times[baseline] / times[measured] for times in chosen]
            result[f"{cache}: {label}"] = spread(ratios)
        for name in chosen[0]:
            result[f"{cache}: {name} (s)"] = spread([t[name] for t in chosen])
    return result


def spread(values: list[float]) -> dict:
    """The median, lowest and highest of the rounds' figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread_table(figures: dict) -> list[str]:
    """The figures' spreads as a Markdown table."""
    return ["| measure | median | lowest | highest |", "|---|---|---|---|"] + [
        f"| {name} | {value['median']:.2f} | {value['min']:.2f} | {value['max']:.2f} |"
        for name, value in figures.items()]


def write_report(size_mib: int, rounds: list[dict], figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"serve-{size_mib}M"
    loads = [load for entry in rounds for load in entry["load_1min"]]
    stem.with_suffix(".json").write_text(json.dumps(
        {"size_mib": size_mib, "rounds": rounds, "summary": figures}, indent=1) + "\n")
    lines = [f"# serve vs cat, {size_mib} MiB image, {len({r['round'] for r in rounds})} rounds",
             "", f"Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}.",
             "Ratios: cat's time over the export's, within one round (above 1: the export "
             "was faster).", "", *spread_table(figures)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    image, repo = work / "image.img", work / "repo"
    if not repo.exists():
        write_image(image, options.size_mib * MIB)
        subprocess.run(diskvault("init", "-r", str(repo), "--encryption", "none"), check=True,
                       capture_output=True)
        subprocess.run(diskvault("backup", "-r", str(repo), str(image), "--name", "vm",
                                 "--no-progress"), check=True, capture_output=True)
        image.unlink()
    rounds = run_rounds(repo, options.repeat)
    report = write_report(options.size_mib, rounds, summary(rounds))
    print(report.read_text())


if __name__ == "__main__":
    main()
