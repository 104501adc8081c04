"""What guards the bytes of an S3 repository on their way, on a real radosgw (tests/ceph.py):
a body damaged after it was signed is refused by the server and never stored (plain HTTP:
the SigV4 signature of its SHA-256, with no Content-MD5 sent beside it), and a pack damaged
on the server is caught by the restore that reads it."""

from __future__ import annotations

import os
import uuid

import pytest

from diskvault.errors import EXIT_FAILURE, ObjectStoreFailed
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image


@pytest.fixture
def backend(s3_environment):
    from diskvault.store.backends.s3 import open_s3_backend  # botocore only when S3 is tested

    backend = open_s3_backend(f"s3://{s3_environment.bucket}/integrity-{uuid.uuid4().hex[:8]}")
    yield backend
    backend.close()


class DamageInTransit:
    """Flips one byte of every body of ``operation`` after botocore signed it, as a link
    that damages data would; keeps the headers each request was sent with."""

    def __init__(self, client, operation: str):
        self.headers: list[dict] = []
        client.meta.events.register(f"before-send.s3.{operation}", self._damage)

    def _damage(self, request, **_) -> None:
        self.headers.append(dict(request.headers))
        body = request.body
        data = bytearray(body.read() if hasattr(body, "read") else body)
        data[len(data) // 2] ^= 0x01
        request.body = bytes(data)


def test_a_put_damaged_on_its_way_is_refused_and_not_stored(backend):
    damage = DamageInTransit(backend.client, "PutObject")
    with pytest.raises(ObjectStoreFailed):
        backend.put("packs/ab/damaged.pack", os.urandom(64 << 10))
    assert backend.stat("packs/ab/damaged.pack") is None
    # plain HTTP: the signed SHA-256 is the check; no MD5 is computed beside it
    assert all("Content-MD5" not in sent for sent in damage.headers)
    assert all(sent["X-Amz-Content-SHA256"] != "UNSIGNED-PAYLOAD" for sent in damage.headers)


def test_a_part_damaged_on_its_way_fails_the_upload(backend):
    DamageInTransit(backend.client, "UploadPart")
    upload = backend.open_upload("packs/cd/damaged.pack")
    with pytest.raises(ObjectStoreFailed):
        upload.write(os.urandom(9 << 20))  # one full part goes up, one is filling
        upload.complete()
    upload.abort()
    assert backend.stat("packs/cd/damaged.pack") is None


def test_a_pack_damaged_on_the_server_fails_the_restore_naming_the_snapshot(
        s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/integrity-{uuid.uuid4().hex[:8]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    run_cli("backup", "-r", url, str(write_image(tmp_path / "vm.img", 2 << 20)), "--name",
            "vm", check=True)
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        snapshot = repository.list_snapshots("vm")[0]
        pack = max(backend.list("packs/"), key=backend.stat)  # the data's, not the manifest's
        damaged = bytearray(backend.get(pack))
        damaged[4096] ^= 0xFF  # inside the first record's stored bytes
        backend.put(pack, bytes(damaged))

    result = run_cli("restore", "-r", url, "vm", str(tmp_path / "restored.img"))
    assert result.returncode == EXIT_FAILURE
    message = result.stderr.decode()
    assert snapshot.id[:8] in message and "Traceback" not in message
    assert not (tmp_path / "restored.img").exists()
