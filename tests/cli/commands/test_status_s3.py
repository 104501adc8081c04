"""A nightly backup to a bucket that cannot be reached leaves nothing in the bucket, yet the
next `status` (with the store back) shows the series failing with the error line, filed
under the repository's id as last seen at that URL (real Ceph radosgw, tests/ceph.py)."""

import json
import socket
import sys
import uuid

from ...conftest import run_cli


def closed_port_url() -> str:
    """An endpoint where nothing listens: the store is away."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_an_unreachable_bucket_is_remembered_under_the_repository_id(
        s3_environment, tmp_path, make_image):
    url = f"s3://{s3_environment.bucket}/status-{uuid.uuid4().hex[:12]}"
    image = make_image(64 * 1024, name="vm1.img")
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    run_cli("backup", "-r", url, str(image), check=True)
    said = tmp_path / "said.json"
    hook = (f"{sys.executable} -c \"import os, json; json.dump(dict(os.environ), "
            f"open('{said}', 'w'))\"")
    away = run_cli("backup", "-r", url, str(image), "--on-failure", hook,
                   env={"DISKVAULT_S3_ENDPOINT": closed_port_url(), "AWS_MAX_ATTEMPTS": "1"})
    assert away.returncode != 0
    told = json.loads(said.read_text())
    found = json.loads(run_cli("status", "-r", url, "--json", check=True).stdout)
    (series,) = found["series"]
    assert series["failing"] and series["latest"] is not None
    assert series["last_failure"]["exit_code"] == away.returncode
    assert series["last_failure"]["error"] in away.stderr.decode()
    assert told["DISKVAULT_REPOSITORY_ID"] and told["DISKVAULT_REPOSITORY"] == url
