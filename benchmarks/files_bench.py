"""Files benchmark: pulling files out of an old snapshot with `diskvault pull`, against what
a user can do otherwise (restore the whole image, loop-mount it, copy).

    python -m benchmarks.files_bench [--size-mib 2048] [--repeat 3] [--workdir DIR]

Builds a GPT disk image with one ext4 partition (`mkfs.ext4 -d`) holding files copied from
/usr, one 50 MiB file and a 5,000-file tree; backs it up, adds a file with debugfs and backs
it up again, so that the first snapshot is an old one. Then times, each from a cold cache:

1. `diskvault pull` of the 50 MiB file, and of the 5,000-file tree, out of the old snapshot;
2. the same through `diskvault mount` and `cp` from `<image>.files/p1/` (no root needed);
3. `diskvault restore` of the whole image, then `mount -o loop,ro` of its partition and
   `cp` (root needed), with the restore and the mount + copy timed apart.

"Cold": before every run the page cache of the repository's pack files and of the original
image is dropped with posix_fadvise(DONTNEED) on those files only (gentler on a shared
machine than dropping all caches); a restored image is deleted after each run. Prints the
median and best of the runs and writes them to results.json in the work folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .mount_bench import (LINUX_FILESYSTEM, MIB, PARTITION_START, copy_usr, diskvault, drop_cache,
                          pack_files, pull_file, run)

FILE_PATH = "srv/pull/archive.bin"
TREE_PATH = "srv/tree"
TREE_FILES = 5000
TREE_FOLDERS = 50
ADDED_FILE_BYTES = 64 * MIB


def build_tree(target: Path) -> None:
    """5,000 files of 100 B to 16 KiB (log- and config-like text) in 50 folders."""
    rng = random.Random(5)
    words = ["error", "info", "user", "GET", "/api/v1", "200", "cache", "session", "worker",
             "debug", "key=value", "timeout=30"]
    for index in range(TREE_FILES):
        folder = target / f"dir{index % TREE_FOLDERS:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.choice([100, 400, 1000, 2500, 6000, 16000])
        line_count = max(1, size // 40)
        text = "\n".join(" ".join(rng.choices(words, k=6)) + f" {rng.random():.6f}"
                         for _ in range(line_count))
        (folder / f"file{index:05d}.txt").write_text(text[:size] + "\n")


def build_disk(work: Path, size: int) -> Path:
    """The GPT disk image (kept between runs of the benchmark)."""
    disk = work / "disk.img"
    if disk.exists():
        return disk
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    pull_file(tree / FILE_PATH)
    build_tree(tree / TREE_PATH)
    copy_usr(tree, int(size * 0.4))
    with open(work / "disk.tmp", "wb") as handle:
        handle.truncate(size)
    run("sfdisk", "--quiet", work / "disk.tmp",
        input=f"label: gpt\nstart=2048, type={LINUX_FILESYSTEM}\n".encode())
    table = json.loads(run("sfdisk", "--json", work / "disk.tmp").stdout)
    partition_bytes = table["partitiontable"]["partitions"][0]["size"] * 512
    filesystem = work / "part.ext4"
    with open(filesystem, "wb") as handle:
        handle.truncate(partition_bytes)
    run("mkfs.ext4", "-q", "-F", "-d", tree, filesystem)
    run("dd", f"if={filesystem}", f"of={work / 'disk.tmp'}", "bs=1M",
        f"seek={PARTITION_START // MIB}", "conv=notrunc,sparse", "status=none")
    filesystem.unlink()
    shutil.rmtree(tree)
    (work / "disk.tmp").rename(disk)
    return disk


def back_up_twice(disk: Path, repo: Path, work: Path) -> str:
    """Two snapshots, the second with a file added; returns the first (old) one's id."""
    if not repo.exists():
        diskvault("init", "-r", repo)
        diskvault("backup", "-r", repo, disk, "--name", "bench")
        added = work / "added.bin"
        added.write_bytes(random.Random(9).randbytes(ADDED_FILE_BYTES))
        filesystem = f"{disk}?offset={PARTITION_START}"
        run("debugfs", "-w", "-R", f"write {added} /srv/added.bin", filesystem)
        added.unlink()
        diskvault("backup", "-r", repo, disk, "--name", "bench")
    listing = json.loads(diskvault("list", "-r", repo, "--json").stdout)
    return listing[0]["id"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def count_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# -- the three ways ------------------------------------------------------------------------
def verify(what: str, copy: Path, file_sha256: str) -> None:
    """The copy is right: the file's hash, the tree's file count."""
    if what == "file" and sha256(copy) != file_sha256:
        raise SystemExit(f"the copied file {copy} differs from the original")
    if what == "tree" and count_files(copy) != TREE_FILES:
        raise SystemExit(f"the copied tree {copy} has {count_files(copy)} files, not "
                         f"{TREE_FILES}")


def by_pull(repo: Path, snapshot: str, out: Path, file_sha256: str) -> dict:
    times = {}
    for what, source in (("file", FILE_PATH), ("tree", TREE_PATH)):
        drop_cache(pack_files(repo))
        times[f"{what}_s"] = timed(lambda: diskvault(
            "pull", "-r", repo, snapshot, f"p1:/{source}", out / what, "--no-progress"))
        verify(what, out / what, file_sha256)
    return times


def by_mount(repo: Path, snapshot: str, out: Path, disk: Path, file_sha256: str) -> dict:
    point = out / "mnt"
    point.mkdir()
    diskvault("mount", "-r", repo, point, snapshot, "--log-file", out / "mount.log")
    times = {}
    try:
        inside = point / f"{disk.name}.files" / "p1"
        for what, source in (("file", FILE_PATH), ("tree", TREE_PATH)):
            drop_cache(pack_files(repo))
            times[f"{what}_s"] = timed(lambda: run("cp", "-a", inside / source, out / what))
            verify(what, out / what, file_sha256)
    finally:
        diskvault("umount", point)
    return times


def by_restore(repo: Path, snapshot: str, out: Path, partition_bytes: int,
               file_sha256: str) -> dict:
    """Restore + loop mount + cp, for the file and (separately, cold again) for the tree."""
    times = {}
    for what, source in (("file", FILE_PATH), ("tree", TREE_PATH)):
        drop_cache(pack_files(repo))
        image = out / f"restored-{what}.img"
        restore_s = timed(lambda: diskvault("restore", "-r", repo, snapshot, image))
        drop_cache([image])
        inside = out / f"inside-{what}"
        inside.mkdir()
        options = f"loop,ro,noload,offset={PARTITION_START},sizelimit={partition_bytes}"

        def mount_and_copy():
            run("mount", "-o", options, image, inside)
            try:
                run("cp", "-a", inside / source, out / what)
            finally:
                run("umount", inside)

        copy_s = timed(mount_and_copy)
        verify(what, out / what, file_sha256)
        image.unlink()
        times.update({f"{what}_restore_s": restore_s, f"{what}_mount_copy_s": copy_s,
                      f"{what}_s": restore_s + copy_s})
    return times


def measure(way: str, repo: Path, snapshot: str, disk: Path, work: Path,
            partition_bytes: int, file_sha256: str) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-"))
    try:
        drop_cache([disk])
        if way == "pull":
            return by_pull(repo, snapshot, out, file_sha256)
        if way == "mount":
            return by_mount(repo, snapshot, out, disk, file_sha256)
        return by_restore(repo, snapshot, out, partition_bytes, file_sha256)
    finally:
        shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path,
                        default=Path(__file__).parent / "work" / "files_bench")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    disk = build_disk(work, args.size_mib * MIB)
    repo = work / "repo"
    snapshot = back_up_twice(disk, repo, work)
    table = json.loads(run("sfdisk", "--json", disk).stdout)
    partition_bytes = table["partitiontable"]["partitions"][0]["size"] * 512
    file_sha256 = expected_file_hash(work)
    ways = ["pull", "mount"] + (["restore"] if os.geteuid() == 0 else [])
    if "restore" not in ways:
        print("not root: the restore + loop mount comparison is skipped", file=sys.stderr)
    results = {"image_mib": args.size_mib, "snapshot": snapshot,
               "stored_mib": sum(p.stat().st_size for p in pack_files(repo)) / MIB,
               "load_average_at_start": os.getloadavg(), "ways": {}}
    for way in ways:
        runs = [measure(way, repo, snapshot, disk, work, partition_bytes, file_sha256)
                for _ in range(args.repeat)]
        results["ways"][way] = {
            "median": {key: statistics.median(r[key] for r in runs) for key in runs[0]},
            "best": {key: min(r[key] for r in runs) for key in runs[0]}, "runs": runs}
    results["load_average_at_end"] = os.getloadavg()
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results, args.repeat)


def expected_file_hash(work: Path) -> str:
    """The 50 MiB file is rebuilt the same way (from /usr/lib) to learn its hash once."""
    record = work / "file.sha256"
    if not record.exists():
        scratch = Path(tempfile.mkdtemp(dir=work, prefix="hash-"))
        try:
            pull_file(scratch / "file")
            record.write_text(sha256(scratch / "file"))
        finally:
            shutil.rmtree(scratch)
    return record.read_text()


def print_table(results: dict, repeat: int) -> None:
    print(f"image {results['image_mib']} MiB, stored {results['stored_mib']:.0f} MiB, "
          f"old snapshot {results['snapshot'][:8]}; {repeat} runs, cold cache (fadvise "
          f"DONTNEED on packs and image); load average {results['load_average_at_start']}")
    print(f"{'way':36} {'50 MiB file s':>14} {'5,000 files s':>14}")
    names = {"pull": "diskvault pull", "mount": "diskvault mount + cp (.files/p1)",
             "restore": "restore + loop mount + cp"}
    for way, figures in results["ways"].items():
        for pick in ("median", "best"):
            s = figures[pick]
            print(f"{names[way] + ' (' + pick + ')':36} {s['file_s']:14.2f} {s['tree_s']:14.2f}")
            if way == "restore":
                print(f"{'  of which restore':36} {s['file_restore_s']:14.2f} "
                      f"{s['tree_restore_s']:14.2f}")


if __name__ == "__main__":
    main()
