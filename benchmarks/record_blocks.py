"""What a snapshot record's block list costs, by the code in SRC: memory a block held in a
decoded record, the peak while decoding, decode and encode time, opening an image reader on
the record, and finding the block under an offset (the reader's lookup).

    .venv/bin/python -m benchmarks.record_blocks SRC [SRC...] [--blocks 50000]

Each SRC (a checkout's ``src``) runs in a child of its own, on a record of as many blocks
(a 1 TB image at 64 KiB chunks has ~50,000); compare figures from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import bisect, json, os, random, sys, tempfile, time, tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from diskvault.store.format.block_list import BlockRef
from diskvault.store.format.snapshots import BackupStats, SnapshotRecord
from diskvault.store.repository import Repository

count = int(sys.argv[1])
step = 20 << 20
refs = [BlockRef(os.urandom(32), n * step) for n in range(count)]
record = SnapshotRecord(id="0123456789abcdef", name="vm", time=datetime.now(timezone.utc),
                        source="/vm.img", size=count * step, host="h", tags=[],
                        stats=BackupStats(), blocks=refs)
del refs
data = record.to_json()
del record

def best(work, repeat=5):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1000

tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
tracemalloc.reset_peak()
record = SnapshotRecord.from_json(data, "bench")
held, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
figures = {"held_per_block": (held - before) / count, "peak_per_block": (peak - before) / count,
           "decode_ms": best(lambda: SnapshotRecord.from_json(data, "bench")),
           "encode_ms": best(lambda: record.to_json())}
assert record.to_json() == data
with tempfile.TemporaryDirectory() as folder:
    with Repository.init(os.path.join(folder, "repo"), encryption="none") as repository:
        figures["reader_open_ms"] = best(lambda: repository.open_image(record))
        reader = repository.open_image(record)
find = getattr(record.blocks, "find", None)
if find is None:  # before BlockList: the reader's own bisect over its list of starts
    starts = reader._block_starts
    find = lambda position: bisect.bisect_right(starts, position) - 1
positions = [random.randrange(record.size) for _ in range(100_000)]
def finds():
    for position in positions:
        find(position)
figures["find_ns"] = best(finds) * 1e6 / len(positions)
print(json.dumps(figures))
"""


def measure(src: str, blocks: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(blocks)], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src})
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="+")
    parser.add_argument("--blocks", type=int, default=50_000)
    arguments = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {arguments.blocks} blocks")
    for src in arguments.src:
        figures = measure(src, arguments.blocks)
        print(src, " ".join(f"{key}={value:.1f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
