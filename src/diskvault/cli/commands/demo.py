"""``diskvault demo``: the main job on a built-in example, end to end, in a scratch folder.

A small ext4 image made with ``mkfs.ext4 -d`` from a generated tree is backed up over
a few simulated nights (files edited, added and deleted in place with ``debugfs``, no
root needed), then listed, diffed and restored bit-exact, with the dedup figures.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import click

from ...errors import DiskvaultError
from ...store.repository import Repository
from ..common import json_option
from ..output.formatting import (human_bytes, print_json, print_snapshots,
                                 repository_space, snapshot_json)
from .backup import backup_summary

IMAGE_BYTES = 96 * 1024 * 1024
NIGHTS = 4
BLOCK_BYTES = 4096


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise DiskvaultError(f"the demo needs {name}: install it with "
                             f"'apt-get install e2fsprogs'")
    return path


def _make_tree(root: Path, rng: random.Random) -> None:
    """A small system-like tree: configs, logs, binaries-like blobs, a database file."""
    for folder in ("etc/app", "var/log", "usr/lib", "srv/db", "home/alice"):
        (root / folder).mkdir(parents=True)
    words = [rng.randbytes(rng.randrange(2, 9)).hex() for _ in range(400)]
    for number in range(40):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(50, 2000)))
        (root / "etc/app" / f"setting{number}.conf").write_text(text + "\n")
    for number in range(12):
        (root / "usr/lib" / f"lib{number}.so").write_bytes(rng.randbytes(rng.randrange(1, 3) << 20))
    (root / "srv/db/data.db").write_bytes(rng.randbytes(16 << 20))
    (root / "var/log/app.log").write_text("".join(f"boot {i}\n" for i in range(5000)))
    (root / "home/alice/notes.txt").write_text("remember the milk\n")


def _change_night(image: Path, workdir: Path, night: int, rng: random.Random) -> str:
    """Edit the filesystem inside the image in place, as a night of use would."""
    scratch = workdir / "scratch" / f"night{night}"
    scratch.mkdir(parents=True)
    log = scratch / "app.log"
    log.write_text("".join(f"night {night} event {i}\n" for i in range(20000)))
    note = scratch / "notes.txt"
    note.write_text(f"night {night}: remember the milk, and the eggs\n")
    blob = scratch / "new.so"
    blob.write_bytes(rng.randbytes(1 << 20))
    commands = [
        "rm /var/log/app.log", f"write {log} /var/log/app.log",
        "rm /home/alice/notes.txt", f"write {note} /home/alice/notes.txt",
        f"write {blob} /usr/lib/new{night}.so",
        f"rm /etc/app/setting{night}.conf",
    ]
    script = scratch / "debugfs.cmds"
    script.write_text("\n".join(commands) + "\n")
    subprocess.run([_tool("debugfs"), "-w", "-f", str(script), str(image)], check=True,
                   capture_output=True)
    # The database rewrites a few 4 KiB pages in place, inside its own blocks.
    blocks = subprocess.run([_tool("debugfs"), "-R", "blocks /srv/db/data.db", str(image)],
                            check=True, capture_output=True, text=True).stdout.split()
    with open(image, "r+b") as handle:
        for block in rng.sample(blocks, 32):
            handle.seek(int(block) * BLOCK_BYTES)
            handle.write(rng.randbytes(BLOCK_BYTES))
    return "edited a log and a note, added a library, deleted a config, rewrote 32 pages"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Folder for the example (default: a new temporary folder, kept).")
@json_option
def demo(workdir: Path | None, as_json: bool) -> None:
    """Run the main job on a built-in example: nightly backups of a small ext4 image."""
    # With --json the story goes to stderr and stdout holds only the JSON document.
    say = partial(click.echo, err=as_json)
    workdir = Path(tempfile.mkdtemp(prefix="diskvault-demo-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    tree, image, repo_path = workdir / "tree", workdir / "vm1.img", workdir / "repo"
    for leftover in (tree, repo_path, workdir / "scratch"):
        shutil.rmtree(leftover, ignore_errors=True)
    _make_tree(tree, rng)
    image.unlink(missing_ok=True)
    subprocess.run([_tool("mkfs.ext4"), "-q", "-F", "-b", str(BLOCK_BYTES), "-d", str(tree),
                    str(image), f"{IMAGE_BYTES // 1024}k"], check=True, capture_output=True)
    say(f"example: {image} ({human_bytes(IMAGE_BYTES)} ext4 made with mkfs.ext4 -d)")
    say(f"$ diskvault init -r {repo_path} --encryption none")
    hashes = []
    with Repository.init(repo_path) as repo:
        for night in range(1, NIGHTS + 1):
            if night > 1:
                say(f"-- night {night}: {_change_night(image, workdir, night, rng)}")
            say(f"$ diskvault backup -r {repo_path} {image} --name vm1")
            record = repo.backup(image, name="vm1", tags=(f"night{night}",))
            hashes.append((record, _sha256(image)))
            say(backup_summary(record))
        results = _show_results(repo, repo_path, workdir, hashes, say, as_json)
    if as_json:
        print_json(results)


def _show_results(repo: Repository, repo_path: Path, workdir: Path, hashes, say,
                  as_json: bool) -> dict:
    """Lists, diffs and restores as the commands would; what it found, for --json."""
    say(f"$ diskvault list -r {repo_path}")
    records = repo.list_snapshots()
    if not as_json:
        print_snapshots(records)
    first, first_sha = hashes[0]
    last, _ = hashes[-1]
    changed = repo.diff(first, last)
    changed_bytes = sum(e - s for s, e in changed)
    say(f"$ diskvault diff -r {repo_path} {first.short_id} {last.short_id}")
    say(f"{len(changed)} changed ranges, {human_bytes(changed_bytes)}")
    target = workdir / "night1-restored.img"
    target.unlink(missing_ok=True)
    say(f"$ diskvault restore -r {repo_path} {first.short_id} {target}")
    repo.restore(first, target)
    verdict = "bit-exact" if _sha256(target) == first_sha else "MISMATCH"
    say(f"restored night 1: sha256 {verdict}")
    if verdict != "bit-exact":
        raise DiskvaultError("the restored image differs from the original")
    space = repository_space(repo.totals())
    say(f"dedup: {len(records)} snapshots, {human_bytes(space.image_bytes)} of images "
               f"= {space.parts}; the data stored in {human_bytes(space.stored_bytes)} "
               f"({space.ratio} smaller; zeros are never stored and not counted)")
    say(f"everything is in {workdir}")
    return {"workdir": str(workdir), "repository": str(repo_path),
            "snapshots": [snapshot_json(r) for r in records],
            "diff": {"a": first.id, "b": last.id, "changed_ranges": len(changed),
                     "changed_bytes": changed_bytes},
            "restore": {"snapshot": first.id, "target": str(target), "bit_exact": True},
            "space": space.to_json()}
