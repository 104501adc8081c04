"""Browsing a backed-up image reads only the chunks under what is asked for: counted by
wrapping the repository's chunk fetch, and recognised by content (the other files are random
bytes, so a fetched chunk lying inside one of them can only come from it)."""

from __future__ import annotations

import random
import stat

import pytest

from diskvault.errors import UnknownFilesystem
from diskvault.image.extract import pull
from diskvault.store.read.browse import BROWSE_READAHEAD_BYTES
from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS
from tests.fsimages import PartSpec, file_size_mib, make_disk, make_ext4, populate_tree

MIB = 1 << 20
BIG_FILES = 3
BIG_BYTES = 4 * MIB
METADATA_ALLOWANCE = 512 * 1024  # superblock, group descriptors, inodes, folders on the way


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A GPT disk (p1 empty, p2 ext4 with the standard tree and three 4 MiB random files),
    backed up with small chunks; and the random files' contents."""
    folder = tmp_path_factory.mktemp("browse")
    tree = populate_tree(folder / "tree", many=50, big_size=100_000)
    contents = {}
    for index in range(BIG_FILES):
        contents[f"/big{index}.bin"] = random.Random(index).randbytes(BIG_BYTES)
        (tree / f"big{index}.bin").write_bytes(contents[f"/big{index}.bin"])
    ext4 = make_ext4(folder / "ext4.img", tree, 32)
    make_disk(folder / "disk.img", [PartSpec(None, 1), PartSpec(ext4, file_size_mib(ext4))])
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS) as opened:
        opened.backup(folder / "disk.img", name="disk")
        opened.backup(ext4, name="bare")
    with Repository.open(folder / "repo") as opened:
        yield opened, contents


class Fetches:
    """Every chunk the repository hands out while installed."""

    def __init__(self, repository: Repository, monkeypatch):
        self.chunks: list[bytes] = []
        fetch = repository.storage.chunks.get

        def counting(digest: bytes) -> bytes:
            data = fetch(digest)
            self.chunks.append(data)
            return data

        monkeypatch.setattr(repository.storage.chunks, "get", counting)

    @property
    def bytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def inside(self, *contents: bytes) -> int:
        """Bytes of the fetched chunks that lie wholly inside one of `contents`."""
        return sum(len(c) for c in self.chunks if any(c in content for content in contents))


def browse(repository: Repository, name: str):
    return repository.browse(repository.find_snapshot(name))


def test_listing_a_folder_reads_metadata_and_no_file_content(repository, monkeypatch):
    opened, contents = repository
    fetches = Fetches(opened, monkeypatch)
    listing = browse(opened, "disk").listing("p2:/")
    assert {e.name for e in listing.children} >= set(n.lstrip("/") for n in contents)
    assert fetches.inside(*contents.values()) == 0
    assert fetches.bytes < METADATA_ALLOWANCE


def test_pulling_a_small_file_reads_none_of_the_others(repository, monkeypatch, tmp_path):
    opened, contents = repository
    fetches = Fetches(opened, monkeypatch)
    fs, path = browse(opened, "disk").open_location("p2:/secret/key")
    assert pull(fs, path, tmp_path / "key").files == 1
    assert fetches.inside(*contents.values()) == 0
    assert fetches.bytes < METADATA_ALLOWANCE


def test_pulling_a_big_file_reads_it_and_at_most_the_read_ahead_beyond(repository, monkeypatch,
                                                                       tmp_path):
    opened, contents = repository
    fetches = Fetches(opened, monkeypatch)
    fs, path = browse(opened, "disk").open_location("p2:/big1.bin")
    pull(fs, path, tmp_path / "big1")
    assert (tmp_path / "big1").read_bytes() == contents["/big1.bin"]
    others = [data for name, data in contents.items() if name != "/big1.bin"]
    beyond = BROWSE_READAHEAD_BYTES + opened.config.chunker.max_bytes  # chunks starting in it
    assert fetches.inside(*others) <= beyond
    assert fetches.bytes <= BIG_BYTES + beyond + METADATA_ALLOWANCE


def test_a_filesystem_is_opened_once_and_so_is_the_reason_it_cannot_be(repository,
                                                                       monkeypatch):
    opened, _ = repository
    files = browse(opened, "disk")
    assert files.volumes() == [1, 2]
    assert files.filesystem(2) is files.filesystem(2)
    with pytest.raises(UnknownFilesystem, match="partition 1 holds no known filesystem"):
        files.filesystem(1)
    fs = files.filesystem(2)
    fetches = Fetches(opened, monkeypatch)
    with pytest.raises(UnknownFilesystem, match="partition 1 holds no known filesystem"):
        files.filesystem(1)
    assert files.filesystem(2) is fs
    assert fetches.chunks == []


def test_a_bare_filesystem_is_the_only_volume(repository):
    opened, _ = repository
    files = browse(opened, "bare")
    assert files.volumes() == [None]
    entry = files.listing("/secret/key").entry
    assert (entry.size, stat.S_IMODE(entry.mode), entry.kind) == (17, 0o600, "file")
