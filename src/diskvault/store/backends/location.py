"""Where a repository is: a local folder, ``s3://bucket/prefix`` or
``ssh://[user@]host[:port]/path``, parsed once from -r/DISKVAULT_REPO and opened here into a
Backend. botocore is imported only when an S3 location is opened, so local commands start as
fast as before.

Where the index lives is the backend's answer (Backend.index_folder): with the repository
when it is a local folder (``<repo>/index``); for an object store or an SSH server a cache in the user's
cache folder (host/user_folders.py), keyed by the repository id *and* the place it was
read from, that catching up (index/catch_up.py) rebuilds from the packs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ...errors import BadInput, ObjectStoreUnusable, RepositoryNotFound
from .local import LocalBackend
from .protocol import Backend
from .ssh import open_ssh_backend, parse_ssh_url

S3_SCHEME = "s3://"
SSH_SCHEME = "ssh://"
URL_SCHEMES = (S3_SCHEME, SSH_SCHEME)
# "scheme://…", "scheme:…", "user@host:path": a colon before the first slash. A local
# name with such a colon is still reachable as ./name.
_REMOTE_LOOKING = re.compile(r"^[^/]*:")


@dataclass(frozen=True)
class Location:
    """A repository's place: ``folder`` for a local one, else ``url`` (an object store, an
    SSH server)."""
    folder: Path | None = None
    url: str | None = None

    def absolute_text(self) -> str:
        """How runs and units name this place: a folder as an absolute path (so ``-r vm1``
        and ``-r /backups/vm1`` from /backups agree), a URL as it is."""
        return os.path.abspath(self.folder) if self.folder is not None else str(self.url)

    def __str__(self) -> str:
        return str(self.folder) if self.folder is not None else str(self.url)

    def open_backend(self) -> Backend:
        """The backend of an existing repository here (a folder resolved once)."""
        if self.folder is not None:
            return LocalBackend(_locate(self.folder))
        if self.url.startswith(SSH_SCHEME):
            return open_ssh_backend(self.url)
        return self.open_object_store()

    def refuse_used_folder(self) -> None:
        """BadInput if a folder to init holds something (asked before any passphrase;
        a bucket's prefix is looked at once it is opened: create_backend)."""
        folder = self.folder
        if folder is not None and folder.exists() and (not folder.is_dir()
                                                       or any(folder.iterdir())):
            raise BadInput(f"cannot init {folder}: it exists and is not an empty folder")

    def create_backend(self, folders: Sequence[str]) -> Backend:
        """The backend of a new repository here: a folder made with its top ``folders``,
        or an empty prefix of a bucket (BadInput if objects are there already); over SSH,
        the far side makes the folder (and refuses a used one)."""
        if self.folder is not None:
            return LocalBackend.create(self.folder, folders)
        if self.url.startswith(SSH_SCHEME):
            return open_ssh_backend(self.url, list(folders))
        backend = self.open_object_store()
        try:
            if backend.list(""):
                raise BadInput(f"cannot init {backend.location}: objects already exist under "
                               f"that prefix; choose an empty prefix")
        except BaseException:
            backend.close()
            raise
        return backend

    def open_object_store(self) -> Backend:
        """The backend of the bucket and prefix of ``url``."""
        try:
            from .s3 import open_s3_backend  # botocore only for an object store
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] not in ("boto3", "botocore"):
                raise
            raise ObjectStoreUnusable(f"{self.url}: s3:// repositories need botocore, which is "
                                      f"not installed: pip install 'diskvault[s3]' (or run "
                                      f"scripts/setup.sh)") from None
        return open_s3_backend(self.url)


def parse_location(value: str | os.PathLike | None) -> Location:
    """The repository named by -r/DISKVAULT_REPO: ``s3://bucket/prefix``,
    ``ssh://[user@]host[:port]/path`` or a local folder. Other URLs and remote specs are
    refused rather than taken for a folder with an odd name."""
    if not value:
        raise BadInput("no repository given: use -r/--repo PATH, s3://BUCKET/PREFIX or "
                       "ssh://[USER@]HOST[:PORT]/PATH, or set DISKVAULT_REPO")
    text = os.fspath(value)
    if isinstance(text, str) and text.startswith(SSH_SCHEME):
        parse_ssh_url(text)  # a bad one is refused before anything is asked or started
        return Location(url=text)
    if isinstance(text, str) and text.startswith(S3_SCHEME):
        return Location(url=text)
    if isinstance(text, str) and _REMOTE_LOOKING.match(text):
        local_hint = "" if "://" in text else f", or ./{text} for a local name with a colon"
        raise BadInput(f"repository {text!r} looks like a URL or a remote location that "
                       f"diskvault does not know; give a local folder such as /backups/vm1, "
                       f"s3://BUCKET/PREFIX or ssh://[USER@]HOST[:PORT]/PATH{local_hint}")
    return Location(folder=Path(text))


def _locate(root: Path) -> Path:
    """The repository folder ``root``, resolved once: inside it, no link is followed."""
    if not root.exists():
        raise RepositoryNotFound(f"repository {root} does not exist; create it with "
                                 f"'diskvault init -r {root}'")
    if not root.is_dir():
        raise RepositoryNotFound(f"repository {root} is not a folder")
    return root.resolve()


LocationLike = Union[Location, str, os.PathLike]


def as_location(value: LocationLike) -> Location:
    """A Location as it is; an ``s3://`` or ``ssh://`` text or a path (already chosen by the
    program, so not checked as user input is by parse_location) made into one."""
    if isinstance(value, Location):
        return value
    if isinstance(value, str) and value.startswith(URL_SCHEMES):
        return Location(url=value)
    return Location(folder=Path(value))
