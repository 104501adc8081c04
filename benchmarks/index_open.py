"""Opening the index: the probe at every open against the probe once per change of the data
file, in one run.

    python -m benchmarks.index_open [--chunks 100000] [--repeat 30] [--before SRC]

Measured alternately, median wall and CPU time (the process's and its children's: on a
loaded machine, the steadier figure) of ``--repeat`` each, on one index of ``--chunks`` entries:
the index opened and closed with the probe in a fresh interpreter first (what every open did
before), opened as it is now with the data file unchanged since its probe (no probe), opened
with no probe at all (the floor), and the first open after a change (probe and marker).
With ``--before SRC`` (a checkout's ``src`` folder of the old code), ``diskvault list`` of a
small repository is timed too, the old code's and this one's alternately.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from diskvault.store.format.packs import PackEntry
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.index.probe import PROBED_FILE, probe_exit_code

CHUNKS_PER_PACK = 1000


def build_index(folder: Path, chunks: int) -> None:
    index = ChunkIndex(folder)
    for pack in range(0, chunks, CHUNKS_PER_PACK):
        entries = [PackEntry(os.urandom(32), 8 + 100 * k, 100, 250, 0)
                   for k in range(min(CHUNKS_PER_PACK, chunks - pack))]
        index.add_pack(f"{pack:032x}", entries, 100 * len(entries))
    index.close()


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended: a shared machine's load
    stretches wall time, far less the CPU a step needs."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def medians_ms(ways: dict[str, Callable[[], object]],
               repeat: int) -> dict[str, tuple[float, float]]:
    """Each way's median wall and CPU milliseconds over ``repeat`` runs, the ways taken in
    turn (a loaded machine's drift falls on all of them alike)."""
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(repeat):
        for name, way in ways.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            way()
            timings[name].append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return {name: (statistics.median(w for w, _ in values) * 1000,
                   statistics.median(c for _, c in values) * 1000)
            for name, values in timings.items()}


def index_ways(folder: Path) -> dict[str, Callable[[], object]]:
    def probed_every_time():
        assert probe_exit_code(folder, readonly=False) == 0
        ChunkIndex(folder, probe=False).close()

    def changed_since_probe():
        (folder / PROBED_FILE).unlink()
        ChunkIndex(folder).close()

    ChunkIndex(folder).close()  # the probe once, as after the last write
    return {
        "probe at every open (before)": probed_every_time,
        "unchanged since its probe (now)": lambda: ChunkIndex(folder).close(),
        "no probe (floor)": lambda: ChunkIndex(folder, probe=False).close(),
        "first open after a change (now)": changed_since_probe,
    }


def list_ways(work: Path, before: Path) -> dict[str, Callable[[], object]]:
    image, repository = work / "image", work / "repository"
    image.write_bytes(os.urandom(4 << 20))
    run = [sys.executable, "-m", "diskvault"]
    subprocess.run([*run, "init", "-r", str(repository), "--encryption", "none"], check=True,
                   capture_output=True)
    subprocess.run([*run, "backup", "-r", str(repository), str(image), "--name", "a"],
                   check=True, capture_output=True)
    now = Path(__file__).resolve().parent.parent / "src"
    compileall.compile_dir(now, quiet=1)  # as installed: bytecode written (the before's too)

    def listing(src: Path) -> Callable[[], object]:
        env = {**os.environ, "PYTHONPATH": str(src)}
        return lambda: subprocess.run([*run, "list", "-r", str(repository)], env=env,
                                      check=True, capture_output=True)

    return {"diskvault list (before)": listing(before), "diskvault list (now)": listing(now)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--before", type=Path, help="src folder of the code before")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="index-open-") as scratch:
        work = Path(scratch)
        build_index(work / "index", args.chunks)
        figures = medians_ms(index_ways(work / "index"), args.repeat)
        if args.before:
            figures |= medians_ms(list_ways(work, args.before), args.repeat)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.chunks} chunks; "
          f"median of {args.repeat}")
    print("| open | wall | CPU | CPU / before |\n|---|---|---|---|")
    for name, (wall, cpu) in figures.items():
        base = figures["diskvault list (before)" if "list" in name
                       else "probe at every open (before)"][1]
        print(f"| {name} | {wall:.1f} ms | {cpu:.1f} ms | {cpu / base:.2f} |")

if __name__ == "__main__":
    main()
