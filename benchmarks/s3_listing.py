"""What `list`, `info` and a `copy` with nothing to copy cost on S3 as snapshots pile up:
python -m benchmarks.s3_listing [--snapshots 2,20] [--before SRC]

Starts the tests' throwaway Ceph (tests/ceph.py), makes one repository per snapshot count
(a tiny image backed up once, its record saved again under new ids) and a copy of it, then times each command and
counts its requests (the S3 backend's own counter, printed by --debug; both repositories'
for `copy`). ``--before`` names
another source tree (e.g. one made by ``git archive main src``): the same commands run with
it first, on the same cluster and repositories -- the baseline of the same run.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.ceph import running_ceph

HERE = Path(__file__).resolve().parent
OWN_SOURCE = HERE.parent / "src"
# The first snapshot's record saved again under new ids: real records, made in seconds.
MORE_RECORDS = """
import dataclasses, sys
from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.repository import Repository
with Repository.open(sys.argv[1]) as repository:
    first = repository.list_snapshots()[0]
    for _ in range(int(sys.argv[2])):
        repository.storage.snapshots.save(dataclasses.replace(first, id=SnapshotRecord.new_id()))
"""
RUNS = 3  # a warm step's time is the median of as many runs (the machine is shared)
REQUESTS_LINE = re.compile(r"requests to (\S+): (\d+) \(([^)]*)\)")


def diskvault(source: Path, env: dict, *args: str) -> tuple[float, dict[str, int]]:
    """(seconds, requests by URL) of one command run with the tree ``source``."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "diskvault", "--debug", *args],
                            capture_output=True, env={**env, "PYTHONPATH": str(source)})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"diskvault {' '.join(args)} failed: {result.stderr.decode()[-2000:]}")
    requests = {url: int(total) for url, total, _ in
                REQUESTS_LINE.findall(result.stderr.decode(errors="replace"))}
    return seconds, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", default="2,20")
    parser.add_argument("--before", type=Path, help="the source tree of the baseline")
    args = parser.parse_args()
    counts = [int(count) for count in args.snapshots.split(",")]
    trees = ([("before", args.before)] if args.before else []) + [("after", OWN_SOURCE)]
    work = Path(tempfile.mkdtemp(prefix="dv-listing-"))
    image = work / "vm.img"
    image.write_bytes(os.urandom(64 << 10))
    with running_ceph() as (_, server):
        setup = {**os.environ, **server.environ(), "XDG_CACHE_HOME": str(work / "cache-setup")}
        for count in counts:
            url, copy_url = (f"s3://{server.bucket}/{kind}-{count}" for kind in ("repo", "copy"))
            for repository in (url, copy_url):
                diskvault(OWN_SOURCE, setup, "init", "-r", repository, "--encryption", "none")
            diskvault(OWN_SOURCE, setup, "backup", "-r", url, str(image), "--name", "vm")
            subprocess.run([sys.executable, "-c", MORE_RECORDS, url, str(count - 1)], check=True,
                           env={**setup, "PYTHONPATH": str(OWN_SOURCE)})
            diskvault(OWN_SOURCE, setup, "copy", "--from", url, "--to", copy_url)
            for label, tree in trees:
                env = {**setup, "XDG_CACHE_HOME": str(work / f"cache-{label}")}
                steps = {"--version (the floor)": (RUNS, ("--version",)),
                         "list (cold cache)": (1, ("list", "-r", url)),
                         "list": (RUNS, ("list", "-r", url)),
                         "info latest": (RUNS, ("info", "-r", url, "latest")),
                         "copy, nothing to copy": (RUNS, ("copy", "--from", url,
                                                          "--to", copy_url))}
                for step, (runs, command) in steps.items():
                    measured = [diskvault(tree, env, *command) for _ in range(runs)]
                    seconds = statistics.median(seconds for seconds, _ in measured)
                    requests = sum(measured[-1][1].values())
                    print(f"{count:>5} snapshots  {label:<6}  {step:<22} {seconds:6.2f} s  "
                          f"{requests:>4} requests", flush=True)


if __name__ == "__main__":
    main()
