"""The "fs-image" workload: a GPT disk image with one ext4 partition of real files, changed nightly.

Night 0 is made with `mkfs.ext4 -d` from a staged tree (files copied from /usr plus generated
documents, logs, a database-like file and the file pulled through the mounts). Each later night
loop-mounts the partition read-write and changes it in place, as a running machine would.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

from .content import (PAGE, MiB, TextMaker, database_page, list_usr_files, package_dirs,
                      random_bytes, split_pools)
from .mounts import loop_mounted

PARTITION_START = 1 * MiB
DISK_UUID = "9F0B7A1E-2C3D-4E5F-8A9B-0C1D2E3F4A5B"
PARTITION_UUID = "4C1D6A3B-7E8F-4A0B-9C2D-3E4F5A6B7C8D"
FS_UUID = "6b1f0c52-3c4e-4d2b-9a3e-0d1e5e7a2b10"
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
FIXED_TIME = 1_790_000_000  # mtimes of generated files and mkfs' own clock: fixed, so bytes repeat
PULL_PATH = "srv/pull/archive.bin"
DB_PATH = "var/lib/db/data.db"
LOGS = ["var/log/syslog", "var/log/app/api.log", "var/log/app/worker.log", "var/log/auth.log"]
MAX_NIGHTS = 30  # the reserve pool of /usr files is sized for this many nights of additions


class Plan:
    """Every size of the workload, scaled from the 2 GiB default by the image size."""

    def __init__(self, image_size: int, seed: int):
        self.image_size = image_size
        self.seed = seed
        scale = image_size / (2 << 30)
        fs_bytes = image_size - PARTITION_START - MiB
        self.usr_bytes = int(fs_bytes * 0.45)
        self.pull_bytes = max(4, min(50, int(50 * scale))) * MiB
        self.db_bytes = max(4, min(64, int(64 * scale))) * MiB
        self.doc_count = max(40, int(400 * scale))
        self.log_bytes = max(64 * 1024, int(4 * MiB * scale))
        self.add_bytes = int(fs_bytes * 0.015)
        self.delete_bytes = int(fs_bytes * 0.005)
        self.edit_count = max(4, self.doc_count // 30)
        self.log_append_bytes = max(16 * 1024, int(MiB * scale))
        self.db_pages_rewritten = (self.db_bytes // PAGE) // 50  # 2 % of the pages
        self.package_range = (int(8 * MiB * scale), int(40 * MiB * scale))

    def pools(self):
        return split_pools(list_usr_files(), self.seed, self.usr_bytes,
                           self.add_bytes * MAX_NIGHTS)


def build_night0(image: Path, plan: Plan, scratch: Path) -> dict:
    """Write night 0's image; return the pull spec (where the pulled file is, and its digest)."""
    tree = scratch / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    first_pool, _ = plan.pools()
    _stage_tree(tree, plan, first_pool)
    start, size = _partition(image, plan.image_size)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FIXED_TIME))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "dvbench", "-U", FS_UUID,
                    "-E", f"offset={start},hash_seed={FS_UUID},root_owner=0:0,"
                          "lazy_itable_init=0,lazy_journal_init=0",
                    "-d", str(tree), str(image), str(size // 4096)],
                   check=True, env=env, capture_output=True)
    pull_sha = _sha256_of(tree / PULL_PATH)
    shutil.rmtree(tree)
    return {"partition_offset": start, "partition_size": size, "path_in_fs": PULL_PATH,
            "size": plan.pull_bytes, "sha256": pull_sha,
            "files_from_usr": len(first_pool), "bytes_from_usr": sum(f.size for f in first_pool),
            "usr_selection_sha256": _fingerprint(first_pool)}


def _fingerprint(pool) -> str:
    """Names and sizes of the /usr files taken: equal on two machines means the same selection."""
    listing = "".join(f"{item.relpath}\t{item.size}\n" for item in pool)
    return hashlib.sha256(listing.encode()).hexdigest()


def apply_night(image: Path, night: int, plan: Plan, scratch: Path, pull: dict) -> dict:
    """Change the filesystem in image as night `night` (1, 2, ...) would; return what changed."""
    rng = random.Random(plan.seed * 1000 + night)
    text = TextMaker(plan.seed * 1000 + night)
    _, reserve = plan.pools()
    mnt = scratch / "mnt"
    with loop_mounted(image, mnt, pull["partition_offset"], pull["partition_size"], writable=True):
        changes = {
            "added_bytes": _add_reserve_files(mnt, reserve, night, plan.add_bytes),
            "deleted_bytes": _delete_files(mnt, rng, plan.delete_bytes),
            "edited_files": _edit_docs(mnt, rng, text, plan.edit_count),
            "log_bytes_appended": _append_logs(mnt, text, night, plan.log_append_bytes),
            "db_pages_rewritten": _rewrite_db_pages(mnt, rng, text, night, plan),
            "package": _add_package(mnt, rng, night, plan.package_range),
        }
        os.sync()
    return changes


def _partition(image: Path, image_size: int) -> tuple[int, int]:
    with open(image, "wb") as disk:
        disk.truncate(image_size)
    script = (f"label: gpt\nlabel-id: {DISK_UUID}\nunit: sectors\nfirst-lba: 2048\n"
              f"start={PARTITION_START // 512}, type={LINUX_FS_TYPE}, uuid={PARTITION_UUID}, "
              f"name=root\n")
    subprocess.run(["sfdisk", "--quiet", str(image)], input=script, text=True, check=True,
                   capture_output=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], check=True,
                                      capture_output=True, text=True).stdout)
    partition = table["partitiontable"]["partitions"][0]
    return partition["start"] * 512, partition["size"] * 512


def _stage_tree(tree: Path, plan: Plan, first_pool) -> None:
    rng = random.Random(plan.seed)
    text = TextMaker(plan.seed)
    for item in first_pool:
        target = tree / item.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2("/" + item.relpath, target)
    _write(tree / PULL_PATH, random_bytes(rng, plan.pull_bytes))
    _write(tree / DB_PATH, b"".join(database_page(rng, text, page, 0)
                                    for page in range(plan.db_bytes // PAGE)))
    for number in range(plan.doc_count):
        _write(tree / f"home/user/docs/doc-{number:04d}.txt",
               text.text(rng.randint(4 * 1024, 64 * 1024)))
    for log in LOGS:
        _write(tree / log, text.log_lines(plan.log_bytes, 0, Path(log).stem))
    _write(tree / "etc/hostname", b"vm1\n")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (FIXED_TIME, FIXED_TIME))


def _sha256_of(path: Path) -> str:
    from .measure import sha256_file
    return sha256_file(path)


def _add_reserve_files(mnt: Path, reserve, night: int, per_night: int) -> int:
    """Night n installs the n-th slice of the reserve pool (like package updates landing)."""
    low, high, position, added = (night - 1) * per_night, night * per_night, 0, 0
    for item in reserve:
        if low <= position < high:
            target = mnt / item.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2("/" + item.relpath, target)
            added += item.size
        position += item.size
    return added


def _files_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames))
    return found


def _delete_files(mnt: Path, rng: random.Random, target_bytes: int) -> int:
    candidates = [p for p in _files_under(mnt / "usr") if p.is_file() and not p.is_symlink()]
    rng.shuffle(candidates)
    deleted = 0
    for path in candidates:
        if deleted >= target_bytes:
            break
        deleted += path.stat().st_size
        path.unlink()
    return deleted


def _edit_docs(mnt: Path, rng: random.Random, text: TextMaker, count: int) -> int:
    """Half the edits rewrite the file the way editors do (new file, rename), half patch in place."""
    docs = _files_under(mnt / "home/user/docs")
    for number, path in enumerate(rng.sample(docs, min(count, len(docs)))):
        data = path.read_bytes()
        at = rng.randrange(len(data))
        if number % 2 == 0:
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data[:at] + text.text(rng.randint(200, 4000)) + data[at:])
            temporary.replace(path)
        else:
            patch = text.text(min(len(data) - at, rng.randint(50, 2000)))
            with open(path, "r+b") as doc:
                doc.seek(at)
                doc.write(patch)
    return min(count, len(docs))


def _append_logs(mnt: Path, text: TextMaker, night: int, per_night: int) -> int:
    appended = 0
    for log in LOGS:
        lines = text.log_lines(per_night // len(LOGS), night, Path(log).stem)
        with open(mnt / log, "ab") as handle:
            handle.write(lines)
        appended += len(lines)
    return appended


def _rewrite_db_pages(mnt: Path, rng: random.Random, text: TextMaker, night: int,
                      plan: Plan) -> int:
    pages = rng.sample(range(plan.db_bytes // PAGE), plan.db_pages_rewritten)
    fd = os.open(mnt / DB_PATH, os.O_WRONLY)
    try:
        for page in sorted(pages):
            os.pwrite(fd, database_page(rng, text, page, night), page * PAGE)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(pages)


def _add_package(mnt: Path, rng: random.Random, night: int, size_range: tuple[int, int]) -> str:
    """Copy one real package-sized folder from /usr into /opt/pkg-<night>/."""
    candidates = package_dirs(list_usr_files(), *size_range)
    if not candidates:
        return ""
    source, _ = rng.choice(candidates)
    target = mnt / f"opt/pkg-{night:02d}" / Path(source).name
    shutil.copytree("/" + source, target, symlinks=True)
    copied = sum(p.stat().st_size for p in _files_under(target) if not p.is_symlink())
    return f"/{source} ({copied // MiB} MiB)"
