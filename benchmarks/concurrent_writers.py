"""Backups side by side: python -m benchmarks.concurrent_writers [--size 16M] [--writers 1,2,4,8]

N hosts (N processes here) back up into one repository at once -- a local folder, and a
bucket prefix on the tests' throwaway radosgw (tests/ceph.py) -- a first backup of N images
(half of each shared by all: the same operating system; half its own), then a nightly (1 %
of each image's 4 KiB blocks rewritten). For each N the wall time until the last backup
ends, against N = 1 in the same run: with one writer at a time it would grow as N; side by
side it grows only as fast as the machine (or the gateway) runs out. The load average
before and after each step is written beside the figures: the machine is shared. Writes
report.md and results.json to benchmarks/results/concurrent-writers/.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from tests.ceph import running_ceph

from .run import parse_size

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "concurrent-writers"
BLOCK_BYTES = 4096
CHANGED_FRACTION = 0.01


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    shared = random.Random(0).randbytes(size // 2)
    images = []
    for host in range(count):
        image = folder / f"host{host}.img"
        image.write_bytes(shared + random.Random(host + 1).randbytes(size - size // 2))
        images.append(image)
    return images


def change_blocks(image: Path, seed: int) -> None:
    rng = random.Random(seed)
    blocks = image.stat().st_size // BLOCK_BYTES
    with open(image, "r+b") as handle:
        for block in rng.sample(range(blocks), max(1, int(blocks * CHANGED_FRACTION))):
            handle.seek(block * BLOCK_BYTES)
            handle.write(rng.randbytes(BLOCK_BYTES))


def diskvault(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diskvault", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def backups_at_once(location: str, images: list[Path], env: dict) -> dict:
    """Wall time of N backups started together, and the load around them."""
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    running = [diskvault("backup", "-r", location, str(image), "--name", image.stem, env=env)
               for image in images]
    for process in running:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a backup failed: {stderr.decode()}")
    return {"seconds": round(time.monotonic() - started, 3),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def measure(location_for, writers: list[int], size: int, folder: Path, env: dict) -> dict:
    results = {}
    for count in writers:
        location = location_for(count)
        init = subprocess.run([sys.executable, "-m", "diskvault", "init", "-r", location,
                               "--encryption", "none"], env=env, capture_output=True)
        if init.returncode != 0:
            raise SystemExit(f"init failed: {init.stderr.decode()}")
        images = make_images(folder, count, size)
        first = backups_at_once(location, images, env)
        for seed, image in enumerate(images):
            change_blocks(image, seed)
        nightly = backups_at_once(location, images, env)
        results[count] = {"first": first, "nightly": nightly}
        print(f"{location}: {count} writers: first {first['seconds']} s, nightly "
              f"{nightly['seconds']} s", flush=True)
    return results


def report(results: dict, size: int) -> str:
    lines = ["# Backups side by side", "",
             f"Each writer backs up its own {size >> 20} MiB image (half shared by all) into "
             f"one repository at once; 'x N=1' is the wall time against one writer's in the "
             f"same run (one writer at a time would make it N). Nightly: 1 % of 4 KiB blocks "
             f"rewritten. Load: 1-minute load average before/after, on a shared 2-core "
             f"machine.", "",
             "| target | writers | first (s) | x N=1 | nightly (s) | x N=1 | load |",
             "|---|---|---|---|---|---|---|"]
    for target, by_count in results.items():
        base = by_count[min(by_count)]
        for count, step in by_count.items():
            first, nightly = step["first"], step["nightly"]
            lines.append(
                f"| {target} | {count} | {first['seconds']:.2f} | "
                f"{first['seconds'] / base['first']['seconds']:.2f} | "
                f"{nightly['seconds']:.2f} | "
                f"{nightly['seconds'] / base['nightly']['seconds']:.2f} | "
                f"{first['load_before']:.1f}/{nightly['load_after']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=16 << 20)
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--targets", default="local,s3")
    arguments = parser.parse_args()
    writers = [int(n) for n in arguments.writers.split(",")]
    targets = arguments.targets.split(",")
    results = {}
    with TemporaryDirectory(prefix="dv-writers-") as scratch:
        folder = Path(scratch)
        env = {**os.environ, "XDG_CACHE_HOME": str(folder / "cache"),
               "XDG_STATE_HOME": str(folder / "state")}
        if "local" in targets:
            results["local"] = measure(lambda n: str(folder / f"repo-{n}"), writers,
                                       arguments.size, folder, env)
        if "s3" in targets:
            with running_ceph(bucket="dv-writers") as (_, server):
                s3_env = {**env, **server.environ()}
                results["radosgw"] = measure(
                    lambda n: f"s3://{server.bucket}/writers-{n}", writers, arguments.size,
                    folder, s3_env)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(
        {"size": arguments.size, "results": results}, indent=2) + "\n")
    (RESULTS / "report.md").write_text(report(results, arguments.size))
    print(report(results, arguments.size))


if __name__ == "__main__":
    main()
