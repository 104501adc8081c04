"""What a user of an s3:// repository reads when the store cannot be used: one line of
diskvault's own (exit 2 for a configuration to fix), never a botocore traceback; and local
commands never pay for importing boto3. Runs against the session's real Ceph."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diskvault.errors import EXIT_BAD_INPUT, BadInput, ObjectStoreUnusable

from ...ceph import S3Server, free_port


@pytest.fixture
def s3(s3_environment: S3Server):
    from diskvault.store.backends import s3
    return s3


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_wrong_credentials_are_one_line_naming_the_variables(s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    backend = s3.open_s3_backend("s3://diskvault-tests/wrong-keys")
    with pytest.raises(ObjectStoreUnusable) as caught:
        backend.get("config")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "AWS_SECRET_ACCESS_KEY" in one_line(caught.value)


def test_a_missing_bucket_is_named(s3):
    backend = s3.open_s3_backend("s3://no-such-bucket-here/vm1")
    with pytest.raises(ObjectStoreUnusable) as caught:
        backend.get("config")
    assert "'no-such-bucket-here' does not exist" in one_line(caught.value)


def test_an_unreachable_endpoint_is_named_after_the_retries(s3, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    monkeypatch.setenv("DISKVAULT_S3_ENDPOINT", endpoint)
    backend = s3.open_s3_backend("s3://diskvault-tests/vm1", attempts=2)
    with pytest.raises(ObjectStoreUnusable) as caught:
        backend.put("config", b"x")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"cannot reach the object store at {endpoint}" in one_line(caught.value)


@pytest.mark.parametrize("setting", ["0", "two", "-1"])
def test_an_attempts_setting_that_is_no_count_is_bad_input_naming_it(s3, monkeypatch, setting):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", setting)
    with pytest.raises(BadInput) as caught:
        s3.open_s3_backend("s3://diskvault-tests/vm1")
    assert f"AWS_MAX_ATTEMPTS={setting!r}" in one_line(caught.value)


@pytest.mark.parametrize("url", ["s3://", "s3://b1/vm1", "s3://Backups/vm1",
                                 "s3://backups/a//b", "http://backups/vm1"])
def test_urls_that_name_no_usable_bucket_or_prefix_are_bad_input(s3, url):
    with pytest.raises(BadInput):
        s3.open_s3_backend(url)


def test_keys_no_object_name_can_be_are_foreign_not_objects(s3):
    backend = s3.open_s3_backend("s3://diskvault-tests/foreign-keys")
    backend.put("packs/ab/1.pack", b"x")
    for key in ("foreign-keys/packs/", "foreign-keys/packs//2.pack"):
        backend.client.put_object(Bucket=backend.bucket, Key=key, Body=b"")
    assert backend.list("packs/") == ["packs/ab/1.pack"]
    assert backend.list_foreign("packs/") == ["packs/", "packs//2.pack"]
    backend.close()


def test_local_commands_never_import_boto3():
    code = "import sys, diskvault.cli.main; print('boto3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
