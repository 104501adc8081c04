"""What a restore and a listing ask of a real radosgw: the packs are listed once, after the
reader's registration (the listing a compaction elsewhere must not undercut); `list`, which
never reads a chunk, lists no packs at all; and a damaged range still fails the restore."""

from __future__ import annotations

import uuid

import pytest

from diskvault.errors import CorruptData
from diskvault.store.backends import s3
from diskvault.store.backends.s3_client import make_client
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image


@pytest.fixture
def backed_up(s3_environment, tmp_path, monkeypatch) -> tuple[str, bytes]:
    """A bucket repository holding one snapshot of a 4 MiB image, and the image's bytes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/restore-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    image = write_image(tmp_path / "vm.img", 4 << 20, pattern="mixed", seed=3)
    run_cli("backup", "-r", url, str(image), "--name", "vm", check=True)
    return url, image.read_bytes()


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str]]:
    """(operation, key or prefix) of every request, in order, of the S3 clients made from
    now on: a repository opened afterwards is counted from its first request."""
    sent: list[tuple[str, str]] = []

    def note(params, model, **_):
        sent.append((model.name, params.get("Key") or params.get("Prefix") or ""))

    def noting_client(*args, **kwargs):
        client = make_client(*args, **kwargs)
        client.meta.events.register("before-parameter-build.s3", note)
        return client

    monkeypatch.setattr(s3, "make_client", noting_client)
    return sent


def is_named(name: str, folder: str) -> bool:
    return f"/{folder}/" in f"/{name}"


def test_a_restore_lists_the_packs_once_and_only_after_registering(backed_up, sent, tmp_path):
    url, image = backed_up
    with Repository.open(url, reader=True) as repository:
        repository.restore(repository.find_snapshot("latest"), tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == image
    pack_listings = [at for at, (operation, name) in enumerate(sent)
                     if operation == "ListObjectsV2" and is_named(name, "packs")]
    registration = next(at for at, (operation, name) in enumerate(sent)
                        if operation == "PutObject" and is_named(name, "readers"))
    assert len(pack_listings) == 1, sent
    assert registration < pack_listings[0], sent


def test_listing_snapshots_lists_no_packs(backed_up, sent):
    url, _ = backed_up
    with Repository.open(url, reader=True) as repository:
        assert len(repository.list_snapshots()) == 1
    assert not [name for _, name in sent if is_named(name, "packs")], sent


def test_a_pack_range_changed_on_the_server_fails_the_restore(backed_up, tmp_path):
    url, _ = backed_up
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        pack = backend.list("packs/")[0]
        stored = bytearray(backend.get(pack))
        stored[100] ^= 0xFF  # in the first record, far from the footer
        backend.put(pack, bytes(stored))
    with Repository.open(url, reader=True) as repository:
        record = repository.find_snapshot("latest")
        with pytest.raises(CorruptData, match="offset"):
            repository.restore(record, tmp_path / "restored.img")
