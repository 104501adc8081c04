"""S3 Object Lock on a repository's bucket: the retention packs and snapshot records are put
with, its extension, legal holds, and what a versioned bucket changes for deleting and for
exclusive creation. Imported only with store/backends/s3.py.

A bucket with Object Lock is versioned, and any bucket may be. There a DeleteObject by key
only adds a delete marker (the bytes stay, locked or not, and keep their space), so a delete
removes every version of the key by its id, which is what the lock refuses while it holds.
And RGW 16 ignores ``If-None-Match: *`` on a versioned bucket (the second PUT wins), so
``put_if_absent`` there decides by the versions' order: the oldest version of the key is the
one that exists, and a writer whose version is not it removes its own and lost. The backend
uses these functions on any versioned bucket, Object Lock or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from botocore.exceptions import BotoCoreError, ClientError

from ...errors import BadInput, ObjectLocked
from ..format.config import LEGAL_HOLD_UNTIL, ObjectLockSettings
from .s3_client import body_check, error_code


@dataclass(frozen=True)
class Retention:
    """How long an object's current version may not be deleted (None: it may now)."""

    until: datetime | None
    mode: str | None = None  # GOVERNANCE or COMPLIANCE
    held: bool = False       # a legal hold, until lifted

    @property
    def locked_until(self) -> datetime | None:
        if self.held:
            return LEGAL_HOLD_UNTIL
        if self.until is not None and self.until > datetime.now(timezone.utc):
            return self.until
        return None


class S3ObjectLock:
    """The Object Lock of ``backend``'s bucket, for the objects under the prefixes of
    ``retained``, each retained the settings' days plus its margin; ``bypass_governance``
    lets deletes lift a GOVERNANCE retention (the credentials need
    s3:BypassGovernanceRetention)."""

    def __init__(self, backend, settings: ObjectLockSettings,
                 retained: dict[str, timedelta]):
        self.backend = backend
        self.settings = settings
        self.mode = settings.mode.upper()
        self.retained = retained
        self.bypass_governance = False

    def verify(self) -> None:
        """BadInput unless the bucket was made with Object Lock (it cannot be added later
        on RGW 16: the bucket must be created with it)."""
        backend = self.backend
        try:
            answer = backend.client.get_object_lock_configuration(Bucket=backend.bucket)
            enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except ClientError as error:
            if error_code(error) != "ObjectLockConfigurationNotFoundError":
                raise backend.translate(error, "", writing=False) from None
            enabled = None
        except BotoCoreError as error:
            raise backend.translate(error, "", writing=False) from None
        if enabled != "Enabled":
            raise BadInput(f"bucket {backend.bucket!r} at {backend.endpoint} has no Object "
                           f"Lock: create a bucket with it (aws s3api create-bucket "
                           f"--object-lock-enabled-for-bucket), or init without "
                           f"--object-lock-days")

    # -- putting ----------------------------------------------------------------------------
    def until_for(self, name: str) -> datetime | None:
        """The retain-until date a put of ``name`` now carries; None: not retained."""
        for prefix, margin in self.retained.items():
            if name.startswith(prefix):
                return self.settings.until(datetime.now(timezone.utc)) + margin
        return None

    def put_arguments(self, name: str) -> dict:
        until = self.until_for(name)
        if until is None:
            return {}
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}

    def after_upload(self, name: str, arguments: dict) -> None:
        """RGW 16 ignores the retention given to CreateMultipartUpload: set it on the
        completed object (a no-op where the store kept it)."""
        if arguments:
            self.extend(name, arguments["ObjectLockRetainUntilDate"])

    # -- reading and changing a lock ---------------------------------------------------------
    def retention(self, name: str) -> Retention | None:
        """The current version's lock; None if the object does not exist."""
        try:
            head = self.backend.request(self.backend.client.head_object, name,
                                        Key=self.backend.key(name))
        except FileNotFoundError:
            return None
        return Retention(head.get("ObjectLockRetainUntilDate"), head.get("ObjectLockMode"),
                         head.get("ObjectLockLegalHoldStatus") == "ON")

    def extend(self, name: str, until: datetime) -> None:
        """Retain the current version of ``name`` until ``until`` (the store refuses to
        shorten a retention without a bypass)."""
        self.backend.request(self.backend.client.put_object_retention, name, writing=True,
                             Key=self.backend.key(name),
                             Retention={"Mode": self.mode, "RetainUntilDate": until})

    def hold(self, name: str, on: bool) -> None:
        """Set or lift the legal hold of the current version of ``name``."""
        self.backend.request(self.backend.client.put_object_legal_hold, name, writing=True,
                             Key=self.backend.key(name),
                             LegalHold={"Status": "ON" if on else "OFF"})

    # -- a versioned bucket ------------------------------------------------------------------
    def delete(self, name: str) -> None:
        """Every version of ``name``, lifting governance retention if this command may."""
        delete_versions(self.backend, name, self.bypass_governance)


def versions(backend, name: str) -> tuple[list[str], list[str]]:
    """(version ids of ``name``, newest first as the store lists them, ids of its delete
    markers)."""
    key = backend.key(name)
    found, markers = [], []
    pages = backend.client.get_paginator("list_object_versions").paginate(
        Bucket=backend.bucket, Prefix=key)
    try:
        for page in pages:
            found += [v["VersionId"] for v in page.get("Versions", ()) if v["Key"] == key]
            markers += [m["VersionId"] for m in page.get("DeleteMarkers", ()) if m["Key"] == key]
    except (ClientError, BotoCoreError) as error:
        raise backend.translate(error, name, writing=False) from None
    return found, markers


def delete_versions(backend, name: str, bypass_governance: bool = False) -> None:
    """Remove every version of ``name`` and its delete markers (space comes back only
    then); ObjectLocked if a version's retention or legal hold still holds."""
    found, markers = versions(backend, name)
    for version_id in markers + found:
        delete_version(backend, name, version_id, bypass_governance)


def delete_version(backend, name: str, version_id: str, bypass_governance: bool = False
                   ) -> None:
    extra = {"BypassGovernanceRetention": True} if bypass_governance else {}
    try:
        backend.client.delete_object(Bucket=backend.bucket, Key=backend.key(name),
                                     VersionId=version_id, **extra)
    except ClientError as error:
        if error_code(error) == "AccessDenied" and "lock" in str(error).lower():
            raise ObjectLocked(f"{backend.location}/{name} is locked by S3 Object Lock "
                               f"and was not deleted") from None
        raise backend.translate(error, name, writing=True) from None
    except BotoCoreError as error:
        raise backend.translate(error, name, writing=True) from None


def put_if_absent_versioned(backend, name: str, data: bytes, arguments: dict) -> bool:
    """False at once if a version exists; else a PUT (with ``arguments``: a retention),
    then the versions decide: ours must be the oldest, or it is removed and the object
    existed (False). Until the loser of a race removes its version, a GET may answer with
    it: only racing writers ever see that, and only between two requests."""
    if versions(backend, name)[0]:
        return False
    answer = backend.request(backend.client.put_object, name, writing=True,
                             Key=backend.key(name), Body=bytes(data),
                             **body_check(backend.client, data, bool(arguments)), **arguments)
    ours = answer.get("VersionId")
    found, _ = versions(backend, name)
    if not found or found[-1] == ours:
        return True
    delete_version(backend, name, ours)
    return False
