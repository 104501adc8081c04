"""S3 read and write paths against a local repository: python -m benchmarks.s3_paths

Starts the tests' throwaway Ceph (tests/ceph.py) and, in one run, on one ext4 image made by
``mkfs.ext4 -d`` from a real tree (default /usr/lib/python3): the physical limit -- plain
PUT and GET of as many bytes as the image, as 8 MiB objects on 8 threads with boto3 -- then
for a repository in the bucket and one in a local folder: first backup, restore, a nightly
backup (1 % of the image's 4 KiB blocks rewritten), ``du -s`` of the tree through a mount's
``<image>.files`` folder, and ``pull`` of the whole tree. Each figure is a ratio beside its
baseline in the same run: backup / plain PUT, restore / plain GET, and for the nightly, du
and pull, the S3 time over the local time. Requests come from radosgw's counters. Writes
report.md and results.json to benchmarks/results/s3-paths/.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from tests.ceph import running_ceph

from .measure import drop_caches
from .mounts import unmount, wait_for_path
from .s3 import BUCKET, counted, plain_transfers

HERE = Path(__file__).resolve().parent
DEFAULT_TREE = Path("/usr/lib/python3")
DEFAULT_IMAGE_MIB = 256
NIGHTLY_CHANGED = 0.01  # of the image's 4 KiB blocks, rewritten at random
BLOCK = 4096
REPOSITORIES = ("local", "s3")


def build_image(tree: Path, image_mib: int, work: Path) -> Path:
    """ext4 with ``tree`` copied in (made once, reused while the parameters match)."""
    image = work / f"fs-{tree.name}-{image_mib}M.img"
    if not image.exists():
        work.mkdir(parents=True, exist_ok=True)
        partial = image.with_suffix(".partial")
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-d", str(tree),
                        str(partial), f"{image_mib}M"], check=True)
        partial.rename(image)
    return image


def nightly_image(image: Path, work: Path, seed: int) -> Path:
    """A copy of ``image`` with NIGHTLY_CHANGED of its blocks rewritten in place."""
    night = work / "night1.img"
    shutil.copyfile(image, night)
    rng = random.Random(seed)
    blocks = image.stat().st_size // BLOCK
    with open(night, "r+b") as changed:
        for block in rng.sample(range(blocks), int(blocks * NIGHTLY_CHANGED)):
            changed.seek(block * BLOCK)
            changed.write(rng.randbytes(BLOCK))
    return night


class Repo:
    """One repository driven through the command line, as a user runs it."""

    def __init__(self, kind: str, work: Path, server):
        self.kind = kind
        self.folder = work / kind
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.url = f"s3://{BUCKET}/{kind}-{os.getpid()}" if kind == "s3" \
            else str(self.folder / "repo")
        self.env = dict(os.environ, XDG_CACHE_HOME=str(self.folder / "cache"),
                        **(server.environ() if kind == "s3" else {}))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "diskvault", *args], env=self.env,
                              check=True, capture_output=True, text=True)

    def backup(self, image: Path) -> str:
        out = self.run("backup", "-r", self.url, str(image), "--name", "fs", "--no-progress",
                       "--json")
        return json.loads(out.stdout)["id"]


def measure_repository(repo: Repo, cluster, image: Path, night: Path, work: Path) -> dict:
    steps: dict = {}
    size = image.stat().st_size
    repo.run("init", "-r", repo.url, "--encryption", "none")

    def step(name: str, action, data_bytes: int = size) -> None:
        drop_caches()
        with counted(cluster, steps.setdefault(name, {"bytes": data_bytes})):
            action()
        print(f"   {repo.kind} {name}: {steps[name]['seconds']:.2f} s, "
              f"{steps[name]['req']} requests", flush=True)

    ids = {}
    step("first backup", lambda: ids.setdefault(0, repo.backup(image)))
    target = work / f"restored-{repo.kind}.img"
    target.unlink(missing_ok=True)
    step("restore", lambda: repo.run("restore", "-r", repo.url, ids[0], str(target)))
    if not filecmp.cmp(image, target, shallow=False):
        raise SystemExit(f"{repo.kind}: the restored image differs from {image}")
    target.unlink()
    step("nightly backup", lambda: ids.setdefault(1, repo.backup(night)))

    mountpoint = work / f"mnt-{repo.kind}"
    mountpoint.mkdir(exist_ok=True)
    repo.run("mount", "-r", repo.url, str(mountpoint), ids[0])
    try:
        files = mountpoint / f"{image.name}.files"
        wait_for_path(files, 60)
        du: dict = {}
        step("du -s", lambda: du.setdefault("out", subprocess.run(
            ["du", "-s", "--apparent-size", "-B1", str(files)], check=True,
            capture_output=True, text=True).stdout.split()[0]))
        steps["du -s"]["tree_bytes"] = int(du["out"])
    finally:
        repo.run("umount", str(mountpoint))
        unmount(mountpoint, fuse=True)
    pulled = work / f"pulled-{repo.kind}"
    shutil.rmtree(pulled, ignore_errors=True)
    step("pull", lambda: repo.run("pull", "-r", repo.url, ids[0], "/", str(pulled)),
         data_bytes=steps["du -s"]["tree_bytes"])
    shutil.rmtree(pulled)
    return steps


def rate(figures: dict) -> float:
    return figures["bytes"] / 1e6 / max(figures["seconds"], 1e-9)


def table(results: dict) -> str:
    plain, local = results["plain"], results["local"]
    lines = ["| step | S3 s | local s | S3 / local time | S3 MB/s | S3 of plain PUT/GET | "
             "S3 requests |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s3 in results["s3"].items():
        kind = {"first backup": "put", "restore": "get"}.get(name)
        of_plain = f"{rate(s3) / rate(plain[kind]):.2f}" if kind else "-"
        lines.append(f"| {name} | {s3['seconds']:.2f} | {local[name]['seconds']:.2f} | "
                     f"{s3['seconds'] / max(local[name]['seconds'], 1e-9):.2f} | "
                     f"{rate(s3):.0f} | {of_plain} | {s3['req']} |")
    for kind in ("put", "get"):
        lines.append(f"| plain {kind.upper()} (8 threads, 8 MiB objects) | "
                     f"{plain[kind]['seconds']:.2f} | | | {rate(plain[kind]):.0f} | 1.00 | "
                     f"{plain[kind]['req']} |")
    return "\n".join(lines)


def write_results(args, results: dict, image: Path, load: tuple) -> Path:
    folder = args.results / "s3-paths"
    folder.mkdir(parents=True, exist_ok=True)
    report = (f"# S3 paths on a Ceph radosgw (memstore OSD, 127.0.0.1) beside a local "
              f"repository\n\nImage: ext4 of {image.stat().st_size >> 20} MiB made by "
              f"mkfs.ext4 -d from {args.tree} "
              f"({results['s3']['du -s']['tree_bytes'] / 1e6:.0f} MB of files); nightly: "
              f"{NIGHTLY_CHANGED:.0%} of its 4 KiB blocks rewritten. Page cache dropped "
              f"before every step. Load average before / after: "
              f"{load[0]:.2f} / {load[1]:.2f} (2 cores, shared).\n\n{table(results)}\n")
    (folder / "report.md").write_text(report)
    (folder / "results.json").write_text(json.dumps(dict(results, load=load), indent=2) + "\n")
    print(report, flush=True)
    return folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_paths",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--tree", type=Path, default=DEFAULT_TREE)
    parser.add_argument("--image-mib", type=int, default=DEFAULT_IMAGE_MIB)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "s3-paths")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    image = build_image(args.tree, args.image_mib, args.work)
    night = nightly_image(image, args.work, args.seed)
    load_before = os.getloadavg()[0]
    size = image.stat().st_size
    with running_ceph(BUCKET, memstore_bytes=(1 << 30) + 6 * size) as (cluster, server):
        results = {"plain": plain_transfers(cluster, server, size)}
        for kind in REPOSITORIES:
            print(f"== {kind}", flush=True)
            results[kind] = measure_repository(Repo(kind, args.work, server), cluster,
                                               image, night, args.work)
    night.unlink()
    print(f"written to {write_results(args, results, image, (load_before, os.getloadavg()[0]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
