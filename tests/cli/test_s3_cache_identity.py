"""A bucket's index cache on a real radosgw: two copies of one repository (a cloned prefix)
never share a cache, a reader never trusts an index that a compaction on another host made
stale, and a full disk under the cache is one line and exit 74. Two "hosts" are two cache
folders (XDG_CACHE_HOME) on one machine."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from diskvault.errors import EXIT_IO
from diskvault.store.format.config import PLAINTEXT_MODE
from diskvault.store.repository import Repository
from diskvault.store.restore.restore import image_pieces, write_stream

from ..conftest import SMALL_CHUNKS, init_args, run_cli, write_image
from ..fuse.conftest import require_fuse, unmount
from ..store.coordination.test_enospc import mount_tmpfs  # noqa: F401  (fixture)
from ..store.read.test_corruption import assert_one_line_error

MiB = 1024 * 1024


@pytest.fixture
def prefix_url(s3_environment):
    """prefix_url() -> a new, empty s3://bucket/prefix."""
    return lambda: f"s3://{s3_environment.bucket}/identity-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """host(name): this process and its children become the host whose cache is ``name``."""
    def become(name: str) -> None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))
    become("host-a")
    return become


def copy_prefix(server, source_url: str, target_url: str) -> None:
    """Every object under one prefix copied under another: a cloned repository."""
    client = boto3.client("s3", endpoint_url=server.endpoint,
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")
    source, target = (url.split("/", 3)[3] + "/" for url in (source_url, target_url))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket,
                                                                 Prefix=source):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=server.bucket, Key=target + item["Key"][len(source):],
                               CopySource={"Bucket": server.bucket, "Key": item["Key"]})


def backup(url: str, image: Path, name: str) -> None:
    run_cli("backup", "-r", url, str(image), "--name", name, "--no-progress", check=True)


def test_a_cloned_prefix_never_shares_the_cache_of_the_repository_it_was_cloned_from(
        s3_environment, prefix_url, host, tmp_path):
    original, clone = prefix_url(), prefix_url()
    run_cli("init", "-r", original, *init_args(PLAINTEXT_MODE), check=True)
    backup(original, write_image(tmp_path / "one.img", 1 * MiB, seed=1), "one")
    copy_prefix(s3_environment, original, clone)  # same repository id, another place
    two = write_image(tmp_path / "two.img", 1 * MiB, seed=2)
    backup(original, two, "two")  # its packs are in the original only

    with Repository.open(original) as reader:  # a long reader of the original (a mount)
        record = reader.find_snapshot("two")
        assert len(run_cli("list", "-r", clone, "--json", check=True).stdout) > 2
        image = reader.open_image(record)
        assert image.read(0, record.size) == two.read_bytes()


def test_a_restore_opened_before_a_compaction_on_another_host_reads_the_new_packs(
        prefix_url, host, tmp_path):
    url = prefix_url()
    run_cli("init", "-r", url, *init_args(PLAINTEXT_MODE), "--chunk-size", str(SMALL_CHUNKS),
            check=True)
    image = write_image(tmp_path / "vm.img", 4 * MiB, seed=1)
    backup(url, image, "vm")
    with open(image, "r+b") as changed:  # half of the first snapshot's chunks go unused
        changed.write(os.urandom(2 * MiB))
    backup(url, image, "vm")

    with Repository.open(url) as reader:  # host A reads the index, not yet registered
        older, latest = reader.list_snapshots("vm")
        host("host-b")
        run_cli("delete", "-r", url, older.id, check=True)
        compacted = run_cli("compact", "-r", url, "--json", check=True).stdout
        assert b'"packs_deleted": 0' not in compacted, compacted
        host("host-a")
        target = tmp_path / "restored.img"
        reader.restore(latest, target)
        assert target.read_bytes() == image.read_bytes()


def read_by_mount(repository: Repository, record) -> Callable[[], bytes]:
    """The mount's way: an image reader opened now, read later."""
    image = repository.open_image(record)
    return lambda: image.read(0, record.size)


def read_by_restore(repository: Repository, record) -> Callable[[], bytes]:
    """restore's and cat's way: coalesced pack ranges of the read plan."""
    def read() -> bytes:
        out = io.BytesIO()
        write_stream(image_pieces(repository.storage.chunks, record,
                                  repository.storage.pool), out)
        return out.getvalue()
    return read


@pytest.mark.parametrize("reader", [read_by_mount, read_by_restore])
def test_a_long_reader_that_meets_a_pack_compacted_away_reads_the_index_again(
        prefix_url, host, tmp_path, reader):
    url = prefix_url()
    run_cli("init", "-r", url, *init_args(PLAINTEXT_MODE), "--chunk-size", str(SMALL_CHUNKS),
            check=True)
    image = write_image(tmp_path / "vm.img", 4 * MiB, seed=1)
    backup(url, image, "vm")
    with open(image, "r+b") as changed:
        changed.write(os.urandom(2 * MiB))
    backup(url, image, "vm")

    with Repository.open(url) as repository:  # not registered: as in the window before
        older, latest = repository.list_snapshots("vm")
        read = reader(repository, repository.load_snapshot(latest.id))  # with its blocks
        host("host-b")
        run_cli("delete", "-r", url, older.id, check=True)
        run_cli("compact", "-r", url, check=True)
        assert read() == image.read_bytes()


def test_a_mount_whose_lease_lapsed_reads_on_after_a_compaction_on_another_host(
        prefix_url, host, tmp_path):
    require_fuse()
    url = prefix_url()
    run_cli("init", "-r", url, *init_args(PLAINTEXT_MODE), "--chunk-size", str(SMALL_CHUNKS),
            check=True)
    image = write_image(tmp_path / "vm.img", 4 * MiB, seed=1)
    backup(url, image, "vm")
    with open(image, "r+b") as changed:
        changed.write(os.urandom(2 * MiB))
    backup(url, image, "vm")
    older = json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)[0]["id"]
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    run_cli("mount", "-r", url, str(mountpoint), "latest", "--log-file", f"{mountpoint}.log",
            check=True)
    try:
        with Repository.open(url) as repository:  # its host slept past its reader lease
            for name in repository.storage.backend.list("readers/"):
                repository.storage.backend.delete(name)
        host("host-b")
        run_cli("delete", "-r", url, older, check=True)
        run_cli("compact", "-r", url, check=True)
        assert (mountpoint / "vm.img").read_bytes() == image.read_bytes()
    finally:
        unmount(mountpoint)


def test_a_full_disk_under_the_index_cache_is_one_line_and_exit_74(
        prefix_url, host, tmp_path, mount_tmpfs):  # noqa: F811
    url = prefix_url()
    run_cli("init", "-r", url, *init_args(PLAINTEXT_MODE), "--chunk-size", "4096",
            check=True)
    backup(url, write_image(tmp_path / "vm.img", 16 * MiB, seed=3), "vm")  # ~4000 chunks
    cache = mount_tmpfs(tmp_path / "small-cache", "128k")
    result = run_cli("info", "-r", url, env={"XDG_CACHE_HOME": str(cache)})
    assert_one_line_error(result, EXIT_IO, "disk is full")
