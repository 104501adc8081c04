"""Time and memory of the commands that read every snapshot record -- list, prune --dry-run,
compact (nothing to do) and check -- by the code in each SRC, on one repository of many
records that each list many manifest blocks (one real block repeated, so check and compact
find every block they need).

    .venv/bin/python -m benchmarks.record_commands SRC [SRC...] [--records 100] [--blocks 20000]

Each command runs in a fresh child: wall time, the child's peak RSS once the repository is
open, and its peak RSS at the end. Building the repository takes seconds; each command a few seconds
per 100 records of 20,000 blocks. Compare figures from one run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

COMMANDS = ("list", "prune --dry-run", "compact", "check")

# The commands measured, by name, in a child's source: shared with the memory test
# (tests/maintenance/test_record_memory.py), which runs them the same way.
COMMANDS_SOURCE = r"""
from diskvault.maintenance.check.run import check
from diskvault.maintenance.compact import compact
from diskvault.maintenance.prune import prune
from diskvault.maintenance.retention import KeepPolicy
from diskvault.store.repository import Repository

COMMANDS = {
    "list": lambda repository: repository.scan_snapshots(),
    "prune --dry-run": lambda repository: prune(repository.storage, KeepPolicy(last=1),
                                                dry_run=True),
    "compact": lambda repository: compact(repository.storage),
    "check": lambda repository: check(repository.storage),
}
"""

CHILD = COMMANDS_SOURCE + r"""
import json, resource, sys, time

with Repository.open(sys.argv[1]) as repository:
    opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    COMMANDS[sys.argv[2]](repository)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "open_mib": opened / 1024, "peak_mib": peak / 1024}))
"""


def build(root: Path, records: int, blocks: int) -> None:
    from diskvault.store.format.snapshots import SnapshotRecord
    from diskvault.store.repository import Repository

    image = root.parent / "image"
    image.write_bytes(os.urandom(16 << 10))
    with Repository.init(root, encryption="none") as repository:
        first = repository.backup(image, name="vm")
        [block] = first.blocks  # 16 KiB: one manifest block
        listed = [dataclasses.replace(block, offset=n * first.size) for n in range(blocks)]
        for night in range(records):
            repository.storage.snapshots.save(dataclasses.replace(
                first, id=SnapshotRecord.new_id(), time=first.time + timedelta(days=night + 1),
                size=blocks * first.size, blocks=listed))


def measure(src: str, root: Path, command: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), command], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src})
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="+")
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=20_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "repo"
        build(root, arguments.records, arguments.blocks)
        print(f"{arguments.records} records of {arguments.blocks} blocks")
        for command in COMMANDS:
            for src in arguments.src:
                figures = measure(src, root, command)
                print(f"load {os.getloadavg()[0]:.2f}  {command:16} {src}: "
                      f"{figures['wall_s']:.2f} s, peak RSS {figures['open_mib']:.0f} MiB "
                      f"open, {figures['peak_mib']:.0f} MiB at the end")


if __name__ == "__main__":
    main()
