"""NBD export benchmark: a snapshot read through `diskvault serve` against `diskvault cat`.

    python -m benchmarks.serve_bench [--size-mib 512] [--repeat 3] [--workdir DIR]

Builds an image of 4 MiB blocks (random, text-like, and every eighth a hole), backs it up
once, then measures, each run with a fresh process (page cache warm: the packs were just
written): a full sequential read with `nbdcopy URI /dev/null` (which skips the holes the
export reports) and `nbdcopy URI -` into a pipe (every byte, as cat writes them), against
`diskvault cat > /dev/null`; and time to first byte: `serve` started until a `qemu-io` read of
the first 4 KiB returned, against `cat` started until its first 4 KiB arrived. Prints every
run, the best, and the ratios of the bests (docs/instant-recovery.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
BLOCK = 4 * MIB


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    image, repo = work / "image.img", work / "repo"
    write_image(image, options.size_mib * MIB)
    subprocess.run(diskvault("init", "-r", str(repo), "--encryption", "none"), check=True,
                   capture_output=True)
    subprocess.run(diskvault("backup", "-r", str(repo), str(image), "--name", "vm",
                             "--no-progress"), check=True, capture_output=True)
    best = {}
    for name, measure in measures(repo).items():
        runs = [measure() for _ in range(options.repeat)]
        best[name] = min(runs)
        print(f"{name:24} {' '.join(f'{r:.2f}' for r in runs)} s   best {best[name]:.2f} s")
    print(f"speed, nbdcopy /dev/null vs cat: {best['cat'] / best['nbdcopy /dev/null']:.2f}x; "
          f"every byte: {best['cat'] / best['nbdcopy - (every byte)']:.2f}x; first byte, "
          f"serve / cat: {best['serve: first 4 KiB'] / best['cat: first 4 KiB']:.2f}x")


if __name__ == "__main__":
    main()
