"""A write-only client on a real radosgw: a (sub)user whose bucket policy denies s3:DeleteObject
backs up, lists, restores and checks (nothing it needs deletes; what it could not remove
expires), and its prune fails at once in one line before touching anything; the
administrator's prune then removes the client's leftover registrations and runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from diskvault.errors import EXIT_NO_PERMISSION
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, run_cli, write_image

POLICY = """{{"Version": "2012-10-17", "Statement": [
  {{"Effect": "Deny", "Principal": {{"AWS": ["arn:aws:iam:::user/diskvault:{name}"]}},
    "Action": ["s3:DeleteObject"], "Resource": ["arn:aws:s3:::{bucket}/*"]}}]}}"""


@pytest.fixture
def write_only(s3_environment, tmp_path: Path, monkeypatch):
    """(url, environment of a backup host that may not delete): a bucket of its own, and a
    subuser of the session's user (the administrator) whom its policy denies s3:DeleteObject."""
    if s3_environment.cluster is None:
        pytest.skip("needs the test cluster itself, to add a user")
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bucket = f"write-only-{uuid.uuid4().hex[:12]}"
    name = f"host-{uuid.uuid4().hex[:8]}"
    access_key, secret_key = s3_environment.cluster.add_subuser(name)
    admin = boto3.client("s3", endpoint_url=s3_environment.endpoint, region_name="us-east-1",
                         aws_access_key_id=s3_environment.access_key,
                         aws_secret_access_key=s3_environment.secret_key)
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_policy(Bucket=bucket, Policy=POLICY.format(name=name, bucket=bucket))
    return f"s3://{bucket}/repo", {"AWS_ACCESS_KEY_ID": access_key,
                                   "AWS_SECRET_ACCESS_KEY": secret_key}


def test_a_client_that_may_not_delete_backs_up_and_restores_but_may_not_prune(
        write_only, tmp_path: Path):
    url, client = write_only
    run_cli("init", "-r", url, "--encryption", "none", "--chunk-size", str(SMALL_CHUNKS),
            check=True)  # the administrator
    image = write_image(tmp_path / "vm.img", 512 << 10, seed=7)
    for _ in range(2):
        run_cli("backup", "-r", url, str(image), "--name", "vm", env=client, check=True)
    listed = json.loads(run_cli("list", "-r", url, "--json", env=client, check=True).stdout)
    assert len(listed) == 2
    with Repository.open(url) as repository:  # each counted, put if absent: no delete
        assert repository.storage.snapshots.generations.numbers() == [1, 2]
    run_cli("restore", "-r", url, "latest", str(tmp_path / "restored.img"), env=client,
            check=True)
    assert (tmp_path / "restored.img").read_bytes() == image.read_bytes()
    run_cli("check", "-r", url, "--read-data", env=client, check=True)

    refused = run_cli("prune", "-r", url, "--keep-last", "1", env=client)
    assert refused.returncode == EXIT_NO_PERMISSION, refused.stderr.decode()
    lines = refused.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "prune deletes objects" in lines[0], lines
    assert len(json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)) == 2

    pruned = run_cli("prune", "-r", url, "--keep-last", "1")  # the administrator
    assert pruned.returncode == 0, pruned.stderr.decode()
    assert len(json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)) == 1
