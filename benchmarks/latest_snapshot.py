"""Finding a series' newest snapshot: every record read (before) against this host's
catalogue (now), in one run.

    python -m benchmarks.latest_snapshot --before SRC [--snapshots 1000] [--repeat 7]

One local repository holds ``--snapshots`` snapshots of a small image in two series. Timed
alternately, median of ``--repeat``, CPU of a fresh process (a loaded machine stretches
wall time, far less CPU): ``Repository.find_snapshot("vm1")`` by the code in SRC (a
checkout's ``src`` folder, the code before) and by this checkout's, its catalogue warm.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

NOW = Path(__file__).resolve().parent.parent / "src"
FIND = ("import resource, sys\n"
        "from diskvault.store.backends.location import parse_location\n"
        "from diskvault.store.repository import Repository\n"
        "with Repository.open(parse_location(sys.argv[1])) as repository:\n"
        "    repository.find_snapshot('vm1')\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(usage.ru_utime + usage.ru_stime)\n")


def build(repository: Path, snapshots: int) -> None:
    from diskvault.store.repository import Repository

    image = repository.parent / "image"
    with Repository.init(repository, encryption="none") as created:
        for night in range(snapshots):
            image.write_bytes(os.urandom(4096) + night.to_bytes(8, "little"))
            created.backup(image, name=f"vm{night % 2 + 1}")


def cpu_ms(src: Path, repository: Path) -> float:
    done = subprocess.run([sys.executable, "-c", FIND, str(repository)], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(src)})
    return float(done.stdout) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src folder of the code before")
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    compileall.compile_dir(NOW, quiet=1)
    with tempfile.TemporaryDirectory(prefix="latest-") as scratch, \
            tempfile.TemporaryDirectory(prefix="latest-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        os.environ["XDG_STATE_HOME"] = cache
        repository = Path(scratch) / "repository"
        build(repository, args.snapshots)
        cpu_ms(NOW, repository)  # the catalogue warmed, as by the backup before
        timings: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(args.repeat):
            timings["before"].append(cpu_ms(args.before, repository))
            timings["now"].append(cpu_ms(NOW, repository))
    before, now = (statistics.median(timings[k]) for k in ("before", "now"))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.snapshots} snapshots; median of "
          f"{args.repeat}, CPU of the whole process")
    print(f"| find_snapshot('vm1') | before {before:.0f} ms | now {now:.0f} ms | "
          f"{now / before:.2f} |")


if __name__ == "__main__":
    main()
