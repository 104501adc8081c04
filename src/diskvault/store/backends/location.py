"""Where a repository is: a local folder or ``s3://bucket/prefix``, parsed once from
-r/DISKVAULT_REPO and opened here into a Backend. boto3 is imported only when an S3
location is opened, so local commands start as fast as before.

The index lives with the repository when it is a local folder (``<repo>/index``); for an
object store (or a repository this user cannot write) it is a cache in the user's cache
folder, keyed by the repository id *and* the place it was read from, that
``index_cache.py`` rebuilds and catches up from the packs.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ...errors import BadInput, ObjectStoreUnusable
from ..host.user_folders import user_cache_folder
from .protocol import Backend

S3_SCHEME = "s3://"
# "scheme://…", "scheme:…", "user@host:path": a colon before the first slash. A local
# name with such a colon is still reachable as ./name.
_REMOTE_LOOKING = re.compile(r"^[^/]*:")


@dataclass(frozen=True)
class Location:
    """A repository's place: ``folder`` for a local one, else ``url`` (an object store)."""
    folder: Path | None = None
    url: str | None = None

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    def __str__(self) -> str:
        return str(self.folder) if self.folder is not None else str(self.url)

    def open_object_store(self) -> Backend:
        """The backend of the bucket and prefix of ``url``."""
        try:
            from .s3 import open_s3_backend  # boto3 only for an object store
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] not in ("boto3", "botocore"):
                raise
            raise ObjectStoreUnusable(f"{self.url}: s3:// repositories need boto3, which is "
                                      f"not installed: pip install 'diskvault[s3]' (or run "
                                      f"scripts/setup.sh)") from None
        return open_s3_backend(self.url)


def parse_location(value: str | os.PathLike | None) -> Location:
    """The repository named by -r/DISKVAULT_REPO: ``s3://bucket/prefix`` or a local folder.
    Other URLs and remote specs are refused rather than taken for a folder with an odd
    name."""
    if not value:
        raise BadInput("no repository given: use -r/--repo PATH or s3://BUCKET/PREFIX, or "
                       "set DISKVAULT_REPO")
    text = os.fspath(value)
    if isinstance(text, str) and text.startswith(S3_SCHEME):
        return Location(url=text)
    if isinstance(text, str) and _REMOTE_LOOKING.match(text):
        local_hint = "" if "://" in text else f", or ./{text} for a local name with a colon"
        raise BadInput(f"repository {text!r} looks like a URL or a remote location that "
                       f"diskvault does not know; give a local folder such as /backups/vm1 "
                       f"or s3://BUCKET/PREFIX{local_hint}")
    return Location(folder=Path(text))


PLACE_KEY_HEX_DIGITS = 16


def cached_index_folder(repository_id: str, place: str) -> Path:
    """Where this machine caches the index of the repository ``repository_id`` read at
    ``place`` (Backend.place): two copies of one repository (a cloned prefix, a replica on
    another endpoint, a copied folder) share an id but never a cache. The id is validated
    (32 hex digits) by the config before it names a folder."""
    return user_cache_folder() / repository_id / place_key(place) / "index"


def place_key(place: str) -> str:
    """A short, file-name-safe digest of a Backend.place, to keep apart what this host
    holds for two copies of one repository."""
    return hashlib.sha256(place.encode()).hexdigest()[:PLACE_KEY_HEX_DIGITS]


LocationLike = Union[Location, str, os.PathLike]


def as_location(value: LocationLike) -> Location:
    """A Location as it is; an ``s3://`` text or a path (already chosen by the program, so
    not checked as user input is by parse_location) made into one."""
    if isinstance(value, Location):
        return value
    if isinstance(value, str) and value.startswith(S3_SCHEME):
        return Location(url=value)
    return Location(folder=Path(value))
