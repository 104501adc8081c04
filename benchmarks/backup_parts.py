"""Where a whole-image backup's CPU goes, per chunk, as the chunk count grows.

    python -m benchmarks.backup_parts [--chunks 100000,1000000] [--workdir DIR]

The image and repository of benchmarks/scale.py's chunks series (N random chunks of 256 B in
packs of 256 KiB), backed up in this process through the facade, with the thread CPU time
spent inside the index lookups (``are_indexed``), the index commits (``add_pack`` or
``add_packs``, whichever this checkout's backup calls), compression and the sealing of
packs (write, fsync, rename) added up on whatever thread they ran; "total" is the process's
user + system time, and "device" the bytes it sent to the disk (/proc/self/io). Run it from
the checkout to measure (its src/ is imported): comparing a part's CPU per chunk at two sizes
names the part that grows.
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

from .scale import (HERE, SEED, SMALL_CHUNK, SMALL_PACK_BYTES, SOURCE, init, load_average,
                    set_pack_target, sizes, write_random)

PARTS = (("index.chunk_index", "ChunkIndex", "are_indexed", "index lookups"),
         ("index.chunk_index", "ChunkIndex", "add_pack", "index commits"),
         ("index.chunk_index", "ChunkIndex", "add_packs", "index commits"),
         ("format.codec", "Codec", "compress", "compression"),
         ("format.packs", "PackWriter", "finish", "pack sealing"))


class PartClock:
    """Thread CPU time and calls inside each wrapped method, from every thread."""

    def __init__(self):
        self.cpu_s: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._inside = threading.local()  # a wrapped method calling another counts once

    def wrap(self, owner: type, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if getattr(self._inside, "part", None):
                return original(*args, **kwargs)
            self._inside.part, started = part, time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self._inside.part = None
                with self._lock:
                    self.cpu_s[part] += time.thread_time() - started
                    self.calls[part] += 1
        setattr(owner, name, timed)


def device_bytes_written() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["write_bytes"])


def measure(count: int, work: Path) -> None:
    from diskvault.store.repository import Repository

    repo, image = work / "repo", work / "big.img"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_random(image, count * SMALL_CHUNK, random.Random(SEED))
    init(repo, "--chunk-size", SMALL_CHUNK)
    set_pack_target(repo, SMALL_PACK_BYTES)
    clock = PartClock()
    for module, owner, name, part in PARTS:
        cls = getattr(__import__(f"diskvault.store.{module}", fromlist=[owner]), owner)
        if hasattr(cls, name):
            clock.wrap(cls, name, part)
    load_before, usage, written = load_average(), resource.getrusage(resource.RUSAGE_SELF), \
        device_bytes_written()
    with Repository.open(repo, writer=True) as repository:
        stats = repository.backup(image, name="big").stats
    after = resource.getrusage(resource.RUSAGE_SELF)
    chunks = stats.new_chunks
    user_s, system_s = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    print(f"{chunks:,} chunks (load average {load_before} -> {load_average()}): total "
          f"{(user_s + system_s) / chunks * 1e6:.1f} us/chunk (user {user_s / chunks * 1e6:.1f}, "
          f"system {system_s / chunks * 1e6:.1f}), device "
          f"{(device_bytes_written() - written) / chunks / 1024:.1f} KiB/chunk, index "
          f"{sum(f.stat().st_size for f in (repo / 'index').iterdir()) / chunks:.0f} B/chunk",
          flush=True)
    for part, cpu_s in clock.cpu_s.items():
        print(f"  {part:15} {cpu_s / chunks * 1e6:6.2f} us/chunk  ({clock.calls[part]} calls)",
              flush=True)
    shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=sizes, default=[10**5, 10**6])
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "backup-parts")
    args = parser.parse_args()
    sys.path.insert(0, str(SOURCE))
    for count in args.chunks:
        measure(count, args.workdir)


if __name__ == "__main__":
    main()
