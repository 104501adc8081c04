"""Startup: how soon diskvault answers, beside borg and restic, in one run.

    python -m benchmarks.startup [--repeat 5] [--work DIR]

Each tool gets a small repository holding one backup of the same 8 MiB image. Measured,
best of ``--repeat`` each, warm caches and bytecode caches written (as installed): ``python3
-c pass`` and this interpreter's ``-c pass`` (the floor of any Python program), the tool's help (``diskvault --help``, ``borg --help``, ``restic version``), its
snapshot listing, its mount until the image file in it can be opened, and the first read
of 1 MiB of that image (counted from the start of the mount). Needs root for the mounts.
The diskvault measured is the one that ``python -m diskvault`` imports (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .peers.borg import Borg
from .peers.diskvault import Diskvault
from .peers.restic import Restic

IMAGE_BYTES = 8 << 20
FIRST_READ_BYTES = 1 << 20
ROWS = ("help", "list", "mount", "mount + first read")


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_mount(peer, mountpoint: Path) -> tuple[float, float]:
    """Seconds until the image in the mount opens, and until its first 1 MiB is read."""
    start = time.perf_counter()
    image = peer.mount(mountpoint, 0)
    with open(image, "rb") as stream:
        ready = time.perf_counter() - start
        stream.read(FIRST_READ_BYTES)
        first_read = time.perf_counter() - start
    peer.umount(mountpoint)
    return ready, first_read


@dataclass
class Tool:
    peer: object
    help: list[str]
    listing: list[str]


def tools(work: Path) -> list[Tool]:
    diskvault, borg, restic = (Diskvault(work / "diskvault"), Borg(work / "borg"),
                               Restic(work / "restic"))
    return [Tool(diskvault, ["diskvault", "--help"], ["diskvault", "list", "-r",
                                                      str(diskvault.repo)]),
            Tool(borg, ["borg", "--help"], ["borg", "list", str(borg.repo)]),
            Tool(restic, ["restic", "version"], ["restic", "snapshots"])]


def measure(tool: Tool, work: Path, repeat: int) -> dict[str, float]:
    env = tool.peer.env()
    mountpoint = work / f"mnt-{tool.peer.name}"
    mounts = [timed_mount(tool.peer, mountpoint) for _ in range(repeat)]
    return {"help": min(timed(tool.help, env) for _ in range(repeat)),
            "list": min(timed(tool.listing, env) for _ in range(repeat)),
            "mount": min(ready for ready, _ in mounts),
            "mount + first read": min(first for _, first in mounts)}


def report(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    lines = ["| step | " + " | ".join(names) + " | diskvault / best peer |",
             "|---|" + "---|" * (len(names) + 1)]
    for row in ROWS:
        figures = [results[name][row] for name in names]
        best_peer = min(results[name][row] for name in names if name != "diskvault")
        lines.append(f"| {row} | " + " | ".join(f"{1000 * s:.0f} ms" for s in figures)
                     + f" | {results['diskvault'][row] / best_peer:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/startup"))
    options = parser.parse_args()
    work = options.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    image = work / "image.img"
    image.write_bytes(os.urandom(IMAGE_BYTES))
    # The `diskvault` beside this interpreter, running the code this interpreter imports,
    # from bytecode caches as an installed copy does (the first run of each writes them).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    results = {}
    for tool in tools(work):
        tool.peer.init()
        tool.peer.backup(image, 0)
        results[tool.peer.name] = measure(tool, work, options.repeat)
    floors = {" ".join(argv): min(timed(argv, dict(os.environ)) for _ in range(options.repeat))
              for argv in (["python3", "-c", "pass"], [sys.executable, "-c", "pass"])}
    print(f"best of {options.repeat}, warm caches, one 8 MiB image per repository; in the "
          f"same run: " + ", ".join(f"`{argv}` {1000 * s:.0f} ms" for argv, s in floors.items())
          + "\n")
    print(report(results))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
