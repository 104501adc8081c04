"""Helpers for the copy tests: repositories made wherever the `repository_location`
fixture says (a local folder today; an object-store URL can be added as another parameter),
images backed up into them, and bit-exact comparisons."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE
from diskvault.store.repository import Repository

from ..conftest import SMALL_CHUNKS, HashSink

# (source mode, destination mode): every pair of plaintext and encrypted; two encrypted
# repositories always have different keys (each init makes its own).
MODE_PAIRS = [(PLAINTEXT_MODE, PLAINTEXT_MODE), (PLAINTEXT_MODE, REPOKEY_MODE),
              (REPOKEY_MODE, PLAINTEXT_MODE), (REPOKEY_MODE, REPOKEY_MODE)]
MODE_PAIR_IDS = ["plain-plain", "plain-encrypted", "encrypted-plain", "encrypted-encrypted"]

Location = Callable[[str], Path]


@pytest.fixture(params=["local"])
def repository_location(request, tmp_path: Path) -> Location:
    """location(name) -> where a new repository named ``name`` is made."""
    return lambda name: tmp_path / name


def new_repository(location: Path, mode: str, **options) -> Repository:
    return Repository.init(location, chunk_size=options.pop("chunk_size", SMALL_CHUNKS),
                           encryption=mode, passphrase=os.environ["DISKVAULT_PASSWORD"],
                           **options)


def image_sha(repository: Repository, snapshot_id: str) -> str:
    """sha256 of a snapshot's image as the repository reads it back (every chunk verified)."""
    sink = HashSink()
    repository.cat(repository.find_snapshot(snapshot_id), sink)
    return sink.digest.hexdigest()


def file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
