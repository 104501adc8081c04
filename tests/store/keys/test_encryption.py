"""Encrypted repositories (format version 3, repokey): nothing in the clear, every record
authenticated and bound to its id and its repository, the key file's commands, and the
plaintext formats (version 1, and 2 without encryption) still working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from diskvault.errors import AuthenticationFailed, CorruptData, WrongPassphrase, WrongRepositoryKey
from diskvault.maintenance.check import check
from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE
from diskvault.store.format.packs import FLAG_SEALED, TRAILER, PackStore, read_footer
from diskvault.store.format.snapshots import record_name
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, TEST_PASSPHRASE, run_cli, write_image

MiB = 1024 * 1024
MARKER = b"DISKVAULT-PLAINTEXT-MARKER-7f3a"


def new_repo(root: Path, encryption: str = REPOKEY_MODE, compression: str = "none",
             **options) -> Repository:
    return Repository.init(root, chunk_size=SMALL_CHUNKS, compression=compression,
                           encryption=encryption, passphrase=TEST_PASSPHRASE, **options)


def marker_image(path: Path) -> Path:
    """Random data with the marker written every 4 KiB: in every chunk, uncompressed."""
    write_image(path, 2 * MiB, "random", seed=5)
    with open(path, "r+b") as handle:
        for offset in range(0, 2 * MiB, 4096):
            handle.seek(offset)
            handle.write(MARKER)
    return path


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def restored(repository: Repository, selector: str, target: Path) -> bytes:
    repository.restore(repository.find_snapshot(selector), target, force=True)
    return target.read_bytes()


def data_pack(root: Path) -> tuple[str, Path]:
    """The pack of the one backup's data chunks (the other holds its manifest blocks)."""
    packs = PackStore(LocalBackend(root))
    pack_id = max(packs.list(), key=packs.size)
    return pack_id, root / "packs" / pack_id[:2] / f"{pack_id}.pack"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def encrypted(tmp_path: Path):
    """An encrypted repository (no compression, so plaintext would show) holding one
    snapshot of the marker image, closed; yields (root, image, snapshot id)."""
    image = marker_image(tmp_path / "secret.img")
    with new_repo(tmp_path / "repo") as repository:
        record = repository.backup(image, name=f"series-{MARKER.decode()}",
                                   tags=(MARKER.decode(),))
    return tmp_path / "repo", image, record.id


def test_no_file_of_an_encrypted_repository_holds_plaintext(encrypted, tmp_path: Path):
    root, image, _ = encrypted
    assert files_containing(root, MARKER) == []
    # The control: the same image in a plaintext repository shows the marker.
    with new_repo(tmp_path / "plain", PLAINTEXT_MODE) as plain:
        plain.backup(image)
    assert files_containing(tmp_path / "plain", MARKER)
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        assert restored(repository, "latest", tmp_path / "out.img") == image.read_bytes()
        assert repository.list_snapshots()[0].tags == [MARKER.decode()]


def test_every_record_of_an_encrypted_repository_is_flagged_sealed(encrypted):
    root, _, _ = encrypted
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        packs = repository.storage.packs
        entries = [e for pack_id in packs.list() for e in read_footer(packs, pack_id)]
    assert entries and all(entry.flags & FLAG_SEALED for entry in entries)


def test_wrong_passphrase_is_refused_before_anything_is_read(encrypted):
    root, _, _ = encrypted
    with pytest.raises(WrongPassphrase):
        Repository.open(root, "not the passphrase")


def test_cli_wrong_or_missing_passphrase_is_one_line_with_exit_12_or_2(encrypted):
    root, _, _ = encrypted
    wrong = run_cli("list", "-r", str(root), env={"DISKVAULT_PASSWORD": "nope"})
    assert wrong.returncode == 12
    assert wrong.stderr.decode().count("\n") == 1 and b"Traceback" not in wrong.stderr
    assert b"wrong passphrase" in wrong.stderr
    env = {key: value for key, value in os.environ.items() if key != "DISKVAULT_PASSWORD"}
    missing = run_cli_without_terminal("list", "-r", str(root), env=env)
    assert missing.returncode == 2
    assert missing.stderr.decode().count("\n") == 1 and b"DISKVAULT_PASSWORD" in missing.stderr


def run_cli_without_terminal(*args: str, env: dict):
    """The command with exactly ``env`` and no terminal to ask on."""
    return subprocess.run([sys.executable, "-m", "diskvault", *args], capture_output=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)


def test_plaintext_repository_never_asks_for_a_passphrase(tmp_path: Path):
    root = tmp_path / "plain"
    assert run_cli("init", "-r", str(root), "--encryption", "none").returncode == 0
    env = {key: value for key, value in os.environ.items() if key != "DISKVAULT_PASSWORD"}
    env["DISKVAULT_PASSWORD_COMMAND"] = "false"  # would fail if it were ever run
    listed = run_cli_without_terminal("list", "-r", str(root), env=env)
    assert listed.returncode == 0, listed.stderr
    info = run_cli("info", "-r", str(root), "--json", check=True)
    assert json.loads(info.stdout)["repository"]["encryption"] == "none"


def test_flipped_byte_in_a_chunk_record_fails_the_restore_naming_the_chunk(encrypted,
                                                                           tmp_path: Path):
    root, _, _ = encrypted
    _, path = data_pack(root)
    flip(path, 100)  # inside the first record
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        with pytest.raises(CorruptData, match="failed authentication"):
            restored(repository, "latest", tmp_path / "out.img")
        report = check(repository.storage, read_data=True)
    assert any("failed authentication" in str(problem) for problem in report.problems)


def test_flipped_byte_in_a_pack_footer_is_detected(encrypted):
    root, _, _ = encrypted
    pack_id, path = data_pack(root)
    flip(path, path.stat().st_size - TRAILER.size - 10)  # a footer entry's flags/lengths
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        with pytest.raises(CorruptData, match=f"pack {pack_id}: footer failed authentication"):
            read_footer(repository.storage.packs, pack_id)


def test_pack_footer_is_bound_to_its_pack_name(encrypted):
    root, _, _ = encrypted
    pack_id, path = data_pack(root)
    other = "ab" * 16
    (root / "packs" / "ab").mkdir(exist_ok=True)
    shutil.copy(path, root / "packs" / "ab" / f"{other}.pack")
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        read_footer(repository.storage.packs, pack_id)
        with pytest.raises(CorruptData, match="footer failed authentication"):
            read_footer(repository.storage.packs, other)


def test_flipped_byte_in_a_manifest_block_is_detected_naming_it(tmp_path: Path):
    image = write_image(tmp_path / "disk.img", MiB, "random", seed=2)
    with new_repo(tmp_path / "repo") as repository:
        record = repository.backup(image)
        block = record.blocks[0].digest
        location = repository.storage.index.lookup(block)
    path = tmp_path / "repo" / "packs" / location.pack_id[:2] / f"{location.pack_id}.pack"
    flip(path, location.offset + location.stored_size // 2)
    with Repository.open(tmp_path / "repo", TEST_PASSPHRASE) as repository:
        with pytest.raises(CorruptData, match=f"chunk {block.hex()[:16]}.*failed authentication"):
            repository.load_manifest_block(block)


def test_flipped_byte_in_a_snapshot_record_is_detected_naming_it(encrypted):
    root, _, snapshot_id = encrypted
    flip(root / record_name(snapshot_id), 40)
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        with pytest.raises(AuthenticationFailed, match=f"snapshot record .*{snapshot_id}"):
            repository.find_snapshot(snapshot_id)


def test_edited_config_of_an_encrypted_repository_is_refused(encrypted):
    root, _, _ = encrypted
    config = json.loads((root / "config").read_text())
    config["compression"]["level"] = 9
    (root / "config").write_text(json.dumps(config))
    with pytest.raises(AuthenticationFailed, match="config of repository .* failed"):
        Repository.open(root, TEST_PASSPHRASE)


def test_config_turned_to_plaintext_is_refused_while_a_key_file_exists(encrypted):
    root, _, _ = encrypted
    config = json.loads((root / "config").read_text())
    config["encryption"]["mode"] = "none"
    del config["mac"]
    (root / "config").write_text(json.dumps(config))
    with pytest.raises(CorruptData, match="holds a key file"):
        Repository.open(root, TEST_PASSPHRASE)


def turn_to_plaintext(root: Path) -> None:
    """What a writer of the repository can do: delete the key, turn the config to none."""
    (root / "keys" / "repokey").unlink()
    config = json.loads((root / "config").read_text())
    config["encryption"]["mode"] = "none"
    del config["mac"]
    (root / "config").write_text(json.dumps(config))


def test_repository_once_opened_encrypted_is_never_backed_up_in_plaintext(encrypted, tmp_path):
    root, image, _ = encrypted
    turn_to_plaintext(root)
    refused = run_cli("backup", "-r", str(root), str(image), "--name", "after")
    assert refused.returncode == 1
    assert refused.stderr.decode().count("\n") == 1 and b"Traceback" not in refused.stderr
    assert b"was opened encrypted from this account before" in refused.stderr
    assert b"put back the original config" in refused.stderr
    assert files_containing(root, MARKER) == []


def test_sealed_snapshot_records_refuse_a_plaintext_config_on_another_host(
        encrypted, tmp_path, monkeypatch):
    root, image, _ = encrypted
    turn_to_plaintext(root)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "another-host-state"))
    refused = run_cli("backup", "-r", str(root), str(image), "--name", "after")
    assert refused.returncode == 1 and b"is sealed" in refused.stderr
    assert files_containing(root, MARKER) == []


def test_a_backup_given_a_password_file_never_writes_plaintext(tmp_path):
    """Even with nothing left to show it was encrypted (every record deleted, another host):
    the command line's passphrase says the user expects an encrypted repository."""
    image = marker_image(tmp_path / "secret.img")
    (tmp_path / "pass.txt").write_text(TEST_PASSPHRASE + "\n")
    new_repo(tmp_path / "repo", PLAINTEXT_MODE).close()
    refused = run_cli("backup", "-r", str(tmp_path / "repo"), str(image),
                      "--password-file", str(tmp_path / "pass.txt"))
    assert refused.returncode == 1 and refused.stderr.decode().count("\n") == 1
    assert b"is not encrypted, but --password-file" in refused.stderr
    assert files_containing(tmp_path / "repo", MARKER) == []
    listed = run_cli("list", "-r", str(tmp_path / "repo"), "--password-file",
                     str(tmp_path / "pass.txt"))
    assert listed.returncode == 0  # reading writes nothing


def test_chunk_records_of_equal_length_swapped_are_detected(tmp_path: Path):
    image = write_image(tmp_path / "disk.img", 3 * MiB, "random", seed=8)
    with new_repo(tmp_path / "repo") as repository:
        repository.backup(image)
        pack_id, _ = data_pack(tmp_path / "repo")
        entries = read_footer(repository.storage.packs, pack_id)
    by_size = Counter(entry.stored_size for entry in entries)
    size = next(size for size, count in by_size.items() if count >= 2)
    first, second = [entry for entry in entries if entry.stored_size == size][:2]
    path = tmp_path / "repo" / "packs" / pack_id[:2] / f"{pack_id}.pack"
    data = bytearray(path.read_bytes())
    a = bytes(data[first.offset: first.offset + size])
    data[first.offset: first.offset + size] = data[second.offset: second.offset + size]
    data[second.offset: second.offset + size] = a
    path.write_bytes(bytes(data))
    with Repository.open(tmp_path / "repo", TEST_PASSPHRASE) as repository:
        for entry in (first, second):
            with pytest.raises(CorruptData, match="failed authentication"):
                repository.storage.chunks.get(entry.digest)


def test_snapshot_record_from_another_repository_or_renamed_is_refused(encrypted,
                                                                       tmp_path: Path):
    root, image, snapshot_id = encrypted
    with new_repo(tmp_path / "other") as other:
        foreign = other.backup(image)
    shutil.copy(tmp_path / "other" / record_name(foreign.id), root / record_name(foreign.id))
    shutil.copy(root / record_name(snapshot_id), root / record_name("0" * 16))
    with Repository.open(root, TEST_PASSPHRASE) as repository:
        for snapshot in (foreign.id, "0" * 16):
            with pytest.raises(AuthenticationFailed):
                repository.find_snapshot(snapshot)
        assert [r.id for r in repository.list_snapshots()] == [snapshot_id]


def test_key_export_import_round_trip(encrypted, tmp_path: Path):
    root, image, _ = encrypted
    export = tmp_path / "key.txt"
    run_cli("key", "export", "-r", str(root), str(export), check=True)
    (root / "keys" / "repokey").write_bytes(b"{damaged")
    assert run_cli("list", "-r", str(root)).returncode == 1
    run_cli("key", "import", "-r", str(root), str(export), check=True)
    out = tmp_path / "out.img"
    run_cli("restore", "-r", str(root), "latest", str(out), check=True)
    assert out.read_bytes() == image.read_bytes()


def test_key_export_of_another_repository_is_refused(encrypted, tmp_path: Path):
    root, _, _ = encrypted
    with new_repo(tmp_path / "other") as other:
        export = other.export_key()
    with pytest.raises(WrongRepositoryKey):
        Repository.import_key(root, export)


def test_change_passphrase_keeps_the_data_restorable(encrypted, tmp_path: Path):
    root, image, _ = encrypted
    run_cli("key", "change-passphrase", "-r", str(root),
            env={"DISKVAULT_NEW_PASSWORD": "a new passphrase"}, check=True)
    with pytest.raises(WrongPassphrase):
        Repository.open(root, TEST_PASSPHRASE)
    with Repository.open(root, "a new passphrase") as repository:
        assert restored(repository, "latest", tmp_path / "out.img") == image.read_bytes()


def test_version_1_repository_is_still_read_and_written(tmp_path: Path):
    image = write_image(tmp_path / "disk.img", MiB, "mixed", seed=3)
    with new_repo(tmp_path / "v1", PLAINTEXT_MODE, "zstd:3", version=1) as repository:
        repository.backup(image)
    config = json.loads((tmp_path / "v1" / "config").read_text())
    assert config["version"] == 1 and "encryption" not in config
    run_cli("backup", "-r", str(tmp_path / "v1"), str(image), check=True)
    info = json.loads(run_cli("info", "-r", str(tmp_path / "v1"), "--json",
                              check=True).stdout)
    assert info["repository"]["format_version"] == 1
    assert info["repository"]["encryption"] == "none"
    out = tmp_path / "out.img"
    run_cli("restore", "-r", str(tmp_path / "v1"), "latest", str(out), check=True)
    assert out.read_bytes() == image.read_bytes()
    assert run_cli("check", "-r", str(tmp_path / "v1"), "--read-data").returncode == 0
