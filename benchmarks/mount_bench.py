"""Mount benchmark: reading a snapshot through `diskvault mount` against reading the original.

    python -m benchmarks.mount_bench [--size-mib 1024] [--repeat 3] [--workdir DIR]

Builds a GPT disk image (one ext4 partition made by `mkfs.ext4 -d` from files copied out of
/usr, plus one 50 MiB file to pull), backs it up once, then measures, each run on a fresh
mount:

1. sequential read of the whole image through the mount, against reading the original file;
2. loop-mounting the ext4 partition read-only and reading the 50 MiB file from inside,
   from the mount's `.p1` file against the original image (at its partition offset).

Cache state, the same for both sides of every comparison: "cold" drops the page cache of the
original image and of every pack file (posix_fadvise DONTNEED on those files only, so other
work on a shared machine keeps its cache), and each run uses a fresh mount and a fresh loop
device; "warm" reads the original and the packs into the page cache first, so it measures
the CPU cost of serving reads. Needs root (loop mounts) and FUSE. Prints the median and the
best of the runs ("speed": mount MB/s / original MB/s; "time": pull time through the
mount / from the original; "mount cpu s": the mount process's CPU time for the sequential
read) and writes every run to results.json in the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
PARTITION_START = MIB
LINUX_FILESYSTEM = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
PULL_PATH = "srv/pull/archive.bin"
PULL_BYTES = 50 * MIB
USR_SOURCES = ["/usr/lib", "/usr/share", "/usr/bin"]
READ_BYTES = MIB


def run(*argv: str | os.PathLike, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **options)


def diskvault(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "diskvault", *args)


# -- the workload ------------------------------------------------------------------------
def copy_usr(target: Path, budget: int) -> None:
    """Real files (binaries, libraries, text) up to ``budget`` bytes."""
    used = 0
    for source in USR_SOURCES:
        for folder, _, names in os.walk(source):
            for name in sorted(names):
                path = Path(folder, name)
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if used + size > budget:
                    return
                destination = target / path.relative_to("/")
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
                used += size


def pull_file(target: Path) -> None:
    """The file to pull: library bytes (compressible like real data), 50 MiB exactly."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        written = 0
        for folder, _, names in os.walk("/usr/lib"):
            for name in sorted(names):
                path = Path(folder, name)
                if written >= PULL_BYTES or path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()[: PULL_BYTES - written]
                out.write(data)
                written += len(data)
        out.write(bytes(PULL_BYTES - written))


def build_disk(work: Path, size: int) -> tuple[Path, int]:
    """The GPT disk image and its partition's size in bytes."""
    disk = work / "disk.img"
    if disk.exists():
        return disk, json.loads((work / "disk.json").read_text())["partition_bytes"]
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    pull_file(tree / PULL_PATH)
    copy_usr(tree, int(size * 0.5) - PULL_BYTES)
    with open(disk, "wb") as handle:
        handle.truncate(size)
    run("sfdisk", "--quiet", disk, input=f"label: gpt\nstart=2048, type={LINUX_FILESYSTEM}\n"
        .encode())
    table = json.loads(run("sfdisk", "--json", disk).stdout)
    partition_bytes = table["partitiontable"]["partitions"][0]["size"] * 512
    filesystem = work / "part.ext4"
    with open(filesystem, "wb") as handle:
        handle.truncate(partition_bytes)
    run("mkfs.ext4", "-q", "-F", "-d", tree, filesystem)
    run("dd", f"if={filesystem}", f"of={disk}", "bs=1M", f"seek={PARTITION_START // MIB}",
        "conv=notrunc,sparse", "status=none")
    filesystem.unlink()
    shutil.rmtree(tree)
    (work / "disk.json").write_text(json.dumps({"partition_bytes": partition_bytes}))
    return disk, partition_bytes


# -- cache control and timing ------------------------------------------------------------
def pack_files(repo: Path) -> list[Path]:
    return sorted((repo / "packs").glob("*/*.pack"))


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def fill_cache(paths: list[Path]) -> None:
    for path in paths:
        read_all(path)


def read_all(path: Path) -> int:
    buffer = bytearray(READ_BYTES)
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            total += count
    return total


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def prepare(state: str, disk: Path, repo: Path) -> None:
    files = [disk, *pack_files(repo)]
    (drop_cache if state == "cold" else fill_cache)(files)


class Mount:
    """A fresh `diskvault mount` of the latest snapshot; reports its process's CPU time."""

    def __init__(self, repo: Path, work: Path):
        self.point = Path(tempfile.mkdtemp(dir=work, prefix="mnt-"))
        self.log = self.point.with_suffix(".log")
        diskvault("mount", "-r", repo, self.point, "latest", "--log-file", self.log)
        self.pid = int(self.log.read_text().rsplit("(pid ", 1)[1].split(")")[0])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        diskvault("umount", self.point)
        self.point.rmdir()
        self.log.unlink()


def pull_through_loop(image: Path, options: str, inside: Path) -> None:
    run("mount", "-o", f"loop,ro,noload{options}", image, inside)
    try:
        read_all(inside / PULL_PATH)
    finally:
        run("umount", inside)


# -- the measurements ----------------------------------------------------------------------
def measure(disk: Path, partition_bytes: int, repo: Path, work: Path, state: str) -> dict:
    size = disk.stat().st_size
    inside = work / "inside"
    inside.mkdir(exist_ok=True)

    prepare(state, disk, repo)
    original_read = timed(lambda: read_all(disk))
    mount = Mount(repo, work)
    try:
        image = mount.point / disk.name
        prepare(state, disk, repo)
        cpu_before = mount.cpu_s()
        mount_read = timed(lambda: read_all(image))
        mount_cpu = mount.cpu_s() - cpu_before
    finally:
        mount.close()

    offset = f",offset={PARTITION_START},sizelimit={partition_bytes}"
    prepare(state, disk, repo)
    original_pull = timed(lambda: pull_through_loop(disk, offset, inside))
    mount = Mount(repo, work)
    try:
        prepare(state, disk, repo)
        mount_pull = timed(lambda: pull_through_loop(mount.point / f"{disk.name}.p1", "",
                                                     inside))
    finally:
        mount.close()
    return {"original_read_s": original_read, "mount_read_s": mount_read,
            "mount_read_cpu_s": mount_cpu, "original_pull_s": original_pull,
            "mount_pull_s": mount_pull, "image_bytes": size}


def summarise(runs: list[dict], pick) -> dict:
    """Each figure's ``pick`` (median, min) over the runs, and the ratios of those."""
    figure = {key: pick([run[key] for run in runs]) for key in runs[0]}
    size = figure["image_bytes"]
    return {"mount_read_mb_s": size / figure["mount_read_s"] / 1e6,
            "original_read_mb_s": size / figure["original_read_s"] / 1e6,
            "read_speed_ratio": figure["original_read_s"] / figure["mount_read_s"],
            "mount_read_cpu_s": figure["mount_read_cpu_s"],
            "mount_pull_s": figure["mount_pull_s"], "original_pull_s": figure["original_pull_s"],
            "pull_time_ratio": figure["mount_pull_s"] / figure["original_pull_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path,
                        default=Path(__file__).parent / "work" / "mount_bench")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mount_bench needs root: it loop-mounts the ext4 partition")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    disk, partition_bytes = build_disk(work, args.size_mib * MIB)
    repo = work / "repo"
    if not repo.exists():
        diskvault("init", "-r", repo)
        diskvault("backup", "-r", repo, disk, "--name", "bench")
    results = {"image_mib": disk.stat().st_size / MIB,
               "stored_mib": sum(p.stat().st_size for p in pack_files(repo)) / MIB,
               "load_average_at_start": os.getloadavg()}
    for state in ("cold", "warm"):
        runs = [measure(disk, partition_bytes, repo, work, state) for _ in range(args.repeat)]
        results[state] = {"median": summarise(runs, statistics.median),
                          "best": summarise(runs, min), "runs": runs}
    results["load_average_at_end"] = os.getloadavg()
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results, args.repeat)


def print_table(results: dict, repeat: int) -> None:
    print(f"image {results['image_mib']:.0f} MiB, stored {results['stored_mib']:.0f} MiB; "
          f"{repeat} runs; load average {results['load_average_at_start']}")
    print(f"{'cache':12} {'mount MB/s':>11} {'orig MB/s':>10} {'speed':>6} {'mount cpu s':>12} "
          f"{'pull mount s':>13} {'pull orig s':>12} {'time':>6}")
    for state in ("cold", "warm"):
        for pick in ("median", "best"):
            s = results[state][pick]
            print(f"{state + ' ' + pick:12} {s['mount_read_mb_s']:11.0f} "
                  f"{s['original_read_mb_s']:10.0f} {s['read_speed_ratio']:6.2f} "
                  f"{s['mount_read_cpu_s']:12.2f} {s['mount_pull_s']:13.2f} "
                  f"{s['original_pull_s']:12.2f} {s['pull_time_ratio']:6.2f}")


if __name__ == "__main__":
    main()
