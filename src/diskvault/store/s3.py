"""The repository in an S3 bucket (AWS, Ceph radosgw, MinIO, ...): ``S3Backend`` keeps the
Backend protocol of backend.py with boto3, the field's standard client. This module is the
only one that imports boto3, and it is itself imported only when an ``s3://`` repository is
opened, so local commands start without it.

Objects are keys ``<prefix>/<name>``. What an object store does differently from a folder:
a put is atomic by itself (no temp object); large puts and streamed uploads are multipart
uploads, and those are what is "unfinished" when a writer dies; a move is a copy then a
delete (not atomic); nothing is host-local, so ``host_mutex`` is an flock in the user's cache.
Every error of the client becomes a FileNotFoundError (a missing object) or one line of
diskvault's own (errors.py), never a botocore traceback.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                 EndpointConnectionError, NoCredentialsError,
                                 PartialCredentialsError)

from ..errors import (BadInput, ObjectStoreFailed, ObjectStoreUnusable, RepositoryReadOnly)
from .backend import check_object_name

PART_BYTES = 8 * 1024 * 1024  # s3transfer's default part size and multipart threshold
MAX_ATTEMPTS = 8  # botocore "standard" retries: throttling, 5xx, dropped connections
READ_ATTEMPTS = 3  # a body cut off mid-read is not retried by botocore: we retry the GET
PARTS_IN_FLIGHT = 16  # parts sent at once, all uploads together (= connections)
PARTS_PENDING_PER_UPLOAD = 4  # parts of one upload in flight before its writer waits
FOREIGN_REUSE_S = 5.0  # a listing's foreign keys answer a list_foreign this soon after
CONFLICT_ATTEMPTS = 5  # concurrent conditional PUTs may answer 409: try again
MISSING = {"NoSuchKey", "404", "NotFound"}
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                   "ExpiredToken", "InvalidSecurity", "AuthorizationHeaderMalformed"}
DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

log = logging.getLogger(__name__)


def open_s3_backend(url: str, environ: dict[str, str] | None = None,
                    attempts: int | None = None) -> S3Backend:
    """``s3://bucket/prefix``, with the endpoint from ``DISKVAULT_S3_ENDPOINT`` or
    ``AWS_ENDPOINT_URL`` (none: AWS itself) and credentials by boto3's usual chain
    (environment, ~/.aws files, instance roles); ``attempts`` per request, retries
    included (default: ``AWS_MAX_ATTEMPTS``, else MAX_ATTEMPTS)."""
    environ = os.environ if environ is None else environ
    attempts = attempts or _attempts_setting(environ)
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise BadInput(f"{url!r} is not an object-store repository; write s3://BUCKET/PREFIX")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not BUCKET_NAME.fullmatch(bucket):
        raise BadInput(f"{bucket!r} in {url!r} is not a valid bucket name (3-63 lowercase "
                       f"letters, digits, dots and hyphens)")
    if prefix and not _is_object_name(prefix):
        raise BadInput(f"{prefix!r} in {url!r} is not a usable prefix (an empty part, "
                       f"'.' or '..')")
    endpoint = environ.get("DISKVAULT_S3_ENDPOINT") or environ.get("AWS_ENDPOINT_URL") or None
    return S3Backend(bucket, prefix, make_client(endpoint, environ, attempts), endpoint)


def _attempts_setting(environ: dict[str, str]) -> int:
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
        # integrity of what we send is Content-MD5 (below), of what we read blake3
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10, read_timeout=60, max_pool_connections=16)
    session = boto3.session.Session()
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") \
        or session.region_name or "us-east-1"
    try:
        return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)
    except ValueError as error:  # botocore's "Invalid endpoint: ..."
        raise ObjectStoreUnusable(f"{error}; set DISKVAULT_S3_ENDPOINT to a URL such as "
                                  f"https://s3.example.net") from None


def _md5(data) -> str:
    """Content-MD5: the server refuses a body damaged on the way (BadDigest)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3Backend:
    """The repository under ``prefix`` in ``bucket``; ``client`` is a boto3 S3 client
    (thread-safe, so one serves every thread)."""

    uploads_in_flight = 4  # packs sealed at once, each finishing its upload
    read_gap_bytes = 1024 * 1024  # a request's round trip costs more than a MiB more bytes
    part_bytes = PART_BYTES  # a put above this is a multipart upload

    def __init__(self, bucket: str, prefix: str, client, endpoint: str | None = None):
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client
        self.endpoint = endpoint or "AWS S3"
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Once the endpoint has answered, losing it is a failure to retry later (exit 74),
        # not a wrong endpoint (exit 2).
        self._answered = False
        self.requests = RequestCounter(client)
        self._foreign_listed: dict[str, tuple[float, list[str]]] = {}
        self._senders: ThreadPoolExecutor | None = None
        self._senders_lock = threading.Lock()

    def key(self, name: str) -> str:
        check_object_name(name)
        return self.prefix + name

    def _name(self, key: str) -> str:
        return key[len(self.prefix):]

    # -- errors -----------------------------------------------------------------------------
    def request(self, operation: Callable, name: str = "", writing: bool = False, **kwargs):
        """One request; its failure in diskvault's terms."""
        try:
            response = operation(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise self.translate(error, name, writing) from None
        self._answered = True
        return response

    def translate(self, error: Exception, name: str, writing: bool) -> Exception:
        where = f"{self.location}/{name}" if name else self.location
        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            return ObjectStoreUnusable(
                f"no S3 credentials for {self.location}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")
        if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)) and self._answered:
            return ObjectStoreFailed(f"{where}: the object store at {self.endpoint} stopped "
                                     f"answering ({error}) after retries; try again later")
        if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
            return ObjectStoreUnusable(
                f"cannot reach the object store at {self.endpoint} ({error}); check "
                f"DISKVAULT_S3_ENDPOINT and the network")
        if not isinstance(error, ClientError):
            return ObjectStoreFailed(f"{where}: the object store stopped answering ({error}) "
                                     f"after retries; try again later")
        code, status = _code(error), _status(error)
        message = error.response.get("Error", {}).get("Message") or code
        if code in MISSING:
            return FileNotFoundError(errno.ENOENT, "no such object", where)
        if code == "NoSuchBucket":
            return ObjectStoreUnusable(f"bucket {self.bucket!r} does not exist at "
                                       f"{self.endpoint}; create it, or check the URL")
        if code in BAD_CREDENTIALS:
            return ObjectStoreUnusable(f"{self.endpoint} refused the S3 credentials for "
                                       f"{self.location} ({code}); check AWS_ACCESS_KEY_ID "
                                       f"and AWS_SECRET_ACCESS_KEY")
        if code in DENIED or status == 403:
            if writing:
                return RepositoryReadOnly(f"these S3 credentials may not write {where} "
                                          f"(access denied); readers still work")
            return ObjectStoreUnusable(f"these S3 credentials may not read {where} "
                                       f"(access denied); check the bucket's policy")
        if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
            return ObjectStoreFailed(f"{where}: the object store kept failing ({code}: "
                                     f"{message}) after retries; try again later")
        return ObjectStoreFailed(f"{where}: the object store refused the request ({code}: "
                                 f"{message})")

    # -- writing ------------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        """One PUT, or a multipart upload above PART_BYTES: either is atomic on S3, and an
        upload under way is listed by list_unfinished."""
        if len(data) <= PART_BYTES:
            self.request(self.client.put_object, name, writing=True, Key=self.key(name),
                         Body=bytes(data), ContentMD5=_md5(data))
            return
        upload = self.open_upload(name)
        try:
            view = memoryview(data)
            for start in range(0, len(view), PART_BYTES):
                upload.write(view[start: start + PART_BYTES])
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def _part_senders(self) -> ThreadPoolExecutor:
        """Threads that send the parts of every upload (the connection pool holds as
        many): several parts of one pack go up at once, while it fills."""
        with self._senders_lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(PARTS_IN_FLIGHT,
                                                   thread_name_prefix="s3-parts")
            return self._senders

    def put_if_absent(self, name: str, data: bytes, reuse: str | None = None) -> bool:
        """A PUT with ``If-None-Match: *`` (412 when the object exists; RGW makes it an
        exclusive create in RADOS). Always one PUT: RGW 16 ignores the condition on
        CompleteMultipartUpload. ``reuse`` has no use here (no full disk to work around) and
        is deleted when the put wins, as the protocol says."""
        key = self.key(name)
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data),
                                       ContentMD5=_md5(data), IfNoneMatch="*")
                break
            except ClientError as error:
                if _code(error) == "ConditionalRequestConflict":
                    continue  # AWS: another conditional write was in flight
                if _code(error) == "PreconditionFailed" or _status(error) == 412:
                    return self._won_before_retry(error, name, data)
                raise self.translate(error, name, writing=True) from None
            except BotoCoreError as error:
                raise self.translate(error, name, writing=True) from None
        else:
            raise ObjectStoreFailed(f"{self.location}/{name}: conditional writes kept "
                                    f"conflicting; try again")
        if reuse is not None:
            self.delete(reuse)
        return True

    def _won_before_retry(self, error: ClientError, name: str, data: bytes) -> bool:
        """A 412 after a retried PUT may answer our own first attempt, whose reply was lost:
        then the object holds exactly our bytes."""
        if not error.response.get("ResponseMetadata", {}).get("RetryAttempts"):
            return False
        try:
            return self.get(name) == bytes(data)
        except FileNotFoundError:
            return False

    def open_upload(self, name: str) -> S3Upload:
        return S3Upload(self, name, self._part_senders())

    def delete(self, name: str) -> None:
        self.request(self.client.delete_object, name, writing=True, Key=self.key(name))

    def move(self, name: str, new_name: str) -> None:
        """CopyObject, then DeleteObject: NOT atomic. A crash between them leaves both
        names; callers (damaged packs set aside, the lock's spare) tolerate that."""
        self.request(self.client.copy_object, name, writing=True, Key=self.key(new_name),
                     CopySource={"Bucket": self.bucket, "Key": self.key(name)})
        self.delete(name)

    # -- reading ------------------------------------------------------------------------------
    def get(self, name: str) -> bytes:
        return self._read(name, Key=self.key(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            if self.stat(name) is None:
                raise FileNotFoundError(errno.ENOENT, "no such object", f"{self.location}/{name}")
            return b""
        try:
            return self._read(name, Key=self.key(name),
                              Range=f"bytes={offset}-{offset + length - 1}")
        except _RangeNotSatisfiable:
            return b""  # at or past the end

    def _read(self, name: str, **kwargs) -> bytes:
        """A GET and its whole body; a body cut off midway is fetched again."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, **kwargs)
                self._answered = True
                return response["Body"].read()
            except ClientError as error:
                if _code(error) == "InvalidRange" or _status(error) == 416:
                    raise _RangeNotSatisfiable() from None
                raise self.translate(error, name, writing=False) from None
            except BotoCoreError as error:
                if attempt == READ_ATTEMPTS or isinstance(error, (NoCredentialsError,
                                                                  EndpointConnectionError)):
                    raise self.translate(error, name, writing=False) from None
        raise AssertionError("unreachable")

    def prefetch(self, name: str, offset: int, length: int) -> None:
        """Nothing: a range GET is the read itself."""

    def stat(self, name: str) -> int | None:
        try:
            return self.request(self.client.head_object, name, Key=self.key(name))[
                "ContentLength"]
        except FileNotFoundError:
            return None

    # -- listing ------------------------------------------------------------------------------
    def _keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield self._name(item["Key"])
        except (ClientError, BotoCoreError) as error:
            raise self.translate(error, prefix, writing=False) from None

    def list(self, prefix: str) -> list[str]:
        """One listing; its foreign keys are kept for a ``list_foreign`` of the same prefix
        that follows at once (packs and snapshots ask for both: one request, not two)."""
        names, foreign = [], []
        for name in self._keys(prefix):
            (names if _is_object_name(name) else foreign).append(name)
        self._foreign_listed[prefix] = (time.monotonic(), sorted(foreign))
        return sorted(names)

    def list_foreign(self, prefix: str) -> list[str]:
        """Keys no diskvault name can be (``a//b``, a console's ``folder/`` marker): those
        of a ``list`` of ``prefix`` made in the last FOREIGN_REUSE_S, else a new listing."""
        listed_at, foreign = self._foreign_listed.pop(prefix, (None, None))
        if listed_at is not None and time.monotonic() - listed_at < FOREIGN_REUSE_S:
            return foreign
        return sorted(name for name in self._keys(prefix) if not _is_object_name(name))

    def _uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(name, upload id) of every multipart upload begun and not completed."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for upload in page.get("Uploads", ()):
                    yield self._name(upload["Key"]), upload["UploadId"]
        except (ClientError, BotoCoreError) as error:
            raise self.translate(error, prefix, writing=False) from None

    def list_unfinished(self, prefix: str) -> list[str]:
        """Multipart uploads never completed (S3 keeps their parts, and bills them, until
        they are aborted); a name twice if two were begun."""
        return sorted(name for name, _ in self._uploads(prefix))

    def discard_unfinished(self, prefix: str) -> None:
        for name, upload_id in list(self._uploads(prefix)):
            _abort(self, name, upload_id)

    # -- the rest -----------------------------------------------------------------------------
    def read_only_reason(self) -> str | None:
        """None: a bucket does not say what these credentials may do without trying, and a
        trial write costs requests on every command. A refused write is RepositoryReadOnly."""
        return None

    @contextmanager
    def host_mutex(self) -> Iterator[None]:
        """An flock of a file in this user's cache (``$XDG_CACHE_HOME/diskvault/locks/``),
        one per endpoint, bucket and prefix: it serialises this user's processes on this
        host, which is what the protocol asks (a lock object on the bucket serialises hosts)."""
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = cache / "diskvault" / "locks"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = hashlib.sha256(f"{self.endpoint}\0{self.bucket}\0{self.prefix}".encode())
        fd = os.open(folder / f"{token.hexdigest()[:32]}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        log.debug("requests to %s: %s", self.location, self.requests.summary())
        if self._senders is not None:
            self._senders.shutdown(wait=True)
        self.client.close()


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


class _RangeNotSatisfiable(Exception):
    """416: the range starts at or after the object's end."""


def _is_object_name(name: str) -> bool:
    try:
        check_object_name(name)
    except ValueError:
        return False
    return True


def _abort(backend: S3Backend, name: str, upload_id: str) -> None:
    try:
        backend.client.abort_multipart_upload(Bucket=backend.bucket, Key=backend.key(name),
                                              UploadId=upload_id)
    except ClientError as error:
        if _code(error) != "NoSuchUpload":  # already aborted or completed
            raise backend.translate(error, name, writing=True) from None
    except BotoCoreError as error:
        raise backend.translate(error, name, writing=True) from None


class S3Upload:
    """A multipart upload, begun with its first part (so a writer that dies after it
    leaves it listed as unfinished), its parts sent in the background as they fill, at most
    PARTS_PENDING_PER_UPLOAD at once (memory: those and the part filling; a writer faster
    than the link waits), so a pack is mostly up by the time it is sealed. An upload that
    never filled a part is aborted and sent as one plain PUT. Visible only once
    ``complete`` returns. CompleteMultipartUpload ignores If-None-Match on RGW 16; no need:
    pack names are unique."""

    def __init__(self, backend: S3Backend, name: str, senders: ThreadPoolExecutor):
        self._backend = backend
        self._name = name
        self._key = backend.key(name)
        self._senders = senders
        self._buffer = bytearray()
        self._sending: deque[Future] = deque()
        self._parts: list[dict] = []
        self._next_part = 1
        self._upload_id: str | None = None  # begun with the first part
        self._finished = False  # completed or aborted

    def write(self, data) -> None:
        self._buffer += data
        while len(self._buffer) >= PART_BYTES:
            self._send(bytes(memoryview(self._buffer)[:PART_BYTES]))
            del self._buffer[:PART_BYTES]

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._backend.request(
                self._backend.client.create_multipart_upload, self._name, writing=True,
                Key=self._key)["UploadId"]
        self._sending.append(self._senders.submit(self._upload_part, self._next_part, part))
        self._next_part += 1
        while len(self._sending) > PARTS_PENDING_PER_UPLOAD:
            self._parts.append(self._sending.popleft().result())

    def _settle(self) -> None:
        """Wait for every part sent; a failure is raised once none is in flight."""
        wait(self._sending)
        sending, self._sending = self._sending, deque()
        self._parts += [future.result() for future in sending]

    def _upload_part(self, number: int, part: bytes) -> dict:
        answer = self._backend.request(
            self._backend.client.upload_part, self._name, writing=True, Key=self._key,
            UploadId=self._upload_id, PartNumber=number, Body=part, ContentMD5=_md5(part))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def complete(self) -> None:
        if self._finished:
            raise ValueError(f"the upload of {self._name} was aborted or completed")
        backend = self._backend
        if self._upload_id is None:  # not one part filled: one plain PUT
            data, self._buffer = bytes(self._buffer), bytearray()
            backend.put(self._name, data)
            self._finished = True
            return
        if self._buffer:
            self._send(bytes(self._buffer))
        self._settle()
        # the answer's ETag is empty on RGW 16 (BZ 2266579): nothing here relies on it
        backend.request(backend.client.complete_multipart_upload, self._name, writing=True,
                        Key=self._key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts})
        self._finished, self._upload_id = True, None
        self._buffer = bytearray()

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        wait(self._sending)  # parts in flight end before their upload is aborted
        self._sending, self._buffer = deque(), bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            _abort(self._backend, self._name, upload_id)
