"""Snapshot records are verified, never trusted: a checksum over each record, and every
structural fact a reader relies on (block offsets against the blocks' entries, the size
against their sum) cross-checked, so an edited record never yields wrong bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.errors import CorruptData
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image
from ..read.test_corruption import assert_one_line_error

MiB = 1024 * 1024
EXIT_FAILURE = 1


@dataclass(frozen=True)
class Recorded:
    repo: Path
    image: Path
    snapshot_id: str

    @property
    def record_path(self) -> Path:
        return self.repo / "snapshots" / f"{self.snapshot_id}.json"

    def edit(self, change: Callable[[dict], None], version: int = 2) -> None:
        """Edit the record's JSON as a hand or a disk fault might. ``version=1`` makes it
        an old record without a checksum first, so only the structural checks can tell."""
        body = json.loads(self.record_path.read_bytes())
        if version == 1:
            body["version"] = 1
            del body["checksum"]
        change(body)
        self.record_path.write_text(json.dumps(body, separators=(",", ":")))

    def cli(self, *args: str):
        return run_cli(args[0], "-r", str(self.repo), *args[1:])


@pytest.fixture
def recorded(repo: Repository, tmp_path: Path) -> Recorded:
    image = write_image(tmp_path / "disk.img", 3 * MiB, "mixed", seed=11)
    record = repo.backup(image)
    assert len(record.blocks) >= 3, "the test needs several manifest blocks"
    repo.close()
    return Recorded(repo.root, image, record.id)


def set_offset_digit(body: dict) -> None:
    """`…,43787788]` -> `…,43787780]`: the last digit of the second block's offset."""
    offset = body["blocks"][1][1]
    body["blocks"][1][1] = offset - offset % 10 + (offset % 10 + 5) % 10


def assert_restore_and_check_refuse(recorded: Recorded, tmp_path: Path, *fragments: str):
    target = tmp_path / "out" / "restored.img"
    target.parent.mkdir()
    restore = recorded.cli("restore", recorded.snapshot_id, str(target))
    assert_one_line_error(restore, EXIT_FAILURE, recorded.snapshot_id[:8], *fragments)
    assert list(target.parent.iterdir()) == [], "a refused restore left a file behind"
    cat = recorded.cli("cat", recorded.snapshot_id)
    assert_one_line_error(cat, EXIT_FAILURE, recorded.snapshot_id[:8])
    assert cat.stdout == recorded.image.read_bytes()[: len(cat.stdout)]

    check = recorded.cli("check")
    assert check.returncode == EXIT_FAILURE, check.stdout.decode() + check.stderr.decode()
    assert recorded.snapshot_id[:8] in check.stdout.decode() + check.stderr.decode()


@pytest.mark.parametrize("version", [2, 1])
def test_edited_block_offset_digit_is_refused_by_restore_cat_and_check(
        recorded: Recorded, tmp_path: Path, version: int):
    recorded.edit(set_offset_digit, version)
    assert_restore_and_check_refuse(recorded, tmp_path)


@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("delta", [1, -1])
def test_size_edited_by_one_byte_is_refused_by_restore_cat_and_check(
        recorded: Recorded, tmp_path: Path, version: int, delta: int):
    recorded.edit(lambda body: body.update(size=body["size"] + delta), version)
    assert_restore_and_check_refuse(recorded, tmp_path)


@pytest.mark.parametrize("field, value", [("name", "someone-else"),
                                          ("time", "2020-01-01T00:00:00+00:00"),
                                          ("tags", ["kept-forever"])])
def test_edited_non_structural_field_fails_the_checksum(recorded: Recorded, tmp_path: Path,
                                                       field: str, value):
    recorded.edit(lambda body: body.update({field: value}))
    assert_restore_and_check_refuse(recorded, tmp_path, "checksum mismatch",
                                    recorded.record_path.name)
    info = recorded.cli("info", recorded.snapshot_id)
    assert_one_line_error(info, EXIT_FAILURE, recorded.record_path.name, "checksum mismatch")


def swap_block_digests(body: dict) -> None:
    blocks = body["blocks"]
    blocks[0][0], blocks[1][0] = blocks[1][0], blocks[0][0]


def drop_last_block(body: dict) -> None:
    body["blocks"].pop()


def shift_first_block(body: dict) -> None:
    body["blocks"][0][1] = 512


def repeat_a_block_offset(body: dict) -> None:
    body["blocks"][2][1] = body["blocks"][1][1]


@pytest.mark.parametrize("change", [swap_block_digests, drop_last_block, shift_first_block,
                                    repeat_a_block_offset])
@pytest.mark.parametrize("version", [2, 1])
def test_other_edits_of_the_block_list_are_refused(recorded: Recorded, tmp_path: Path,
                                                   change, version: int):
    recorded.edit(change, version)
    assert_restore_and_check_refuse(recorded, tmp_path)


def test_record_copied_under_another_id_is_refused(recorded: Recorded, tmp_path: Path):
    copy = recorded.record_path.with_name("0123456789abcdef.json")
    copy.write_bytes(recorded.record_path.read_bytes())
    result = recorded.cli("info", "0123456789abcdef")
    assert_one_line_error(result, EXIT_FAILURE, copy.name, recorded.snapshot_id)
    check = recorded.cli("check")
    assert check.returncode == EXIT_FAILURE
    assert copy.name in check.stdout.decode() + check.stderr.decode()


def test_version_1_record_without_checksum_still_restores_bit_exact(recorded: Recorded,
                                                                   tmp_path: Path):
    recorded.edit(lambda body: None, version=1)
    target = tmp_path / "restored.img"
    restore = recorded.cli("restore", recorded.snapshot_id, str(target))
    assert restore.returncode == 0, restore.stderr.decode()
    assert target.read_bytes() == recorded.image.read_bytes()
    check = recorded.cli("check")
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_new_records_carry_a_checksum_of_their_canonical_json(recorded: Recorded):
    body = json.loads(recorded.record_path.read_bytes())
    assert body["version"] == 2 and len(body["checksum"]) == 64


@pytest.mark.parametrize("delta", [1, -1])
def test_random_access_reader_and_diff_refuse_a_block_that_does_not_fill_its_range(
        recorded: Recorded, delta: int):
    """The mount, ls and pull read through the image reader; diff reads manifests alone."""
    recorded.edit(lambda body: body.update(size=body["size"] + delta), version=1)
    with Repository.open(recorded.repo) as repository:
        record = repository.find_snapshot(recorded.snapshot_id)
        reader = repository.open_image(record)
        assert reader.read(0, 4096) == recorded.image.read_bytes()[:4096]  # first block fine
        with pytest.raises(CorruptData, match=f"{record.short_id}.*byte offset "
                                              f"{record.blocks[-1].offset}"):
            reader.read(record.size - 1, 1)
        other = repository.backup(recorded.image, name="again")
        with pytest.raises(CorruptData, match=record.short_id):
            repository.diff(record, other)
