"""What an S3 error means in diskvault's terms: a missing object, a wrong endpoint or
credentials (fix the configuration), refused writes (a read-only key), or a failure to try
again later; never a botocore traceback. Imported only with store/backends/s3.py."""

from __future__ import annotations

import errno

from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                 NoCredentialsError, PartialCredentialsError)

from ...errors import ObjectStoreFailed, ObjectStoreUnusable, RepositoryReadOnly
from .s3_client import error_code, http_status

MISSING = {"NoSuchKey", "404", "NotFound"}
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                   "ExpiredToken", "InvalidSecurity", "AuthorizationHeaderMalformed"}
DENIED = {"AccessDenied", "403", "AllAccessDisabled"}


def translate(error: Exception, place, name: str, writing: bool) -> Exception:
    """``error`` of a request about the object ``name`` ('': the bucket or prefix) of
    ``place`` (an S3Backend: its bucket, location, endpoint and whether the endpoint has
    answered yet): a FileNotFoundError for a missing object, else one of errors.py's."""
    where = f"{place.location}/{name}" if name else place.location
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return ObjectStoreUnusable(
            f"no S3 credentials for {place.location}: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)) and place.answered:
        return ObjectStoreFailed(f"{where}: the object store at {place.endpoint} stopped "
                                 f"answering ({error}) after retries; try again later")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
        return ObjectStoreUnusable(
            f"cannot reach the object store at {place.endpoint} ({error}); check "
            f"DISKVAULT_S3_ENDPOINT and the network")
    if not isinstance(error, ClientError):
        return ObjectStoreFailed(f"{where}: the object store stopped answering ({error}) "
                                 f"after retries; try again later")
    code, status = error_code(error), http_status(error)
    message = error.response.get("Error", {}).get("Message") or code
    if code in MISSING:
        return FileNotFoundError(errno.ENOENT, "no such object", where)
    if code == "NoSuchBucket":
        return ObjectStoreUnusable(f"bucket {place.bucket!r} does not exist at "
                                   f"{place.endpoint}; create it, or check the URL")
    if code in BAD_CREDENTIALS:
        return ObjectStoreUnusable(f"{place.endpoint} refused the S3 credentials for "
                                   f"{place.location} ({code}); check AWS_ACCESS_KEY_ID "
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
