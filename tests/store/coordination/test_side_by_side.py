"""Backups side by side, between real processes, on a local repository and on a real radosgw:
eight backups at once all record and restore bit-exact while one writer killed among them
costs the others nothing, and its stale registration is removed; prune and key changes
refuse a running backup, naming it, or wait for it; a chunk two backups stored at once is
kept once after compact; a backup removes a dead writer's unfinished pack, never a running
one's."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diskvault.errors import EXIT_LOCKED, RepositoryLocked
from diskvault.store.format.config import REPOKEY_MODE
from diskvault.store.format.packs import pack_name, writer_tag_of
from diskvault.store.coordination.leases import PLAINTEXT_LEASES
from diskvault.store.backup.source import READ_BUFFER_BYTES
from diskvault.store.coordination.writers import WRITERS_PREFIX
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, run_cli, write_image

WRITERS = 8
PART_BYTES = 8 << 20  # s3_upload.PART_BYTES: where an object store's upload begins
DEADLINE_S = 120.0


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path: Path, monkeypatch) -> str:
    """``-r`` of a new, empty repository: a folder, or a prefix of the radosgw's bucket."""
    if request.param == "local":
        return str(tmp_path / "repo")
    server = request.getfixturevalue("s3_environment")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return f"s3://{server.bucket}/side-by-side-{uuid.uuid4().hex[:12]}"


def init(location: str) -> None:
    run_cli("init", "-r", location, "--encryption", "none", "--chunk-size", str(SMALL_CHUNKS),
            check=True)


def fleet_images(folder: Path) -> list[Path]:
    """One image per host: a part every host shares (the same OS), one of its own, so that
    backups at once store some chunks twice."""
    shared = write_image(folder / "shared.part", 1 << 20, seed=100).read_bytes()
    images = []
    for host in range(WRITERS):
        own = write_image(folder / f"own{host}.part", 256 << 10, seed=host).read_bytes()
        image = folder / f"vm{host}.img"
        image.write_bytes(shared + own)
        images.append(image)
    return images


def registered_pids(location: str) -> set[int]:
    with Repository.open(location) as repository:
        backend = repository.storage.backend
        pids = set()
        for name in backend.list(WRITERS_PREFIX):
            try:
                pids.add(PLAINTEXT_LEASES.decode(backend.get(name), name).holder.pid)
            except FileNotFoundError:
                pass  # renewed or ended while we listed
        return pids


def start_killable_writer(location: str) -> subprocess.Popen:
    """A backup of standard input that registers and then waits for the rest of its
    stream: it is running when it is killed."""
    writer = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", location,
                               "-", "--name", "killed"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer.stdin.write(os.urandom(512 << 10))
    writer.stdin.flush()
    wait_for(lambda: writer.pid in registered_pids(location) or writer.poll() is not None,
             "the writer to be killed to register")
    assert writer.poll() is None, writer.stderr.read().decode()
    return writer


def spare_written(root: Path) -> int | None:
    """When the lock's spare was last written: an exclusive operation that took the lock
    and gave it back rewrote it."""
    try:
        return (root / "lock.spare").stat().st_mtime_ns
    except FileNotFoundError:
        return None  # the lock is taken right now


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_eight_backups_at_once_and_one_killed_among_them_all_restore_bit_exact(
        location: str, tmp_path: Path):
    init(location)
    images = fleet_images(tmp_path)
    killed = start_killable_writer(location)
    writers = [subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", location,
                                 str(image), "--name", image.stem, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for image in images]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed.stdin.close()
    killed.stderr.close()
    ids, warnings = {}, ""
    for image, writer in zip(images, writers):
        stdout, stderr = writer.communicate(timeout=DEADLINE_S)
        assert writer.returncode == 0, stderr.decode()
        ids[image.stem] = json.loads(stdout)["id"]
        warnings += stderr.decode()

    with Repository.open(location) as repository:
        assert sorted(r.name for r in repository.list_snapshots()) == sorted(ids)
        # Each counted its record: the eight raced for the next n, none lost or overwritten.
        assert repository.storage.snapshots.generations.numbers() == list(range(1, 9))
        for image in images:
            target = tmp_path / f"{image.stem}.restored"
            repository.restore(repository.find_snapshot(ids[image.stem]), target)
            assert sha256(target.read_bytes()) == sha256(image.read_bytes()), image.stem

    # The killed writer's registration is stale (its process is gone): a backup that
    # looked for leftovers after the kill, or else the next exclusive operation, removes
    # it with a warning that names it (and its unfinished pack); compact runs.
    compacted = run_cli("compact", "-r", location)
    assert compacted.returncode == 0, compacted.stderr.decode()
    warnings += compacted.stderr.decode()
    assert any(f"pid {killed.pid}" in line and "stale registration" in line
               for line in warnings.splitlines()), warnings
    assert registered_pids(location) == set()
    checked = run_cli("check", "-r", location, "--read-data")
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_prune_refuses_a_running_backup_naming_it_and_waits_for_it_with_lock_wait(
        repo: Repository, tmp_path: Path):
    repo.backup(write_image(tmp_path / "vm.img", 64 << 10), name="vm")
    root = str(repo.root)
    backup = repo.storage.backup_lock("backup /srv/vm7.img")
    backup.acquire()
    try:
        refused = run_cli("prune", "-r", root, "--keep-last", "1")
        assert refused.returncode == EXIT_LOCKED, refused.stderr.decode()
        lines = refused.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "backup /srv/vm7.img" in lines[0], lines
        assert f"pid {os.getpid()}" in lines[0] and "registration expires" in lines[0]

        before = spare_written(repo.root)
        waiting = subprocess.Popen([sys.executable, "-m", "diskvault", "prune", "-r", root,
                                    "--keep-last", "1", "--lock-wait", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # It took the lock, saw the backup and gave the lock back: it is waiting.
        wait_for(lambda: spare_written(repo.root) not in (None, before)
                 or waiting.poll() is not None, "prune to find the backup running")
        assert waiting.poll() is None, waiting.stderr.read().decode()
    finally:
        backup.release()
    _, stderr = waiting.communicate(timeout=DEADLINE_S)
    assert waiting.returncode == 0, stderr.decode()


def test_a_chunk_two_backups_store_at_once_is_kept_once_after_compact(
        repo: Repository, tmp_path: Path):
    size = 3 * READ_BUFFER_BYTES
    image = write_image(tmp_path / "vm.img", size, seed=5)
    root = str(repo.root)
    beside: list[subprocess.CompletedProcess] = []

    def back_up_the_same_image_beside(done: int) -> None:
        """Once this backup has queued the chunks of all but its last read (they wait in
        an unsealed pack), another process backs up the same image: it finds none of them
        indexed and stores them all too."""
        if done == size and not beside:
            beside.append(run_cli("backup", "-r", root, str(image), "--name", "other"))

    first = repo.backup(image, name="vm", progress=back_up_the_same_image_beside)
    assert beside[0].returncode == 0, beside[0].stderr.decode()
    stored_twice = repo.totals().stored_bytes
    assert stored_twice > 1.6 * size, "the two backups did not overlap"
    root_path = repo.root
    repo.close()

    compacted = run_cli("compact", "-r", root, "--json")
    assert compacted.returncode == 0, compacted.stderr.decode()
    assert json.loads(compacted.stdout)["packs_deleted"] >= 1
    with Repository.open(root_path) as reopened:
        assert reopened.totals().stored_bytes < 1.1 * size
        for record in reopened.list_snapshots():
            target = tmp_path / f"{record.name}.restored"
            reopened.restore(record, target)
            assert target.read_bytes() == image.read_bytes()
        assert first.id in reopened.snapshot_ids()
    checked = run_cli("check", "-r", root, "--read-data")
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_a_key_change_waits_for_running_backups(tmp_path: Path):
    passphrase = os.environ["DISKVAULT_PASSWORD"]
    with Repository.init(tmp_path / "repo", encryption=REPOKEY_MODE,
                         passphrase=passphrase) as repository:
        with repository.storage.backup_lock("backup /srv/vm7.img"):
            with pytest.raises(RepositoryLocked, match="backup /srv/vm7.img"):
                repository.change_passphrase(passphrase, "battery staple")
        repository.change_passphrase(passphrase, "battery staple")


def test_a_backup_removes_a_dead_writers_unfinished_pack_but_not_a_running_backups(
        location: str, tmp_path: Path):
    init(location)
    with Repository.open(location) as repository:
        storage = repository.storage
        backend = storage.backend
        running = storage.backup_lock("backup /srv/vm7.img")  # this process's writer tag
        running.acquire()
        try:
            ours = backend.open_upload(pack_name(storage.packs.new_pack_id()))
            dead = backend.open_upload(pack_name("0" * 32))  # a tag nobody registered
            for upload in (ours, dead):
                upload.write(os.urandom(PART_BYTES))  # an object store's upload begins here
            assert len(storage.packs.list_unfinished()) == 2

            image = write_image(tmp_path / "vm.img", 256 << 10, seed=9)
            run_cli("backup", "-r", location, str(image), check=True)

            left = storage.packs.list_unfinished()
            assert len(left) == 1 and writer_tag_of(left[0]) == storage.packs.writer_tag, left
            ours.complete()  # undisturbed by the backup beside it
            dead.abort()
        finally:
            running.release()
