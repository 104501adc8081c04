"""Damaged repositories: a flipped byte in a pack record, a truncated pack, a missing pack,
a damaged snapshot record. Reads fail with one line naming the snapshot and the byte
offset; no target file appears under its final name; wrong bytes are never delivered.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.store.format.packs import FLAG_ZSTD, PackEntry, read_footer
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image

MiB = 1024 * 1024
EXIT_FAILURE = 1


@dataclass(frozen=True)
class StoredRecord:
    """One record of a pack, with where its bytes belong in the snapshot's image."""

    pack_id: str
    entry: PackEntry
    image_offsets: tuple[int, ...]  # where the chunk is in the image (or its block starts)
    is_block: bool                  # a manifest block rather than a data chunk

    @property
    def image_offset(self) -> int:
        return self.image_offsets[0]


@dataclass(frozen=True)
class Backed:
    repo: Path
    image: Path
    snapshot_id: str
    records: list[StoredRecord]      # data chunks in image order, then manifest blocks

    @property
    def short_id(self) -> str:
        return self.snapshot_id[:8]

    def pack_path(self, pack_id: str) -> Path:
        return self.repo / "packs" / pack_id[:2] / f"{pack_id}.pack"


@pytest.fixture
def backed(repo: Repository, tmp_path: Path) -> Backed:
    """A 3 MiB image of random, repeated and text data (raw and compressed records),
    backed up; its records mapped to image offsets through the snapshot's manifest."""
    image = write_image(tmp_path / "disk.img", 3 * MiB, "mixed", seed=7)
    record = repo.backup(image)
    locations = {}
    for pack_id in repo.storage.packs.list():
        for entry in read_footer(repo.storage.packs, pack_id):
            locations[entry.digest] = (pack_id, entry)
    data_offsets: dict[bytes, list[int]] = {}
    for block in record.blocks:
        offset = block.offset
        for item in repo.load_manifest_block(block.digest):
            if item.digest is not None:
                data_offsets.setdefault(item.digest, []).append(offset)
            offset += item.length
    records = [StoredRecord(*locations[digest], tuple(offsets), is_block=False)
               for digest, offsets in sorted(data_offsets.items(), key=lambda d: d[1][0])]
    records += [StoredRecord(*locations[block.digest], (block.offset,), is_block=True)
                for block in record.blocks]
    repo.close()
    return Backed(repo.root, image, record.id, records)


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int,
                          *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == exit_code, f"exit code {result.returncode}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr}"
    assert lines[0].startswith("diskvault: error:"), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))


def pick(backed: Backed, kind: str) -> StoredRecord:
    """A record from the middle of the image: "raw chunk", "compressed chunk" (zstd) or
    "manifest block"."""
    if kind == "manifest block":
        candidates = [r for r in backed.records if r.is_block]
    else:
        compressed = kind == "compressed chunk"
        candidates = [r for r in backed.records if not r.is_block
                      and len(r.image_offsets) == 1   # met once: its offset is the one named
                      and bool(r.entry.flags & FLAG_ZSTD) == compressed]
    assert candidates, f"the image should have a {kind}"
    return candidates[len(candidates) // 2]


@pytest.mark.parametrize("kind", ["raw chunk", "compressed chunk", "manifest block"])
def test_flipped_pack_byte_fails_restore_and_cat_naming_snapshot_and_offset(
        backed: Backed, tmp_path: Path, kind: str):
    damaged = pick(backed, kind)
    flip_byte(backed.pack_path(damaged.pack_id),
              damaged.entry.offset + damaged.entry.stored_size // 2)
    where = (backed.short_id, f"byte offset {damaged.image_offset}")

    target = tmp_path / "out" / "restored.img"
    target.parent.mkdir()
    restore = run_cli("restore", "-r", str(backed.repo), backed.snapshot_id, str(target))
    assert_one_line_error(restore, EXIT_FAILURE, *where)
    assert list(target.parent.iterdir()) == [], "a failed restore left a file behind"

    cat = run_cli("cat", "-r", str(backed.repo), backed.snapshot_id)
    assert_one_line_error(cat, EXIT_FAILURE, *where)
    image = backed.image.read_bytes()
    assert len(cat.stdout) <= damaged.image_offset, "bytes past the damage were written"
    assert cat.stdout == image[: len(cat.stdout)], "cat delivered wrong bytes"


def test_failed_forced_restore_leaves_the_existing_target_untouched(backed: Backed,
                                                                     tmp_path: Path):
    damaged = pick(backed, "raw chunk")
    flip_byte(backed.pack_path(damaged.pack_id), damaged.entry.offset)
    target = tmp_path / "existing.img"
    target.write_bytes(b"the user's old file\n")

    result = run_cli("restore", "-r", str(backed.repo), backed.snapshot_id, str(target),
                     "--force")
    assert_one_line_error(result, EXIT_FAILURE, backed.short_id,
                          f"byte offset {damaged.image_offset}")
    assert target.read_bytes() == b"the user's old file\n"
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "state")  # the host's state
    assert left == sorted(["existing.img", "disk.img", "repo"]), \
        "a temp file of the failed restore was left"


def reported_offset(line: str) -> int:
    found = re.search(r"at byte offset (\d+)", line)
    assert found, f"no byte offset in {line!r}"
    return int(found.group(1))


def test_truncated_pack_fails_restore_and_cat_at_an_offset_of_lost_data(backed: Backed,
                                                                        tmp_path: Path):
    pack_id = backed.records[0].pack_id
    records = [r for r in backed.records if r.pack_id == pack_id]
    cut = max(r.entry.offset + r.entry.stored_size for r in records) // 2
    with open(backed.pack_path(pack_id), "r+b") as handle:
        handle.truncate(cut)
    # Whatever is met first in image order -- a lost chunk or a lost manifest block -- is
    # what the error names.
    lost = {offset for r in records if r.entry.offset + r.entry.stored_size > cut
            for offset in r.image_offsets}

    target = tmp_path / "restored.img"
    result = run_cli("restore", "-r", str(backed.repo), backed.snapshot_id, str(target))
    line = assert_one_line_error(result, EXIT_FAILURE, backed.short_id)
    assert reported_offset(line) in lost
    assert not target.exists()

    cat = run_cli("cat", "-r", str(backed.repo), backed.snapshot_id)
    line = assert_one_line_error(cat, EXIT_FAILURE, backed.short_id)
    assert reported_offset(line) in lost
    assert len(cat.stdout) <= reported_offset(line)
    assert cat.stdout == backed.image.read_bytes()[: len(cat.stdout)]


def test_missing_pack_fails_restore_naming_snapshot_and_the_missing_pack(backed: Backed,
                                                                         tmp_path: Path):
    pack_id = backed.records[0].pack_id
    backed.pack_path(pack_id).unlink()

    target = tmp_path / "restored.img"
    result = run_cli("restore", "-r", str(backed.repo), backed.snapshot_id, str(target))
    line = assert_one_line_error(result, EXIT_FAILURE, backed.short_id, "byte offset", pack_id)
    assert "missing" in line
    assert not target.exists()
    cat = run_cli("cat", "-r", str(backed.repo), backed.snapshot_id)
    assert_one_line_error(cat, EXIT_FAILURE, backed.short_id, "byte offset", pack_id)


def test_damaged_snapshot_record_gives_one_line_naming_the_record(backed: Backed,
                                                                  tmp_path: Path):
    record_path = backed.repo / "snapshots" / f"{backed.snapshot_id}.json"
    text = record_path.read_bytes()
    record_path.write_bytes(text[: len(text) // 2])   # cut mid-JSON, as a disk fault might

    for args in (["info", backed.snapshot_id],
                 ["restore", backed.snapshot_id, str(tmp_path / "restored.img")]):
        result = run_cli(args[0], "-r", str(backed.repo), *args[1:])
        assert_one_line_error(result, EXIT_FAILURE, record_path.name)
    assert not (tmp_path / "restored.img").exists()

    # list may show the intact snapshots, but it must name the damaged record and fail.
    listing = run_cli("list", "-r", str(backed.repo))
    stderr = listing.stderr.decode()
    assert listing.returncode == EXIT_FAILURE, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diskvault: "), stderr
    assert record_path.name in lines[0]


def test_damaged_snapshot_record_does_not_block_restoring_the_other_snapshots(
        backed: Backed, tmp_path: Path):
    other_image = write_image(tmp_path / "other.img", 1 * MiB, "random", seed=8)
    with Repository.open(backed.repo) as repository:
        other_id = repository.backup(other_image).id
    record_path = backed.repo / "snapshots" / f"{backed.snapshot_id}.json"
    record_path.write_bytes(b"{\"version\": 1, \"id\": ")

    target = tmp_path / "other.restored"
    result = run_cli("restore", "-r", str(backed.repo), other_id, str(target))
    assert result.returncode == 0, (
        f"one damaged record made an intact snapshot unrestorable: {result.stderr.decode()}")
    assert target.read_bytes() == other_image.read_bytes()
