"""Nightly backup of a QEMU disk with its dirty bitmap, against a full read of the same disk
and against borg and restic reading the image file, in one run.

    .venv/bin/python -m benchmarks.dirty_bitmap_nightly [--size 1G] [--changed 1] [--repeat 3]

The disk is a qcow2 (micro.mixed_pieces' image, converted) with a persistent dirty bitmap,
served by qemu-storage-daemon. Each night rewrites ``--changed`` percent of it in 64 KiB
blocks (QEMU's default bitmap granularity) at random places, written by qemu-io into the
qcow2 (the bitmap records them) and into a raw copy of the same disk. Then, timed:

- diskvault with the bitmap: ``backup 'qmp+unix:///SOCKET?drive=NODE' --dirty-bitmap B``
  (the point-in-time view with the bitmap's rotation in its instant, read what the bitmap
  marks, rotate it);
- diskvault reading the whole disk through QEMU (``backup disk.qcow2``, qemu-nbd), guided by
  the previous night like any nightly;
- borg and restic backing up the raw image file, each into a repository holding the night
  before. They read the file as it is: not a point in time if a guest were writing it.

The baseline is reading the raw image from the page cache. Night 0 (every tool's first,
full backup) is not timed. Best of ``--repeat`` nights (by wall time; diskvault's rows also
give the record's own duration, which leaves out the process's start: Python's imports are
a fixed cost that a loaded machine makes large); each row also as a ratio against the
bitmap's wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .change_map import read_file, timed
from .measure import run_measured
from .micro import make_image, parse_size
from .peers.borg import Borg
from .peers.restic import Restic

BLOCK_BYTES = 64 * 1024
NODE = "disk"
START_WAIT_S = 30.0


class Daemon:
    """qemu-storage-daemon serving the qcow2 as node NODE, QMP monitor only."""

    def __init__(self, disk: Path, folder: Path):
        self.disk, self.qmp = disk, folder / "qmp.sock"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.qmp.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["qemu-storage-daemon",
             "--blockdev", f"driver=file,node-name=file,filename={self.disk}",
             "--blockdev", f"driver=qcow2,node-name={NODE},file=file",
             "--chardev", f"socket,id=monitor,path={self.qmp},server=on,wait=off",
             "--monitor", "chardev=monitor"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_WAIT_S
        while not self.qmp.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qemu-storage-daemon did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


def rewrite(disk: Path, raw: Path, size: int, percent: float, seed: int, work: Path) -> None:
    """The same random 64 KiB blocks rewritten in the qcow2 (through QEMU, so that its
    bitmap records them; the daemon must be stopped) and in the raw copy."""
    rng = random.Random(seed)
    blocks = rng.sample(range(size // BLOCK_BYTES), max(1, int(size // BLOCK_BYTES * percent / 100)))
    folder = work / "blocks"
    folder.mkdir(exist_ok=True)
    commands = []
    with open(raw, "r+b") as handle:
        for index, block in enumerate(blocks):
            data = rng.randbytes(BLOCK_BYTES)
            (folder / str(index)).write_bytes(data)
            handle.seek(block * BLOCK_BYTES)
            handle.write(data)
            commands += ["-c", f"write -s {folder / str(index)} {block * BLOCK_BYTES} "
                               f"{BLOCK_BYTES}"]
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(disk)], check=True,
                   capture_output=True)
    shutil.rmtree(folder)


def diskvault(repo: Path, *args: str) -> tuple[float, float | None, int]:
    """Wall seconds, the record's own seconds and bytes read of one `diskvault backup`."""
    stats = run_measured([sys.executable, "-m", "diskvault", "backup", "-r", str(repo),
                          "--json", *args])
    record = json.loads(stats.stdout)["stats"]
    return stats.wall_s, record["duration_s"], record["bytes_read"]


Row = tuple[str, float, float | None, int]  # label, wall s, in-process s, bytes read


def run(size: int, percent: float, repeat: int, work: Path) -> list[Row]:
    raw, disk = work / "disk.raw", work / "disk.qcow2"
    make_image(raw, size)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)],
                   check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", "--enable", str(disk), "B"], check=True)
    repo = work / "repo"
    subprocess.run([sys.executable, "-m", "diskvault", "init", "-r", str(repo),
                    "--encryption", "none"], check=True, capture_output=True)
    peers = [Borg(work / "borg"), Restic(work / "restic")]
    daemon = Daemon(disk, work)
    bitmap_args = [f"qmp+unix://{daemon.qmp}?drive={NODE}", "--name", "bitmap",
                   "--dirty-bitmap", "B"]
    labels = ("diskvault, dirty bitmap (QMP point-in-time view)",
              "diskvault, full read of the same disk (qemu-nbd)",
              "borg, image file (not point in time)",
              "restic, image file (not point in time)")
    best: dict[str, tuple[float, float | None, int]] = {}
    try:
        daemon.start()
        diskvault(repo, *bitmap_args)
        daemon.stop()
        diskvault(repo, str(disk), "--name", "full")
        for peer in peers:
            peer.init()
            peer.backup(raw, 0)
        for night in range(1, repeat + 1):
            rewrite(disk, raw, size, percent, night, work)
            daemon.start()
            results = [diskvault(repo, *bitmap_args)]
            daemon.stop()
            results.append(diskvault(repo, str(disk), "--name", "full"))
            results += [(peer.backup(raw, night).wall_s, None, size) for peer in peers]
            for label, result in zip(labels, results):
                if label not in best or result[0] < best[label][0]:
                    best[label] = result
    finally:
        daemon.stop()
    baseline = min(timed(lambda: read_file(raw))[0] for _ in range(repeat))
    return [("baseline: read the raw image from page cache", baseline, None, size)] + \
        [(label, *best[label]) for label in labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="disk size (default 1G)")
    parser.add_argument("--changed", type=float, default=1.0,
                        help="percent rewritten each night in 64 KiB blocks (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="nights, best of (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="diskvault-bitmap-", dir="/var/tmp") as work:
        rows = run(size, args.changed, args.repeat, Path(work))
    bitmap = rows[1][1]
    print(f"disk {size >> 20} MiB (qcow2), {args.changed}% rewritten in 64 KiB blocks each "
          f"night, best of {args.repeat} nights")
    width = max(len(row[0]) for row in rows)
    print(f"{'run':<{width}}  {'wall s':>7}  {'own s':>6}  {'MiB read':>8}  vs bitmap")
    for name, seconds, own, read in rows:
        own_text = f"{own:>6.2f}" if own is not None else f"{'-':>6}"
        print(f"{name:<{width}}  {seconds:>7.3f}  {own_text}  {read / (1 << 20):>8.1f}  "
              f"{seconds / bitmap:>8.2f}x")


if __name__ == "__main__":
    main()
