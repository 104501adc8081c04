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
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
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
    """radosgw's request and byte counters, and the CPU seconds of the cluster's daemons
    (radosgw, OSD, monitor), around the block, added to ``into``."""
    before, cpu_before = cluster.perf_dump()["rgw"], _daemons_cpu_s(cluster)
    started = time.perf_counter()
    yield
    into["seconds"] = round(time.perf_counter() - started, 3)
    into["server_cpu_s"] = round(_daemons_cpu_s(cluster) - cpu_before, 2)
    after = cluster.perf_dump()["rgw"]
    for name in COUNTERS:
        into[name] = after[name] - before[name]


@contextmanager
def own_cpu(into: dict):
    """This process's CPU seconds (all its threads) around the block, as ``client_cpu_s``."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    yield
    after = resource.getrusage(resource.RUSAGE_SELF)
    into["client_cpu_s"] = round(after.ru_utime - before.ru_utime
                                 + after.ru_stime - before.ru_stime, 2)


def _daemons_cpu_s(cluster) -> float:
    """User and system CPU seconds the cluster's daemons have used so far."""
    ticks = 0
    for daemon in cluster.daemons.values():
        fields = Path(f"/proc/{daemon.pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


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
        with counted(cluster, steps["put"]), own_cpu(steps["put"]):
            list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=body),
                          keys))
        with counted(cluster, steps["get"]), own_cpu(steps["get"]):
            list(pool.map(lambda key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
                          keys))
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=BUCKET, Delete={
            "Objects": [{"Key": key} for key in keys[start:start + 1000]]})
    return steps


def tool_steps(peer, cluster, load: workload.Workload, scratch: Path
               ) -> Iterator[tuple[str, dict]]:
    """init, first backup, nightly backup, restore of the last night (checked): each
    step's figures (the tool's own CPU seconds among them) as it ends."""
    peer.init()
    for night, step in ((0, "first backup"), (1, "nightly backup")):
        figures = {"bytes": load.image_size}
        with load.live(night) as image:
            drop_caches()
            with counted(cluster, figures):
                ran = peer.backup(image, night)
        yield step, dict(figures, client_cpu_s=round(ran.cpu_s, 2))
    target = scratch / f"{peer.name}-restored.img"
    target.unlink(missing_ok=True)
    drop_caches()
    figures = {"bytes": load.image_size}
    with counted(cluster, figures):
        ran = peer.restore(1, target)
    if sha256_file(target) != load.sha256(1):
        raise ToolFailed(f"{peer.name}: the restored image differs from night 1")
    target.unlink()
    yield "restore", dict(figures, client_cpu_s=round(ran.cpu_s, 2))


def run_tools(args, cluster, server, load: workload.Workload) -> dict:
    """The plain transfers, then one step of every tool in turn (first backups, then
    nightlies, then restores), so that the figures compared -- S3 and local above all --
    are measured close together, under the load of the same moment."""
    results: dict = {}
    folder = args.work / "s3"
    peers = {"restic": ResticS3(folder / "restic", server),
             "diskvault-s3": DiskvaultS3(folder / "diskvault-s3", server),
             "diskvault-local": DiskvaultLocal(folder / "diskvault-local")}
    running = {}
    for tool in args.tools:
        results[tool] = {}
        if tool == "plain":
            print("== plain", flush=True)
            results[tool] = plain_transfers(cluster, server, load.image_size)
        else:
            running[tool] = tool_steps(peers[tool], cluster, load, folder)
    while running:
        for tool, steps in list(running.items()):
            try:
                step, figures = next(steps)
            except StopIteration:
                del running[tool]
                continue
            except ToolFailed as error:
                print(f"   {tool} not measured: {error}", flush=True)
                results[tool] = {"error": str(error)}
                del running[tool]
                continue
            print(f"== {tool}: {step} {figures['seconds']:.2f} s", flush=True)
            results[tool][step] = figures
    return results


def table(results: dict) -> str:
    """One row per tool and step: seconds, MB/s, ratio to plain PUT (backups) or GET
    (restores), requests, MB sent, MB received."""
    plain = results.get("plain", {})
    limit = {kind: _rate(plain[kind]) for kind in ("put", "get") if kind in plain}
    lines = ["| tool | step | seconds | MB/s | of plain PUT/GET | requests | MB sent | "
             "MB received | CPU s, client | CPU s, Ceph |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tool, steps in results.items():
        if "error" in steps:
            lines.append(f"| {tool} | not measured: {steps['error'][:120]} |||||||||")
            continue
        for step, figures in steps.items():
            kind = "get" if step in ("get", "restore") else "put"
            ratio = f"{_rate(figures) / limit[kind]:.2f}" if kind in limit else "-"
            client_cpu = figures.get("client_cpu_s")
            lines.append(f"| {tool} | {step} | {figures['seconds']:.2f} | "
                         f"{_rate(figures):.0f} | {ratio} | {figures['req']} | "
                         f"{figures['put_b'] / 1e6:.1f} | {figures['get_b'] / 1e6:.1f} | "
                         f"{'-' if client_cpu is None else f'{client_cpu:.2f}'} | "
                         f"{figures['server_cpu_s']:.2f} |")
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
              f"as the image. Requests and bytes: radosgw's perf counters around each step; "
              f"CPU seconds: the tool's process (user + system, children included) and the "
              f"Ceph daemons'. The tools take turns step by step (every first backup, then "
              f"every nightly, then every restore), so compared figures share a moment's "
              f"load. Page cache dropped before every step. "
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
