"""Rollback and withheld records on a real radosgw: a record object deleted behind this
host's back is reported, one deleted by this host is not, and a prune undone (which no
series shows) is reported by the generation counter. Two "hosts" are two state
folders (XDG_STATE_HOME) on one machine."""

from __future__ import annotations

import json
import uuid

import boto3

from ..conftest import run_cli, write_image

EXIT_FAILURE = 1


def test_a_record_deleted_from_the_bucket_is_reported_and_one_this_host_deleted_is_not(
        s3_environment, tmp_path, monkeypatch):
    url = f"s3://{s3_environment.bucket}/rollback-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    image = write_image(tmp_path / "vm1.img", 200_000, "random", seed=5)
    ids = [json.loads(run_cli("backup", "-r", url, str(image), "--name", "vm1", "--json",
                              check=True).stdout)["id"] for _ in range(3)]
    run_cli("delete", "-r", url, ids[2], check=True)  # removed here: not a rollback
    run_cli("list", "-r", url, check=True)

    client = boto3.client("s3", endpoint_url=s3_environment.endpoint,
                          aws_access_key_id=s3_environment.access_key,
                          aws_secret_access_key=s3_environment.secret_key,
                          region_name="us-east-1")
    key = f"{url.split('/', 3)[3]}/snapshots/{ids[1]}.json"
    client.delete_object(Bucket=s3_environment.bucket, Key=key)  # withheld, or rolled back

    reported = run_cli("backup", "-r", url, str(image), "--name", "vm1")
    assert reported.returncode == EXIT_FAILURE
    [line] = reported.stderr.decode().strip().splitlines()
    assert line.startswith(f"diskvault: error: snapshot {ids[1][:8]} of vm1, seen here on ")
    assert f"is gone from {url}: the repository was rolled back" in line
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "another-host"))
    listed = json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)
    assert [s["id"] for s in listed] == ids[:1]  # a host that never saw it has nothing to say


def test_a_prune_undone_in_the_bucket_is_reported_by_the_generation_counter(
        s3_environment, tmp_path):
    """The pruned record put back and the newest generation removed, as a restore of the
    bucket's older state would: every series still has the newest snapshot this host saw,
    so only the counter tells."""
    url = f"s3://{s3_environment.bucket}/rollback-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    image = write_image(tmp_path / "vm1.img", 200_000, "random", seed=6)
    ids = [json.loads(run_cli("backup", "-r", url, str(image), "--name", "vm1", "--json",
                              check=True).stdout)["id"] for _ in range(2)]
    client = boto3.client("s3", endpoint_url=s3_environment.endpoint,
                          aws_access_key_id=s3_environment.access_key,
                          aws_secret_access_key=s3_environment.secret_key,
                          region_name="us-east-1")
    prefix = url.split("/", 3)[3]
    record_key = f"{prefix}/snapshots/{ids[0]}.json"
    record = client.get_object(Bucket=s3_environment.bucket, Key=record_key)["Body"].read()
    run_cli("prune", "-r", url, "--keep-last", "1", check=True)  # counted as generation 3

    client.put_object(Bucket=s3_environment.bucket, Key=record_key, Body=record)
    client.delete_object(Bucket=s3_environment.bucket, Key=f"{prefix}/generations/3")
    reported = run_cli("list", "-r", url)
    assert reported.returncode == EXIT_FAILURE
    [line] = reported.stderr.decode().strip().splitlines()
    assert line.startswith(f"diskvault: error: the generation counter of {url} is 2, below "
                           f"the 3 seen here on "), line
    run_cli("list", "-r", url, "--accept-missing", check=True)
    listed = json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)
    assert [s["id"] for s in listed] == ids
