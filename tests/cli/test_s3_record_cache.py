"""Snapshot records of an S3 repository cached on this host (store/host/record_cache.py),
on a real radosgw: a warm `list`/`info` costs the same requests with 2 or 12 snapshots, a
copy in the cache that was altered is refused and fetched again, a record deleted in the
bucket leaves the listing and the cache, and a `copy` with nothing to copy makes no lock."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

import pytest

from diskvault.store.format.snapshots import SnapshotRecord, record_name
from diskvault.store.repository import Repository

from ..conftest import SMALL_CHUNKS, in_both_modes, init_args, run_cli, write_image

encryption = in_both_modes()


@pytest.fixture
def new_url(s3_environment, tmp_path, monkeypatch):
    """new_url(snapshots, encryption) -> an initialised repository holding that many
    snapshots (one backup, then copies of its record under new ids: real, sealed records)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    image = write_image(tmp_path / "vm.img", 64 << 10, seed=3)

    def make(snapshots: int, encryption: str = "none") -> str:
        url = f"s3://{s3_environment.bucket}/records-{uuid.uuid4().hex[:12]}"
        run_cli("init", "-r", url, *init_args(encryption), "--chunk-size", str(SMALL_CHUNKS),
                check=True)
        run_cli("backup", "-r", url, str(image), "--name", "vm", check=True)
        with Repository.open(url) as repository:
            first = repository.find_snapshot(repository.list_snapshots()[0].id)
            for _ in range(snapshots - 1):
                repository.storage.snapshots.save(
                    dataclasses.replace(first, id=SnapshotRecord.new_id()))
        return url
    return make


def listed(url: str) -> tuple[list[str], dict[str, int]]:
    """(names of the snapshots `list` shows, the requests it made, `open` included)."""
    with Repository.open(url) as repository:
        names = [record.name for record in repository.list_snapshots()]
        return names, repository.storage.requests_made()


def informed(url: str) -> dict[str, int]:
    """The requests of what `info latest` reads: the snapshot and the totals."""
    with Repository.open(url) as repository:
        repository.find_snapshot("latest")
        repository.totals()
        return repository.storage.requests_made()


def cache_folder(url: str) -> Path:
    with Repository.open(url) as repository:
        return repository.storage.index.path.parent / "snapshots"


def test_a_warm_list_and_info_cost_the_same_requests_with_2_or_12_snapshots(new_url):
    few, many = new_url(2), new_url(12)
    listed(few)
    assert listed(many)[1]["GetObject"] >= 12  # every record fetched once...

    warm = {url: (listed(url)[1], informed(url)) for url in (few, many)}
    assert warm[few] == warm[many]  # ...and then none: a LIST, whatever their number
    assert warm[many][0]["GetObject"] == 1  # the config (the look for a sealed record cached)
    assert listed(many)[0] == ["vm"] * 12
    assert sorted(path.stat().st_mode & 0o777 for path in cache_folder(many).iterdir()) \
        == [0o600] * 12
    assert cache_folder(many).stat().st_mode & 0o777 == 0o700


def test_a_record_altered_in_the_cache_is_refused_and_fetched_again(new_url, encryption):
    url = new_url(2, encryption)
    listed(url)  # warms the cache
    warm = listed(url)[1]
    folder = cache_folder(url)
    first, second = sorted(folder.iterdir())
    original = first.read_bytes()
    if encryption == "none":  # a changed field: the checksum no longer matches
        first.write_bytes(original.replace(b'"name":"vm"', b'"name":"xx"'))
    else:  # a changed byte: the seal no longer opens
        first.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    names, requests = listed(url)
    assert names == ["vm", "vm"]
    assert requests["GetObject"] == warm["GetObject"] + 1  # that record, fetched again
    assert first.read_bytes() == original  # the cache holds the bucket's copy again

    first.write_bytes(second.read_bytes())  # a whole record, but another snapshot's
    with Repository.open(url) as repository:
        ids = {record.id for record in repository.list_snapshots()}
    assert ids == {path.name.removesuffix(".json") for path in (first, second)}
    assert first.read_bytes() == original


def test_a_record_deleted_in_the_bucket_leaves_list_and_the_cache(new_url):
    url = new_url(3)
    listed(url)
    with Repository.open(url) as repository:
        gone = repository.list_snapshots()[0].id
        repository.storage.backend.delete(record_name(gone))  # as another host's delete
    with Repository.open(url) as repository:
        kept = {record.id for record in repository.list_snapshots()}
    assert len(kept) == 2 and gone not in kept
    assert {path.name for path in cache_folder(url).iterdir()} == {f"{i}.json" for i in kept}


def test_a_copy_with_nothing_to_copy_only_lists_and_takes_no_lock(new_url):
    source, destination = new_url(3), new_url(1)
    run_cli("copy", "--from", source, "--to", destination, check=True)

    with Repository.open(source) as origin, \
            Repository.open(destination, writer=True) as target:
        report = target.copy_from(origin)
        made = [origin.storage.requests_made(), target.storage.requests_made()]

    assert len(report.skipped) == 3 and not report.copied
    assert all(set(requests) <= {"GetObject", "HeadObject", "ListObjectsV2"}
               for requests in made), made  # no lock, no registration: nothing written
    # snapshots/ only (a plaintext repository's open looks for a sealed record; then the
    # ids): packs/ is not listed, the index not caught up, as nothing is to be written
    assert made[1]["ListObjectsV2"] == 2, made


def test_a_cache_that_cannot_keep_a_record_costs_a_get_not_the_listing(new_url):
    url = new_url(2)
    folder = cache_folder(url)
    with Repository.open(url) as repository:
        shutil.rmtree(folder)  # gone under the command (a cleaner, a full disk)
        assert [record.name for record in repository.list_snapshots()] == ["vm", "vm"]
