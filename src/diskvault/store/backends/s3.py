"""The repository in an S3 bucket (AWS, Ceph radosgw, MinIO, ...): ``S3Backend`` keeps the
Backend protocol of protocol.py with botocore, the client under boto3. This module and its
helpers (s3_client.py: the client; s3_upload.py: multipart uploads; s3_listing.py: listings;
s3_errors.py: errors in our terms; s3_lock.py: Object Lock and versions) are the only ones
that import it, and only when an ``s3://`` repository is opened, so local commands start
without it.

Objects are keys ``<prefix>/<name>``. What an object store does differently from a folder:
a put is atomic by itself (no temp object); large puts and streamed uploads are multipart
uploads, and those are what is "unfinished" when a writer dies; a move is a copy then a
delete (not atomic); nothing is host-local, so ``host_mutex`` is an flock in the user's cache.
Every error of the client becomes a FileNotFoundError (a missing object) or one line of
diskvault's own (errors.py), never a botocore traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import ContextManager
from urllib.parse import urlsplit

from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError,
                                 NoCredentialsError)

from ...errors import BadInput, ObjectStoreFailed, ObjectStoreUnusable, RepositoryReadOnly
from ..host.user_folders import cache_mutex, make_cached_index_folder
from .protocol import ObjectAge, check_object_name
from .s3_client import (RequestCounter, attempts_setting, body_check, error_code, http_status,
                        make_client)
from .s3_errors import translate
from .s3_listing import S3Listings, is_object_name
from .s3_lock import S3ObjectLock, delete_versions, put_if_absent_versioned
from .s3_upload import PART_BYTES, S3Upload

READ_ATTEMPTS = 3  # a body cut off mid-read is not retried by botocore: we retry the GET
PARTS_IN_FLIGHT = 16  # parts sent at once, all uploads together (= connections)
CONFLICT_ATTEMPTS = 5  # concurrent conditional PUTs may answer 409: try again
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

log = logging.getLogger(__name__)


def open_s3_backend(url: str, environ: dict[str, str] | None = None,
                    attempts: int | None = None) -> S3Backend:
    """``s3://bucket/prefix``, with the endpoint from ``DISKVAULT_S3_ENDPOINT`` or
    ``AWS_ENDPOINT_URL`` (none: AWS itself) and credentials by boto3's usual chain
    (environment, ~/.aws files, instance roles); ``attempts`` per request, retries
    included (default: ``AWS_MAX_ATTEMPTS``, else s3_client.MAX_ATTEMPTS)."""
    environ = os.environ if environ is None else environ
    attempts = attempts or attempts_setting(environ)
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise BadInput(f"{url!r} is not an object-store repository; write s3://BUCKET/PREFIX")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not BUCKET_NAME.fullmatch(bucket):
        raise BadInput(f"{bucket!r} in {url!r} is not a valid bucket name (3-63 lowercase "
                       f"letters, digits, dots and hyphens)")
    if prefix and not is_object_name(prefix):
        raise BadInput(f"{prefix!r} in {url!r} is not a usable prefix (an empty part, "
                       f"'.' or '..')")
    endpoint = environ.get("DISKVAULT_S3_ENDPOINT") or environ.get("AWS_ENDPOINT_URL") or None
    return S3Backend(bucket, prefix, make_client(endpoint, environ, attempts), endpoint)


class S3Backend:
    """The repository under ``prefix`` in ``bucket``; ``client`` is a boto3 S3 client
    (thread-safe, so one serves every thread)."""

    uploads_in_flight = 4  # packs sealed at once, each finishing its upload
    read_gap_bytes = 1024 * 1024  # a request's round trip costs more than a MiB more bytes
    read_window_bytes = 1024 * 1024  # so a chunk's neighbours come with it at little cost
    part_bytes = PART_BYTES  # a put above this is a multipart upload
    reads_in_flight = 16  # the client's connection pool holds as many
    root = None  # no file of it is on this machine
    index_is_cache = True

    def __init__(self, bucket: str, prefix: str, client, endpoint: str | None = None):
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client
        self.endpoint = endpoint or "AWS S3"
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.place = f"{self.endpoint} {self.location}"
        # Once the endpoint has answered, losing it is a failure to retry later (exit 74),
        # not a wrong endpoint (exit 2): s3_errors.translate asks.
        self.answered = False
        self.requests = RequestCounter(client)
        self._listings = S3Listings(self)
        self._senders: ThreadPoolExecutor | None = None
        self._senders_lock = threading.Lock()
        self.object_lock: S3ObjectLock | None = None
        self._versioning: Future | None = None  # asked once: see _versioning_asked
        self._versioning_lock = threading.Lock()

    def use_object_lock(self, settings, retained: dict[str, timedelta],
                        verify: bool = False) -> None:
        """Put the objects under the prefixes of ``retained`` with the retention of
        ``settings`` (store/backends/s3_lock.py); ``verify``: first check, with one request,
        that the bucket has Object Lock (BadInput if not)."""
        self.object_lock = S3ObjectLock(self, settings, retained)
        if verify:
            self.object_lock.verify()

    def versioned(self) -> bool:
        """Whether the bucket keeps versions (Object Lock, or versioning turned on, even
        suspended since): then deletes and exclusive puts go by version (s3_lock.py)."""
        return self.object_lock is not None or self._versioning_asked().result()

    def _versioning_asked(self) -> Future:
        """GetBucketVersioning, once per process, begun in the background by the first put:
        a command that writes puts a generation exclusively later on, and finds the answer
        there instead of waiting a round trip for it. Credentials that may not ask count as
        unversioned."""
        with self._versioning_lock:
            if self._versioning is None:
                self._versioning = self._part_senders().submit(self._ask_versioning)
            return self._versioning

    def _ask_versioning(self) -> bool:
        try:
            status = self.request(self.client.get_bucket_versioning).get("Status")
        except (RepositoryReadOnly, ObjectStoreUnusable):
            status = None  # access denied: as before versions were looked at
        return status in ("Enabled", "Suspended")

    def lock_arguments(self, name: str) -> dict:
        """The retention a put of ``name`` carries (none without Object Lock)."""
        return {} if self.object_lock is None else self.object_lock.put_arguments(name)

    def key(self, name: str) -> str:
        check_object_name(name)
        return self.prefix + name

    # -- errors -----------------------------------------------------------------------------
    def request(self, operation: Callable, name: str = "", writing: bool = False, **kwargs):
        """One request; its failure in diskvault's terms."""
        try:
            response = operation(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise self.translate(error, name, writing) from None
        self.answered = True
        return response

    def translate(self, error: Exception, name: str, writing: bool) -> Exception:
        """``error`` of a request about ``name`` in diskvault's terms (s3_errors.py)."""
        return translate(error, self, name, writing)

    # -- writing ------------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        """One PUT, or a multipart upload above PART_BYTES: either is atomic on S3, and an
        upload under way is listed by list_unfinished."""
        if self.object_lock is None:
            self._versioning_asked()  # in the background, for the exclusive puts to come
        if len(data) <= PART_BYTES:
            lock = self.lock_arguments(name)
            self.request(self.client.put_object, name, writing=True, Key=self.key(name),
                         Body=bytes(data), **body_check(self.client, data, bool(lock)), **lock)
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
        is deleted when the put wins, as the protocol says. A versioned bucket (Object Lock)
        decides by its versions instead (s3_lock.py)."""
        if self.versioned():
            won = put_if_absent_versioned(self, name, data, self.lock_arguments(name))
            if won and reuse is not None:
                self.delete(reuse)
            return won
        key = self.key(name)
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data),
                                       **body_check(self.client, data), IfNoneMatch="*")
                break
            except ClientError as error:
                if error_code(error) == "ConditionalRequestConflict":
                    continue  # AWS: another conditional write was in flight
                if error_code(error) == "PreconditionFailed" or http_status(error) == 412:
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
        """On a versioned bucket: every version (ObjectLocked while one is locked)."""
        if self.object_lock is not None:
            self.object_lock.delete(name)
            return
        if self.versioned():
            delete_versions(self, name)
            return
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
                self.answered = True
                return response["Body"].read()
            except ClientError as error:
                if error_code(error) == "InvalidRange" or http_status(error) == 416:
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

    def age(self, name: str) -> ObjectAge | None:
        """From one HEAD: the reply's ``Date`` (the store's now) minus ``Last-Modified``,
        less one second, as both are whole seconds (so never more than the true age); the
        store's now is taken as mid-second for the skew (this host's now if it sent no
        ``Date``)."""
        try:
            reply = self.request(self.client.head_object, name, Key=self.key(name))
        except FileNotFoundError:
            return None
        date = reply["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
        age_s = (now - reply["LastModified"]).total_seconds() - 1.0
        return ObjectAge(max(0.0, age_s), time.time() - now.timestamp() - 0.5)

    # -- listing ------------------------------------------------------------------------------
    def list(self, prefix: str) -> list[str]:
        return self._listings.list(prefix)

    def list_foreign(self, prefix: str) -> list[str]:
        return self._listings.list_foreign(prefix)

    def list_unfinished(self, prefix: str) -> list[str]:
        return self._listings.list_unfinished(prefix)

    def discard_unfinished(self, prefix: str) -> None:
        self._listings.discard_unfinished(prefix)

    # -- what this place is -------------------------------------------------------------------
    def index_folder(self, repository_id: str) -> Path:
        return make_cached_index_folder(repository_id, self.place)

    def disk_folders(self) -> list[Path]:
        return []

    def contains(self, path: Path) -> bool:
        return False  # nothing local is inside a bucket

    def requests_made(self) -> dict[str, int]:
        return self.requests.snapshot()

    # -- the rest -----------------------------------------------------------------------------
    def read_only_reason(self) -> str | None:
        """None: a bucket does not say what these credentials may do without trying, and a
        trial write costs requests on every command. A refused write is RepositoryReadOnly."""
        return None

    def host_mutex(self) -> ContextManager[None]:
        """An flock in this user's cache, one per endpoint, bucket and prefix
        (user_folders.cache_mutex): it serialises this user's processes on this host,
        which is what the protocol asks (a lock object on the bucket serialises hosts)."""
        return cache_mutex(f"{self.endpoint}\0{self.bucket}\0{self.prefix}")

    def close(self) -> None:
        log.debug("requests to %s: %s", self.location, self.requests.summary())
        if self._senders is not None:
            self._senders.shutdown(wait=True)
        self.client.close()


class _RangeNotSatisfiable(Exception):
    """416: the range starts at or after the object's end."""

