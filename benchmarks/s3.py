"""Object-store benchmark: python -m benchmarks.s3 [--size 512M] [--tools ...]

Starts the tests' throwaway Ceph (tests/ceph.py: one mon, one memstore OSD, radosgw on
127.0.0.1) and measures against it, in one run: the physical limit -- plain parallel PUT and
GET of 8 MiB objects with boto3, as much data as the image -- then, for restic (its s3
backend) and diskvault (-r s3://bucket/prefix), a first backup of the vm-image workload's
night 0, a nightly backup of night 1 (1 % of its 4 KiB blocks rewritten) and a restore of
night 1; and the same diskvault steps on a local repository, the baseline of the goal
"nightly to S3 within 1.3x of local". Requests and bytes come from radosgw's own counters
(``perf dump``: rgw.req, put, get, put_b, get_b) read before and after every step, so each
tool is counted the same way. Writes report.md and results.json to benchmarks/results/s3/
(default size) or benchmarks/results/custom/s3-<size>M/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tests.ceph import running_ceph

from . import workload
from .measure import ToolFailed, drop_caches, sha256_file
from .peers.diskvault import Diskvault
from .peers.restic import Restic
from .run import parse_size

HERE = Path(__file__).resolve().parent
BUCKET = "dv-bench"
OBJECT_BYTES = 8 << 20
THREADS = 8
DEFAULT_SIZE = 512 << 20
TOOLS = ["plain", "restic", "diskvault-s3", "diskvault-local"]
COUNTERS = ("req", "put", "get", "put_b", "get_b")
MEMSTORE_BASE_BYTES = 1 << 30  # the OSD's memory besides six times the image


class ResticS3(Restic):
    """restic's s3 backend on the benchmark's bucket."""

    name = "restic"

    def __init__(self, folder: Path, server):
        super().__init__(folder)
        self.server = server

    def env(self) -> dict:
        return dict(super().env(), **self.server.environ(),
                    RESTIC_REPOSITORY=f"s3:{self.server.endpoint}/{BUCKET}/restic")


class DiskvaultS3(Diskvault):
    """diskvault with ``-r s3://bucket/diskvault`` (the repository argument is a URL)."""

    name = "diskvault-s3"

    def __init__(self, folder: Path, server):
        super().__init__(folder)
        self.server = server
        self.repo = f"s3://{BUCKET}/diskvault"  # a URL: str() of it is what -r gets

    def env(self) -> dict:
        return dict(super().env(), **self.server.environ(),
                    XDG_CACHE_HOME=str(self.folder / "cache"))


class DiskvaultLocal(Diskvault):
    name = "diskvault-local"


@contextmanager
def counted(cluster, into: dict):
    """radosgw's request and byte counters around the block, added to ``into``."""
    before = cluster.perf_dump()["rgw"]
    started = time.perf_counter()
    yield
    into["seconds"] = round(time.perf_counter() - started, 3)
    after = cluster.perf_dump()["rgw"]
    for name in COUNTERS:
        into[name] = after[name] - before[name]


def plain_transfers(cluster, server, size: int) -> dict:
    """PUT then GET ``size`` bytes as 8 MiB objects on THREADS threads, then delete them."""
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint,
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")
    body = os.urandom(OBJECT_BYTES)  # incompressible; radosgw does not compress anyway
    keys = [f"plain/{number:05d}" for number in range(max(1, size // OBJECT_BYTES))]
    steps = {"put": {"bytes": len(keys) * OBJECT_BYTES},
             "get": {"bytes": len(keys) * OBJECT_BYTES}}
    with ThreadPoolExecutor(THREADS) as pool:
        with counted(cluster, steps["put"]):
            list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=body),
                          keys))
        with counted(cluster, steps["get"]):
            list(pool.map(lambda key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
                          keys))
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=BUCKET, Delete={
            "Objects": [{"Key": key} for key in keys[start:start + 1000]]})
    return steps


def tool_steps(peer, cluster, load: workload.Workload, scratch: Path) -> dict:
    """init, first backup, nightly backup, restore of the last night (checked)."""
    steps: dict = {}
    peer.init()
    for night, step in ((0, "first backup"), (1, "nightly backup")):
        with load.live(night) as image:
            drop_caches()
            with counted(cluster, steps.setdefault(step, {"bytes": load.image_size})):
                peer.backup(image, night)
    target = scratch / f"{peer.name}-restored.img"
    target.unlink(missing_ok=True)
    drop_caches()
    with counted(cluster, steps.setdefault("restore", {"bytes": load.image_size})):
        peer.restore(1, target)
    if sha256_file(target) != load.sha256(1):
        raise ToolFailed(f"{peer.name}: the restored image differs from night 1")
    target.unlink()
    return steps


def run_tools(args, cluster, server, load: workload.Workload) -> dict:
    results: dict = {}
    folder = args.work / "s3"
    peers = {"restic": ResticS3(folder / "restic", server),
             "diskvault-s3": DiskvaultS3(folder / "diskvault-s3", server),
             "diskvault-local": DiskvaultLocal(folder / "diskvault-local")}
    for tool in args.tools:
        print(f"== {tool}", flush=True)
        try:
            if tool == "plain":
                results[tool] = plain_transfers(cluster, server, load.image_size)
            else:
                results[tool] = tool_steps(peers[tool], cluster, load, folder)
        except ToolFailed as error:
            print(f"   {tool} not measured: {error}", flush=True)
            results[tool] = {"error": str(error)}
    return results


def table(results: dict) -> str:
    """One row per tool and step: seconds, MB/s, ratio to plain PUT (backups) or GET
    (restores), requests, MB sent, MB received."""
    plain = results.get("plain", {})
    limit = {kind: _rate(plain[kind]) for kind in ("put", "get") if kind in plain}
    lines = ["| tool | step | seconds | MB/s | of plain PUT/GET | requests | MB sent | "
             "MB received |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for tool, steps in results.items():
        if "error" in steps:
            lines.append(f"| {tool} | not measured: {steps['error'][:120]} |||||||")
            continue
        for step, figures in steps.items():
            kind = "get" if step in ("get", "restore") else "put"
            ratio = f"{_rate(figures) / limit[kind]:.2f}" if kind in limit else "-"
            lines.append(f"| {tool} | {step} | {figures['seconds']:.2f} | "
                         f"{_rate(figures):.0f} | {ratio} | {figures['req']} | "
                         f"{figures['put_b'] / 1e6:.1f} | {figures['get_b'] / 1e6:.1f} |")
    return "\n".join(lines)


def _rate(figures: dict) -> float:
    return figures["bytes"] / 1e6 / max(figures["seconds"], 1e-9)


def nightly_goal(results: dict) -> str:
    s3, local = results.get("diskvault-s3", {}), results.get("diskvault-local", {})
    if "nightly backup" not in s3 or "nightly backup" not in local:
        return "nightly S3/local: not measured (both diskvault runs are needed)"
    ratio = s3["nightly backup"]["seconds"] / local["nightly backup"]["seconds"]
    return f"nightly backup to S3 / to a local repository: {ratio:.2f}x (goal: 1.3x or less)"


def write_results(args, results: dict, load: workload.Workload) -> Path:
    folder = args.results / "s3" if args.size == DEFAULT_SIZE \
        else args.results / "custom" / f"s3-{args.size >> 20}M"
    folder.mkdir(parents=True, exist_ok=True)
    report = (f"# diskvault and restic on a Ceph radosgw (memstore OSD, 127.0.0.1)\n\n"
              f"Workload: vm-image, {load.image_size >> 20} MiB, night 0 then night 1; "
              f"plain: {THREADS} threads of {OBJECT_BYTES >> 20} MiB objects, as many bytes "
              f"as the image. Requests and bytes: radosgw's perf counters around each step. "
              f"Page cache dropped before every step. "
              f"{Restic(args.work).version() + '. ' if 'restic' in results else ''}"
              f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f} (2 cores, shared)."
              f"\n\n"
              f"{table(results)}\n\n"
              f"{nightly_goal(results)}\n")
    (folder / "report.md").write_text(report)
    (folder / "results.json").write_text(json.dumps(dict(results, load=os.getloadavg()[0]),
                                                    indent=2) + "\n")
    print(report, flush=True)
    return folder


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE,
                        help="image size, e.g. 512M (the default)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    if not args.tools or set(args.tools) - set(TOOLS):
        parser.error(f"--tools: choose from {','.join(TOOLS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # the diskvault measured is the one beside this interpreter, as in benchmarks.run
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    load = workload.prepare("vm-image", args.size, 1, args.seed, args.work)
    # plain's deleted objects wait for radosgw's GC (60 s): room for every tool's data
    with running_ceph(BUCKET, memstore_bytes=MEMSTORE_BASE_BYTES + 6 * args.size) \
            as (cluster, server):
        results = run_tools(args, cluster, server, load)
    print(f"written to {write_results(args, results, load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
