"""The S3 client of a repository: its retry and checksum settings, the attempts a user may
set (AWS_MAX_ATTEMPTS), the counting of requests, and the small helpers every S3 request
shares. Imported only with store/backends/s3.py, when an ``s3://`` repository is opened.

The client is botocore's own (what boto3.client returns, without boto3 and s3transfer around
it: their import cost a cold start 0.25 s and we use neither), made by a session whose data
loader knows S3 is there instead of listing all 400 services' folders to find it."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections import Counter

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.loaders import Loader

from ...errors import BadInput, ObjectStoreUnusable

MAX_ATTEMPTS = 8  # botocore "standard" retries: throttling, 5xx, dropped connections


def attempts_setting(environ: dict[str, str]) -> int:
    """AWS_MAX_ATTEMPTS as the AWS tools read it (attempts per request, the first included);
    botocore would ignore it beside our explicit retry configuration."""
    text = environ.get("AWS_MAX_ATTEMPTS")
    if not text:
        return MAX_ATTEMPTS
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"AWS_MAX_ATTEMPTS={text!r} is not a number of attempts; set it to a "
                       f"whole number from 1 (default {MAX_ATTEMPTS})")
    return int(text)


def make_client(endpoint: str | None, environ: dict[str, str], attempts: int = MAX_ATTEMPTS):
    config = Config(
        # exponential backoff with jitter on throttling, 5xx and dropped connections
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},  # works with any endpoint, no wildcard DNS needed
        # S3 clones (RGW 16) know neither flexible checksums nor their aws-chunked trailers;
        # integrity of what we send is body_check's (below), of what we read blake3
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10, read_timeout=60, max_pool_connections=16)
    session = botocore.session.get_session()
    session.register_component("data_loader", _S3Loader(session))
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") \
        or session.get_config_variable("region") or "us-east-1"
    try:
        return session.create_client("s3", endpoint_url=endpoint, region_name=region,
                                     config=config)
    except ValueError as error:  # botocore's "Invalid endpoint: ..."
        raise ObjectStoreUnusable(f"{error}; set DISKVAULT_S3_ENDPOINT to a URL such as "
                                  f"https://s3.example.net") from None


class _S3Loader(Loader):
    """botocore's data loader (AWS_DATA_PATH kept), which knows that S3 is a service:
    botocore checks the name against a listing of every service's folder (900 listdirs and
    2,800 stats, a quarter of a second) before it loads the one model it needs."""

    def __init__(self, session):
        data_path = session.get_config_variable("data_path")
        super().__init__(extra_search_paths=[
            os.path.expanduser(os.path.expandvars(path))
            for path in (data_path.split(os.pathsep) if data_path else ())])

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


def body_check(client, data, locked: bool = False) -> dict:
    """The arguments of a body's one check by the server, so that a body damaged on its way
    is refused, not stored: over plain HTTP botocore signs the body's SHA-256 (SigV4) and the
    server refuses a body that does not match it (XAmzContentSHA256Mismatch), so an MD5 of it
    too would only cost a second pass over every byte (0.45 s per 512 MiB); over HTTPS
    botocore signs no body (TLS guards the link) and Content-MD5 is the check (BadDigest).
    A put with a retention (``locked``) always sends Content-MD5: Object Lock requires it.
    What is read back is checked by blake3 and the packs' own checksums, on every read."""
    if client.meta.endpoint_url.startswith("http://") and not locked:
        return {}
    return {"ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode()}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class RequestCounter:
    """Requests sent to the object store, by operation (PutObject, GetObject, ...), retries
    included: what a command cost, for tests, ``--debug`` and a backup's ``--json``."""

    def __init__(self, client):
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self._counts[operation] += 1

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by operation."""
        with self._lock:
            return dict(self._counts)

    def summary(self) -> str:
        counts = self.snapshot()
        return f"{sum(counts.values())} (" + ", ".join(
            f"{operation} {count}" for operation, count in sorted(counts.items())) + ")"
