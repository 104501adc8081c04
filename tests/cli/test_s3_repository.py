"""An s3://bucket/prefix repository driven by the real command line against a real Ceph
radosgw (tests/ceph.py): every command works on it, a second machine with an empty cache
needs only the URL, the credentials and the passphrase, a cache that is behind catches up by
reading only new pack footers, and damage on the server is named."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diskvault.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_IO, EXIT_LOCKED
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE, read_config, write_config
from diskvault.store.index import catch_up as index_cache
from diskvault.store.keys.encryption import KEY_FILE
from diskvault.store.repository import Repository

from ..conftest import in_both_modes, init_args, run_cli
from ..fsimages import make_ext4, populate_tree
from ..fuse.conftest import require_fuse, unmount, wait_for

encryption = in_both_modes()


@pytest.fixture
def url(s3_environment) -> str:
    return f"s3://{s3_environment.bucket}/e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """cache(name) -> the environment of a machine whose cache folder is ``name``."""
    def machine(name: str) -> dict[str, str]:
        return {"XDG_CACHE_HOME": str(tmp_path / name)}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-a"))
    return machine


def cli(*args: str, env: dict | None = None, check: bool = True):
    return run_cli(*args, env=env, check=check)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshots(url: str, env: dict | None = None) -> list[dict]:
    return json.loads(cli("list", "-r", url, "--json", env=env).stdout)


def test_every_command_works_on_a_bucket_and_a_second_machine_restores(
        url, cache, encryption, tmp_path):
    tree = populate_tree(tmp_path / "tree", owners=False)
    image = make_ext4(tmp_path / "vm1.img", tree, size_mib=16)
    cli("init", "-r", url, *init_args(encryption))
    first = json.loads(cli("backup", "-r", url, str(image), "--name", "vm1", "--json").stdout)
    with open(image, "r+b") as changed:  # a nightly change: a few blocks
        changed.seek(5 << 20)
        changed.write(os.urandom(64 << 10))
    second = json.loads(cli("backup", "-r", url, str(image), "--name", "vm1", "--json").stdout)
    assert second["space"]["stored_bytes"] < first["space"]["stored_bytes"] / 4

    assert [s["id"] for s in snapshots(url)] == [first["id"], second["id"]]
    cli("restore", "-r", url, "latest", str(tmp_path / "restored.img"))
    assert sha256(tmp_path / "restored.img") == sha256(image)
    assert hashlib.sha256(cli("cat", "-r", url, "vm1").stdout).hexdigest() == sha256(image)
    assert "hello.txt" in cli("ls", "-r", url, "latest", "/").stdout.decode()
    cli("pull", "-r", url, "latest", "/hello.txt", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled").read_bytes() == (tree / "hello.txt").read_bytes()

    require_fuse()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    cli("mount", "-r", url, str(mountpoint), "latest", "--log-file", f"{mountpoint}.log")
    try:
        assert sha256(mountpoint / "vm1.img") == sha256(image)
        assert (mountpoint / "vm1.img.files" / "hello.txt").read_bytes() == \
            (tree / "hello.txt").read_bytes()
    finally:
        unmount(mountpoint)
    with Repository.open(url) as repository:
        wait_for(lambda: _no_readers(repository), "the mount to release the repository")

    elsewhere = cache("cache-b")  # a second machine: nothing but URL, keys, passphrase
    assert [s["id"] for s in snapshots(url, elsewhere)] == [first["id"], second["id"]]
    cli("restore", "-r", url, first["id"], str(tmp_path / "first.img"), env=elsewhere)
    assert (tmp_path / "first.img").stat().st_size == image.stat().st_size
    assert Path(elsewhere["XDG_CACHE_HOME"], "diskvault").stat().st_mode & 0o777 == 0o700

    cli("delete", "-r", url, first["id"], env=elsewhere)
    cli("compact", "-r", url, env=elsewhere)
    cli("check", "-r", url, "--read-data")  # machine A catches up with B's compaction
    cli("restore", "-r", url, "latest", str(tmp_path / "again.img"), "--force")
    assert sha256(tmp_path / "again.img") == sha256(image)


def _no_readers(repository: Repository) -> bool:
    with repository.storage.readers_excluded() as free:
        return free


def test_a_cache_that_is_behind_reads_only_the_footers_of_new_packs(
        url, cache, make_image, monkeypatch):
    cli("init", "-r", url, *init_args(PLAINTEXT_MODE))
    cli("backup", "-r", url, str(make_image(2 << 20, seed=1)), "--name", "a")
    machine_b = cache("cache-b")
    monkeypatch.setenv("XDG_CACHE_HOME", machine_b["XDG_CACHE_HOME"])
    read: list[str] = []
    real_read_footer = index_cache.read_footer

    def counted(packs, pack_id, size=None):
        read.append(pack_id)
        return real_read_footer(packs, pack_id, size)

    monkeypatch.setattr(index_cache, "read_footer", counted)
    with Repository.open(url) as repository:  # B's empty cache: rebuilt from the footers
        packs_at_first = repository.storage.index.known_packs()
    assert sorted(read) == sorted(packs_at_first) and packs_at_first

    read.clear()
    cli("backup", "-r", url, str(make_image(2 << 20, seed=2)), "--name", "b",
        env=cache("cache-a"))
    with Repository.open(url) as repository:
        assert len(repository.list_snapshots()) == 2
        now_known = repository.storage.index.known_packs()
        assert set(read) == now_known - packs_at_first and read
        digest = repository.find_snapshot("b").blocks[0].digest
        assert repository.storage.index.lookup(digest) is not None


def test_damaged_or_missing_pack_objects_are_named_by_check(url, cache, make_image):
    cli("init", "-r", url, *init_args(PLAINTEXT_MODE))
    cli("backup", "-r", url, str(make_image(1 << 20, seed=3)), "--name", "a")
    cli("backup", "-r", url, str(make_image(1 << 20, seed=4)), "--name", "b")
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        packs = sorted(backend.list("packs/"))
        a, b = repository.list_snapshots("a")[0], repository.list_snapshots("b")[0]
        changed = bytearray(backend.get(packs[0]))
        changed[100] ^= 0xFF
        backend.put(packs[0], bytes(changed))
    result = cli("check", "-r", url, "--read-data", check=False)
    assert result.returncode == EXIT_FAILURE
    damaged_by_change = result.stdout.decode() + result.stderr.decode()
    assert a.id[:8] in damaged_by_change or b.id[:8] in damaged_by_change
    with Repository.open(url) as repository:
        for pack in packs:
            repository.storage.backend.delete(pack)
    result = cli("check", "-r", url, check=False)
    assert result.returncode == EXIT_FAILURE
    report = result.stdout.decode() + result.stderr.decode()
    assert a.id[:8] in report and b.id[:8] in report
    assert "Traceback" not in report


def test_a_second_writer_from_another_cache_is_refused_naming_the_first(
        url, cache, make_image):
    cli("init", "-r", url, *init_args(PLAINTEXT_MODE))
    with Repository.open(url) as repository, repository.writer_lock("backup held by test"):
        result = cli("backup", "-r", url, str(make_image(1 << 20)), env=cache("cache-b"),
                     check=False)
    assert result.returncode == EXIT_LOCKED
    message = result.stderr.decode()
    assert "backup held by test" in message and str(os.getpid()) in message
    assert len(message.strip().splitlines()) == 1


def small_packs(url: str) -> None:
    """Packs of 512 KiB: many uploads in one backup."""
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        write_config(backend, dataclasses.replace(read_config(backend),
                                                  pack_target_bytes=512 << 10))


def pack_sizes(url: str) -> dict[str, int]:
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        return {name: backend.stat(name) for name in backend.list("packs/")}


def backup_with_packs_up(url: str, image: Path, env: dict | None = None) -> subprocess.Popen:
    """A backup of ``image`` started, returned once three of its packs are in the bucket
    (or it ended)."""
    backup = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", url,
                               str(image), "--name", "big", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, **(env or {})})
    with Repository.open(url) as repository:
        packs_before = len(repository.storage.backend.list("packs/"))
        deadline = time.monotonic() + 60
        while (len(repository.storage.backend.list("packs/")) < packs_before + 3
               and backup.poll() is None and time.monotonic() < deadline):
            time.sleep(0.02)  # polling the bucket for the backup's first packs
    return backup


def test_radosgw_killed_mid_backup_keeps_earlier_snapshots_and_a_rerun_reuses_packs(
        url, cache, make_image, s3_environment, tmp_path):
    cli("init", "-r", url, *init_args(PLAINTEXT_MODE))
    small_packs(url)
    earlier = make_image(1 << 20, seed=5)
    cli("backup", "-r", url, str(earlier), "--name", "earlier")
    image = make_image(48 << 20, seed=6)
    backup = backup_with_packs_up(url, image)
    s3_environment.cluster.kill_gateway()
    try:
        out, err = backup.communicate(timeout=5) if backup.poll() is not None else (None, None)
    finally:
        s3_environment.cluster.start_gateway()
    if out is None:
        out, err = backup.communicate(timeout=300)
    assert backup.returncode in (0, EXIT_IO), err.decode()
    if backup.returncode:
        assert len(err.decode().strip().splitlines()) == 1 and b"Traceback" not in err

    cli("restore", "-r", url, "earlier", str(tmp_path / "earlier.img"))
    assert sha256(tmp_path / "earlier.img") == sha256(earlier)
    rerun = json.loads(cli("backup", "-r", url, str(image), "--name", "big", "--json").stdout)
    if backup.returncode:
        assert rerun["space"]["stored_bytes"] < image.stat().st_size - (1 << 20)
    cli("restore", "-r", url, "big", str(tmp_path / "big.img"))
    assert sha256(tmp_path / "big.img") == sha256(image)


def test_a_backup_that_outlasts_its_retries_fails_in_one_line_and_a_rerun_reuses_its_packs(
        url, cache, make_image, s3_environment, tmp_path):
    cli("init", "-r", url, *init_args(PLAINTEXT_MODE))
    small_packs(url)
    earlier = make_image(1 << 20, seed=7)
    cli("backup", "-r", url, str(earlier), "--name", "earlier")
    before = pack_sizes(url)
    image = make_image(48 << 20, seed=8)
    backup = backup_with_packs_up(url, image, env={"AWS_MAX_ATTEMPTS": "2"})
    assert backup.poll() is None, "the backup ended before the gateway could be killed"
    s3_environment.cluster.kill_gateway()
    try:  # the gateway stays down until the backup gave up
        _, err = backup.communicate(timeout=300)
    finally:
        s3_environment.cluster.start_gateway()
    assert backup.returncode == EXIT_IO, err.decode()
    assert len(err.decode().strip().splitlines()) == 1 and b"Traceback" not in err, err
    assert [s["name"] for s in snapshots(url)] == ["earlier"]

    went_up = {name: size for name, size in pack_sizes(url).items() if name not in before}
    assert len(went_up) >= 3
    cli("backup", "-r", url, str(image), "--name", "big")
    rerun = {name: size for name, size in pack_sizes(url).items()
             if name not in before and name not in went_up}
    # Without reuse the rerun would store the whole (incompressible) image again.
    assert sum(rerun.values()) <= image.stat().st_size - sum(went_up.values()) + (256 << 10)
    cli("restore", "-r", url, "big", str(tmp_path / "big.img"))
    assert sha256(tmp_path / "big.img") == sha256(image)


def test_a_lost_key_object_is_put_back_by_import_and_repair_rebuilds_the_cache(
        url, cache, make_image, tmp_path):
    cli("init", "-r", url, *init_args(REPOKEY_MODE))
    image = make_image(1 << 20, seed=7)
    cli("backup", "-r", url, str(image), "--name", "a")
    cli("key", "export", "-r", url, str(tmp_path / "key.export"))
    with Repository.open(url) as repository:
        repository.storage.backend.delete(KEY_FILE)
    assert cli("list", "-r", url, check=False).returncode != 0
    cli("key", "import", "-r", url, str(tmp_path / "key.export"))
    assert cli("check", "-r", url, "--repair", "--read-data", check=False).returncode == 0
    cli("restore", "-r", url, "a", str(tmp_path / "a.img"))
    assert sha256(tmp_path / "a.img") == sha256(image)


@pytest.mark.parametrize("where, named", [
    ("s3://no-such-bucket-here/vm1", "does not exist"),
    ("s3://{bucket}/nothing-here", "not a diskvault repository")])
def test_a_missing_bucket_or_repository_is_one_line_naming_it(
        s3_environment, cache, where, named):
    result = cli("list", "-r", where.format(bucket=s3_environment.bucket), check=False)
    message = result.stderr.decode()
    assert result.returncode == EXIT_BAD_INPUT and named in message
    assert len(message.strip().splitlines()) == 1
