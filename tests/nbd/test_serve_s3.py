"""`diskvault serve` of an encrypted repository on an object store (a real Ceph radosgw)."""

from __future__ import annotations

import uuid

from ..conftest import run_cli
from .conftest import backed_up, file_sha256, nbd_sha256, require_tools, write_layout


def test_snapshot_of_an_encrypted_s3_repository_reads_back_through_nbd(
        s3_environment, tmp_path, monkeypatch, serve):
    require_tools("nbdkit", "nbdcopy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/serve-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "repokey", check=True)
    image = write_layout(tmp_path / "disk.img")
    served = serve("-r", url, backed_up(url, image))
    assert nbd_sha256(served.uri) == file_sha256(image)
    assert served.stop()[0] == 0
