"""Listing an S3 repository's objects and its unfinished multipart uploads, by prefix: every
page of ListObjectsV2 and ListMultipartUploads, names relative to the repository's prefix,
and the keys no diskvault name can be kept apart. Imported only with store/backends/s3.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from .protocol import check_object_name
from .s3_upload import abort_upload

FOREIGN_REUSE_S = 5.0  # a listing's foreign keys answer a list_foreign this soon after


class S3Listings:
    """The listings of one S3Backend (its client, bucket and prefix)."""

    def __init__(self, backend):
        self._backend = backend
        self._foreign_listed: dict[str, tuple[float, list[str]]] = {}

    def list(self, prefix: str) -> list[str]:
        """One listing; its foreign keys are kept for a ``list_foreign`` of the same prefix
        that follows at once (packs and snapshots ask for both: one request, not two)."""
        names, foreign = [], []
        for name in self._names("list_objects_v2", "Contents", prefix):
            (names if is_object_name(name) else foreign).append(name)
        self._foreign_listed[prefix] = (time.monotonic(), sorted(foreign))
        return sorted(names)

    def list_foreign(self, prefix: str) -> list[str]:
        """Keys no diskvault name can be (``a//b``, a console's ``folder/`` marker): those
        of a ``list`` of ``prefix`` made in the last FOREIGN_REUSE_S, else a new listing."""
        listed_at, foreign = self._foreign_listed.pop(prefix, (None, None))
        if listed_at is not None and time.monotonic() - listed_at < FOREIGN_REUSE_S:
            return foreign
        return sorted(name for name in self._names("list_objects_v2", "Contents", prefix)
                      if not is_object_name(name))

    def list_unfinished(self, prefix: str) -> list[str]:
        """Multipart uploads never completed (S3 keeps their parts, and bills them, until
        they are aborted); a name twice if two were begun."""
        return sorted(name for name, _ in self._uploads(prefix))

    def discard_unfinished(self, prefix: str) -> None:
        for name, upload_id in list(self._uploads(prefix)):
            abort_upload(self._backend, name, upload_id)

    def _uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(name, upload id) of every multipart upload begun and not completed."""
        for upload in self._items("list_multipart_uploads", "Uploads", prefix):
            yield self._name(upload["Key"]), upload["UploadId"]

    def _names(self, operation: str, field: str, prefix: str) -> Iterator[str]:
        for item in self._items(operation, field, prefix):
            yield self._name(item["Key"])

    def _items(self, operation: str, field: str, prefix: str) -> Iterator[dict]:
        """The ``field`` entries of every page ``operation`` answers for ``prefix``."""
        backend = self._backend
        pages = backend.client.get_paginator(operation).paginate(
            Bucket=backend.bucket, Prefix=backend.prefix + prefix)
        try:
            for page in pages:
                yield from page.get(field, ())
        except (ClientError, BotoCoreError) as error:
            raise backend.translate(error, prefix, writing=False) from None

    def _name(self, key: str) -> str:
        return key[len(self._backend.prefix):]


def is_object_name(name: str) -> bool:
    try:
        check_object_name(name)
    except ValueError:
        return False
    return True
