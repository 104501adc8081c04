"""Request economy on a real radosgw (issue 12): what a command costs in requests is
counted by the S3 backend and reported by a backup's --json; an unchanged nightly backup
costs the same handful of requests whatever the image's chunk count."""

from __future__ import annotations

import json
import os
import uuid

from diskvault.store.repository import Repository

from ..conftest import SMALL_CHUNKS, run_cli, write_image


def backup_requests(url: str, image) -> dict[str, int]:
    result = run_cli("backup", "-r", url, str(image), "--name", "vm", "--json", check=True)
    return json.loads(result.stdout)["requests"]


def test_an_unchanged_nightly_makes_as_many_requests_for_a_small_and_a_large_image(
        s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    nightly = {}
    for mib in (1, 8):  # 4 KiB chunks: about 256 and 2048 chunks, 1 and 7 manifest blocks
        url = f"s3://{s3_environment.bucket}/requests-{uuid.uuid4().hex[:12]}"
        run_cli("init", "-r", url, "--encryption", "none", "--chunk-size", str(SMALL_CHUNKS),
                check=True)
        image = write_image(tmp_path / f"vm-{mib}.img", mib << 20, seed=mib)
        first = backup_requests(url, image)
        assert first["PutObject"] + first.get("UploadPart", 0) >= 2  # a pack, the record
        nightly[mib] = backup_requests(url, image)

    assert nightly[1] == nightly[8]
    assert "UploadPart" not in nightly[8]  # nothing new: no pack went up
    assert sum(nightly[8].values()) <= 20
    # asked in the background while the backup runs, once, for the generation's put
    assert nightly[8]["GetBucketVersioning"] == 1


def test_listing_snapshots_asks_nothing_a_writer_needs(s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/requests-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    backup_requests(url, write_image(tmp_path / "vm.img", 1 << 20))
    with Repository.open(url) as repository:
        repository.list_snapshots()
        made = repository.storage.requests_made()
    assert made.keys() <= {"GetObject", "HeadObject", "ListObjectsV2"}, made


def test_compact_dry_run_names_the_requests_that_compact_then_makes(
        s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/requests-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", "--chunk-size", str(SMALL_CHUNKS),
            check=True)
    image = write_image(tmp_path / "vm.img", 8 << 20, seed=1)
    first = json.loads(run_cli("backup", "-r", url, str(image), "--json", check=True).stdout)
    with open(image, "r+b") as changed:  # half of the first snapshot's data goes unused
        changed.write(os.urandom(4 << 20))
    run_cli("backup", "-r", url, str(image), check=True)
    run_cli("delete", "-r", url, first["id"], check=True)
    packs_before = set(pack_ids(url))

    assert "would make about" in run_cli("compact", "-r", url, "--dry-run",
                                         check=True).stdout.decode()
    dry = run_cli("compact", "-r", url, "--dry-run", "--json", check=True)
    planned = json.loads(dry.stdout)["requests"]
    done = json.loads(run_cli("compact", "-r", url, "--json", check=True).stdout)

    packs_after = set(pack_ids(url))
    assert planned["deletes"] == len(packs_before - packs_after) >= 2  # a rewrite, a delete
    assert planned["new_packs"] == len(packs_after - packs_before) == 1
    assert planned["range_gets"] >= 1
    made = done["requests"]
    assert made["GetObject"] >= planned["range_gets"] + planned["footer_reads"]
    assert sum(made.values()) >= planned["total"]


def pack_ids(url: str) -> list[str]:
    with Repository.open(url) as repository:
        return repository.storage.packs.list()


def test_a_backup_looks_for_the_writer_lock_with_a_head_and_reads_it_only_if_there(
        s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/requests-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    image = write_image(tmp_path / "vm.img", 1 << 20)
    about_the_lock: list[str] = []

    def note(request, event_name: str, **_) -> None:
        if request.url.split("?")[0].endswith("/lock"):
            about_the_lock.append(event_name.rsplit(".", 1)[-1])

    with Repository.open(url, writer=True) as repository:
        repository.storage.backend.client.meta.events.register("before-send.s3", note)
        repository.backup(image, name="vm")
    assert "HeadObject" in about_the_lock and "GetObject" not in about_the_lock
