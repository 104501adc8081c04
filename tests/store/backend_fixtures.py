"""The backends the contract suite (test_backend_contract.py) runs against, by name. Each
opens the store at a location the test gives: a local folder, or for S3 a prefix derived
from it in the session's bucket on a real Ceph (tests/ceph.py). backend_child.py opens the
same store in another process; the S3 endpoint and keys reach it through the environment
(``FIXTURES`` names the fixture that provides them), never on its command line."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

from diskvault.store.backends.local import LocalBackend
from diskvault.store.backends.protocol import Backend

TEST_BUCKET_VARIABLE = "DISKVAULT_TEST_S3_BUCKET"
LOCKED_BUCKET_VARIABLE = "DISKVAULT_TEST_S3_LOCKED_BUCKET"
SSH_URL_VARIABLE = "DISKVAULT_TEST_SSH_URL"  # ssh://user@127.0.0.1:port of tests/sshd.py


def _local(location: str) -> LocalBackend:
    Path(location).mkdir(mode=0o700, exist_ok=True)
    return LocalBackend(Path(location))


def _s3_url(location: str, bucket_variable: str = TEST_BUCKET_VARIABLE) -> str:
    prefix = hashlib.sha256(location.encode()).hexdigest()[:16]  # one per test
    return f"s3://{os.environ[bucket_variable]}/contract/{prefix}"


def _s3(location: str) -> Backend:
    from diskvault.store.backends.s3 import open_s3_backend  # boto3 only when S3 is tested

    return open_s3_backend(_s3_url(location))


def _s3_object_lock(location: str) -> Backend:
    """A bucket with Object Lock (versioned), as a repository with a governance lock uses
    it; the contract's objects are not retained (a retained one cannot be moved or deleted:
    tests/maintenance/test_object_lock_s3.py), objects under ``retained/`` would be."""
    from diskvault.store.backends.s3 import open_s3_backend
    from diskvault.store.format.config import ObjectLockSettings

    backend = open_s3_backend(_s3_url(location, LOCKED_BUCKET_VARIABLE))
    backend.use_object_lock(ObjectLockSettings("governance", 1), {"retained/": timedelta(0)})
    return backend


def _ssh_url(location: str) -> str:
    folder = hashlib.sha256(location.encode()).hexdigest()[:16]  # one per test
    return f"{os.environ[SSH_URL_VARIABLE]}/~/contract-{folder}"


def _ssh(location: str) -> Backend:
    """Over the session's sshd (tests/sshd.py); the folder is made by the first opener (a
    create accepts an empty folder, so racing openers all do)."""
    from diskvault.errors import BadInput
    from diskvault.store.backends.ssh import open_ssh_backend

    try:
        return open_ssh_backend(_ssh_url(location), create_folders=[])
    except BadInput:
        return open_ssh_backend(_ssh_url(location))


BACKENDS = {"local": _local, "s3": _s3, "s3-object-lock": _s3_object_lock, "ssh": _ssh}
# What a kind needs before it can be opened.
FIXTURES = {"s3": "s3_environment", "s3-object-lock": "s3_locked_environment",
            "ssh": "ssh_environment"}


def open_backend(kind: str, location: str) -> Backend:
    return BACKENDS[kind](location)


def repository_location(kind: str, location: str) -> str:
    """What ``-r`` names for a repository in the store that open_backend(kind, location)
    opens."""
    if kind == "s3-object-lock":
        return _s3_url(location, LOCKED_BUCKET_VARIABLE)
    return {"s3": _s3_url, "ssh": _ssh_url}.get(kind, str)(location)
