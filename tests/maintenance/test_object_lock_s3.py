"""S3 Object Lock on a real radosgw (tests/ceph.py; a bucket made with Object Lock): init
refuses a bucket without it; packs (multipart uploads too) and snapshot records are put
retained, nothing else is; prune keeps what the lock holds and says until when, delete
refuses it unless governance is bypassed, compliance never; compact leaves locked packs for
later, frees them (every version) once the lock runs out, and extends the retention of packs
in use; protect puts the record under a legal hold and unprotect lifts it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from diskvault.errors import EXIT_BAD_INPUT, EXIT_NO_PERMISSION

from ..conftest import run_cli, write_image

MiB = 1024 * 1024
DEADLINE_S = 60.0


@pytest.fixture
def client(s3_locked_environment):
    import boto3

    server = s3_locked_environment
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


@pytest.fixture
def prefix(s3_locked_environment, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return f"ol-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(prefix, ceph_locked_bucket) -> str:
    return f"s3://{ceph_locked_bucket}/{prefix}"


def cli(*args: str, check: bool = True):
    return run_cli(*args, check=check)


def init(url: str, mode: str = "governance", days: int = 3) -> None:
    cli("init", "-r", url, "--encryption", "none", "--object-lock-days", str(days),
        "--object-lock-mode", mode)


def back_up(url: str, tmp_path, size: int, seed: int) -> str:
    image = write_image(tmp_path / "vm.img", size, "random", seed=seed)
    return json.loads(cli("backup", "-r", url, str(image), "--json").stdout)["id"]


def versions(client, bucket: str, prefix: str) -> tuple[dict[str, list[dict]], list[str]]:
    """Key -> its versions (each with its lock, from a HEAD), and the keys of delete markers."""
    found: dict[str, list[dict]] = {}
    answer = client.list_object_versions(Bucket=bucket, Prefix=prefix + "/")
    for version in answer.get("Versions", ()):
        head = client.head_object(Bucket=bucket, Key=version["Key"],
                                  VersionId=version["VersionId"])
        found.setdefault(version["Key"], []).append(
            {"id": version["VersionId"], "mode": head.get("ObjectLockMode"),
             "until": head.get("ObjectLockRetainUntilDate"),
             "hold": head.get("ObjectLockLegalHoldStatus")})
    return found, [marker["Key"] for marker in answer.get("DeleteMarkers", ())]


def one_line_error(result) -> str:
    [line] = result.stderr.decode().splitlines()
    return line


def test_init_needs_a_bucket_made_with_object_lock(s3_locked_environment, prefix, tmp_path):
    plain = f"s3://{s3_locked_environment.bucket}/{prefix}"
    result = cli("init", "-r", plain, "--encryption", "none", "--object-lock-days", "3",
                 check=False)
    assert result.returncode == EXIT_BAD_INPUT
    assert "has no Object Lock" in one_line_error(result)
    assert cli("list", "-r", plain, check=False).returncode == EXIT_BAD_INPUT  # nothing made

    folder = cli("init", "-r", str(tmp_path / "repo"), "--encryption", "none",
                 "--object-lock-days", "3", check=False)
    assert folder.returncode == EXIT_BAD_INPUT and "needs an S3 bucket" in one_line_error(folder)
    assert not (tmp_path / "repo").exists()


def test_packs_and_records_are_put_retained_and_nothing_else_is(url, client, prefix,
                                                                ceph_locked_bucket, tmp_path):
    init(url, days=3)
    before = datetime.now(timezone.utc)
    back_up(url, tmp_path, 12 * MiB, seed=1)  # its pack goes up as a multipart upload
    after = datetime.now(timezone.utc)

    found, markers = versions(client, ceph_locked_bucket, prefix)
    packs = [k for k in found if "/packs/" in k]
    records = [k for k in found if "/snapshots/" in k]
    assert packs and len(records) == 1 and markers == []
    assert any(client.head_object(Bucket=ceph_locked_bucket, Key=k)["ContentLength"] > 8 * MiB
               for k in packs)
    for key in packs + records:
        [version] = found[key]
        days = 3 + (1 if key in packs else 0)  # packs: a day's margin over their record
        assert version["mode"] == "GOVERNANCE", key
        assert before + timedelta(days=days, seconds=-2) <= version["until"] \
            <= after + timedelta(days=days, seconds=2), key
    for key in set(found) - set(packs) - set(records):  # config, lock spare, ...
        assert all(v["mode"] is None for v in found[key]), key


def test_retained_puts_send_content_md5_even_over_plain_http(url, tmp_path):
    """Over plain HTTP a body's signed SHA-256 is its only check, but a put that carries a
    retention must also send Content-MD5 (AWS refuses it otherwise; radosgw does not, so
    only the headers themselves can show it): a whole PUT and every part of an upload."""
    from diskvault.store.repository import Repository

    init(url, days=1)
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        assert backend.client.meta.endpoint_url.startswith("http://")
        sent: list[tuple[str, dict, bytes]] = []

        def note(request, event_name, **_) -> None:
            body = request.body
            data = body.read() if hasattr(body, "read") else body
            if hasattr(body, "seek"):
                body.seek(0)
            headers = {name.lower(): value.decode() if isinstance(value, bytes) else value
                       for name, value in request.headers.items()}
            sent.append((event_name.rsplit(".", 1)[-1], headers, bytes(data)))

        for operation in ("PutObject", "UploadPart"):
            backend.client.meta.events.register(f"before-send.s3.{operation}", note)
        backend.put("packs/ab/" + "ab" * 32 + ".pack", os.urandom(64 << 10))
        backend.put("packs/cd/" + "cd" * 32 + ".pack", os.urandom(9 << 20))

    assert [operation for operation, _, _ in sent] == ["PutObject", "UploadPart", "UploadPart"]
    for operation, headers, body in sent:
        assert headers.get("x-amz-object-lock-mode") == "GOVERNANCE" or operation == "UploadPart"
        expected = base64.b64encode(hashlib.md5(body).digest()).decode()
        assert headers.get("content-md5") == expected, operation


def test_prune_keeps_locked_snapshots_and_delete_needs_bypass_in_governance(
        url, client, prefix, ceph_locked_bucket, tmp_path):
    init(url)
    first = back_up(url, tmp_path, MiB, seed=2)
    back_up(url, tmp_path, MiB, seed=3)

    plan = json.loads(cli("prune", "-r", url, "--keep-last", "1", "--json").stdout)
    [locked] = [d for d in plan["decisions"] if d["id"] == first]
    assert plan["removed"] == 0 and locked["kept_because"].startswith(
        "locked by S3 Object Lock until ")

    refused = cli("delete", "-r", url, first, check=False)
    assert refused.returncode == EXIT_NO_PERMISSION
    assert "--bypass-governance" in one_line_error(refused)
    cli("delete", "-r", url, first, "--bypass-governance")
    found, markers = versions(client, ceph_locked_bucket, prefix)
    assert not [k for k in found if first in k] and markers == []  # every version went


def test_compliance_lock_is_never_bypassed(url, tmp_path):
    init(url, mode="compliance", days=1)
    snapshot = back_up(url, tmp_path, 256 * 1024, seed=4)

    bypass = cli("delete", "-r", url, snapshot, "--bypass-governance", check=False)
    assert bypass.returncode == EXIT_BAD_INPUT and "compliance" in one_line_error(bypass)
    refused = cli("delete", "-r", url, snapshot, check=False)
    assert refused.returncode == EXIT_NO_PERMISSION and "it can be deleted after that" in \
        one_line_error(refused)
    assert [s["id"] for s in json.loads(cli("list", "-r", url, "--json").stdout)] == [snapshot]


def test_compact_frees_locked_packs_only_once_the_lock_runs_out_and_extends_packs_in_use(
        url, client, prefix, ceph_locked_bucket, tmp_path):
    init(url, days=2)
    gone = back_up(url, tmp_path, 2 * MiB, seed=5)
    kept = back_up(url, tmp_path, 2 * MiB, seed=6)
    kept_sha = hashlib.sha256((tmp_path / "vm.img").read_bytes()).hexdigest()
    cli("delete", "-r", url, gone, "--bypass-governance")

    held = json.loads(cli("compact", "-r", url, "--json").stdout)
    assert held["packs_locked"] >= 1 and held["packs_deleted"] == 0
    assert datetime.fromisoformat(held["locked_until"]) > datetime.now(timezone.utc)

    # Let every lock run out within seconds (a governance bypass may shorten it).
    soon = datetime.now(timezone.utc) + timedelta(seconds=2)
    packs = [k for k in versions(client, ceph_locked_bucket, prefix)[0] if "/packs/" in k]
    for key in packs:
        client.put_object_retention(Bucket=ceph_locked_bucket, Key=key, BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})
    deadline = time.monotonic() + DEADLINE_S
    while datetime.now(timezone.utc) <= soon + timedelta(seconds=1):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    freed = json.loads(cli("compact", "-r", url, "--json").stdout)
    assert freed["packs_deleted"] == held["packs_locked"] and freed["packs_locked"] == 0
    assert freed["bytes_freed"] > MiB and freed["packs_retained"] == len(packs) - held["packs_locked"]
    found, markers = versions(client, ceph_locked_bucket, prefix)
    assert len([k for k in found if "/packs/" in k]) == freed["packs_retained"] and markers == []
    for key in (k for k in found if "/packs/" in k):  # in use: locked again for the full term
        assert found[key][0]["until"] > datetime.now(timezone.utc) + timedelta(days=2)
    restored = tmp_path / "restored.img"
    cli("restore", "-r", url, kept, str(restored))
    assert hashlib.sha256(restored.read_bytes()).hexdigest() == kept_sha


def test_protect_holds_the_record_and_unprotect_lifts_the_hold(url, client, prefix,
                                                               ceph_locked_bucket, tmp_path):
    init(url)
    snapshot = back_up(url, tmp_path, 256 * 1024, seed=7)
    record = f"{prefix}/snapshots/{snapshot}.json"

    cli("protect", "-r", url, snapshot)
    assert client.head_object(Bucket=ceph_locked_bucket, Key=record)[
        "ObjectLockLegalHoldStatus"] == "ON"
    cli("unprotect", "-r", url, snapshot)
    assert client.head_object(Bucket=ceph_locked_bucket, Key=record)[
        "ObjectLockLegalHoldStatus"] == "OFF"


def test_copy_into_an_object_lock_repository_locks_what_it_writes_and_holds_protected_records(
        url, client, prefix, ceph_locked_bucket, tmp_path):
    source = tmp_path / "source"
    cli("init", "-r", str(source), "--encryption", "none")
    first = back_up(str(source), tmp_path, 512 * 1024, seed=8)
    second = back_up(str(source), tmp_path, 512 * 1024, seed=9)
    cli("protect", "-r", str(source), first)
    init(url)

    report = json.loads(cli("copy", "--from", str(source), "--to", url, "--json").stdout)

    assert report["protected"] == [first]
    found, _ = versions(client, ceph_locked_bucket, prefix)
    holds = {key.rsplit("/", 1)[-1]: v[0]["hold"] for key, v in found.items()
             if "/snapshots/" in key}
    assert holds[f"{first}.json"] == "ON" and holds[f"{second}.json"] in (None, "OFF")
    assert all(v[0]["mode"] == "GOVERNANCE" for key, v in found.items()
               if "/packs/" in key or "/snapshots/" in key)


def test_bypass_governance_and_extending_are_refused_where_there_is_no_object_lock(tmp_path):
    root = str(tmp_path / "repo")
    cli("init", "-r", root, "--encryption", "none")
    result = cli("prune", "-r", root, "--keep-last", "1", "--bypass-governance", check=False)
    assert result.returncode == EXIT_BAD_INPUT and "has no Object Lock" in one_line_error(result)
    result = cli("extend-retention", "-r", root, check=False)
    assert result.returncode == EXIT_BAD_INPUT and "has no Object Lock" in one_line_error(result)


def test_a_delete_by_key_only_hides_a_locked_pack_and_removing_the_marker_brings_it_back(
        url, client, prefix, ceph_locked_bucket, tmp_path, monkeypatch):
    init(url)
    back_up(url, tmp_path, MiB, seed=10)
    pack = max((k for k in versions(client, ceph_locked_bucket, prefix)[0] if "/packs/" in k),
               key=lambda k: client.head_object(Bucket=ceph_locked_bucket, Key=k)["ContentLength"])
    client.delete_object(Bucket=ceph_locked_bucket, Key=pack)  # a thief's delete: a marker
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-host"))

    assert cli("check", "-r", url, check=False).returncode == 1  # the chunks are not found
    found, markers = versions(client, ceph_locked_bucket, prefix)
    assert markers == [pack] and len(found[pack]) == 1  # the version is intact

    answer = client.list_object_versions(Bucket=ceph_locked_bucket, Prefix=prefix + "/")
    for marker in answer["DeleteMarkers"]:
        client.delete_object(Bucket=ceph_locked_bucket, Key=marker["Key"],
                             VersionId=marker["VersionId"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-third-host"))
    assert cli("check", "-r", url, check=False).returncode == 0


def test_extend_retention_locks_every_pack_again_for_the_full_term(url, client, prefix,
                                                                   ceph_locked_bucket, tmp_path):
    init(url, days=2)
    back_up(url, tmp_path, MiB, seed=11)
    packs = [k for k in versions(client, ceph_locked_bucket, prefix)[0] if "/packs/" in k]
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    for key in packs:  # as if written long ago
        client.put_object_retention(Bucket=ceph_locked_bucket, Key=key, BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})

    answer = json.loads(cli("extend-retention", "-r", url, "--json").stdout)

    assert answer["packs_extended"] == len(packs)
    found, _ = versions(client, ceph_locked_bucket, prefix)
    for key in packs:
        assert found[key][0]["until"] > datetime.now(timezone.utc) + timedelta(days=2)
