"""The key file: unlock, wrong passphrase, damage, passphrase change, export and import."""

from __future__ import annotations

import base64
import json

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import (EXIT_WRONG_PASSPHRASE, KeyFileDamaged, WrongPassphrase,
                              WrongRepositoryKey)
from diskvault.store.keys.key_file import (DEFAULT_MEMORY_KIB, TEST_KDF_VARIABLE, KdfParams,
                                           canonical_json, change_passphrase, export_key,
                                           import_key, new_key_file, parse_key_file, unlock)

CHEAP = KdfParams.cheap()
REPOSITORY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def key_file():
    return new_key_file("correct horse", CHEAP)


def rewrite(data: bytes, change) -> bytes:
    body = json.loads(data)
    change(body)
    return json.dumps(body).encode()


@settings(max_examples=10, deadline=None)
@given(passphrase=st.text(min_size=1, max_size=40))
def test_a_new_key_file_unlocks_with_its_passphrase(passphrase):
    data, keys = new_key_file(passphrase, CHEAP)
    assert unlock(data, passphrase) == keys


def test_the_key_file_records_its_kdf_and_holds_no_key_in_the_clear(key_file):
    data, keys = key_file
    body = json.loads(data)
    assert body["kdf"]["algorithm"] == "argon2id"
    assert body["kdf"]["memory_kib"] == CHEAP.memory_kib and len(
        base64.b64decode(body["kdf"]["salt"])) == 16
    for secret in (keys.master_key, keys.chunk_id_key, keys.encryption_key):
        assert secret not in data and secret.hex().encode() not in data
        assert base64.b64encode(secret) not in data


def test_a_new_key_file_has_the_strong_kdf_unless_the_test_variable_is_set():
    assert KdfParams.for_new_key({}).memory_kib == DEFAULT_MEMORY_KIB
    assert KdfParams.for_new_key({TEST_KDF_VARIABLE: "1"}) == CHEAP


def test_two_key_files_hold_different_master_keys():
    assert new_key_file("same", CHEAP)[1] != new_key_file("same", CHEAP)[1]


def test_a_wrong_passphrase_is_one_line_with_its_own_exit_code(key_file):
    with pytest.raises(WrongPassphrase) as caught:
        unlock(key_file[0], "Correct horse")
    assert caught.value.exit_code == EXIT_WRONG_PASSPHRASE
    assert "\n" not in str(caught.value) and "horse" not in str(caught.value)


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: b"",
    lambda data: b"not json at all",
    lambda data: json.dumps(["a", "list"]).encode(),
    lambda data: rewrite(data, lambda body: body.update(format="other")),
    lambda data: rewrite(data, lambda body: body.update(version=9)),
    lambda data: rewrite(data, lambda body: body.pop("checksum")),
    lambda data: rewrite(data, lambda body: body["kdf"].update(time_cost=2)),
    lambda data: rewrite(data, lambda body: body.update(
        sealed_master_key=body["sealed_master_key"][:-4] + "AAAA")),
], ids=["truncated", "empty", "not-json", "not-an-object", "other-format", "newer-version",
        "no-checksum", "kdf-edited", "sealed-key-edited"])
def test_a_damaged_key_file_is_named_damaged_not_a_wrong_passphrase(key_file, damage):
    with pytest.raises(KeyFileDamaged) as caught:
        unlock(damage(key_file[0]), "correct horse")
    assert "\n" not in str(caught.value)


def test_a_planted_key_file_asking_for_huge_kdf_memory_is_refused_before_running_it(key_file):
    def plant(body):
        body["kdf"]["memory_kib"] = 1 << 40
        body.pop("checksum")
        body["checksum"] = blake3.blake3(canonical_json(body)).hexdigest()
    with pytest.raises(KeyFileDamaged, match="memory_kib"):
        parse_key_file(rewrite(key_file[0], plant))


def test_a_flipped_byte_in_the_key_file_is_detected(key_file):
    data = bytearray(key_file[0])
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        with pytest.raises((KeyFileDamaged, WrongPassphrase)):
            unlock(bytes(damaged), "correct horse")


def test_changing_the_passphrase_keeps_the_master_key(key_file):
    data, keys = key_file
    changed = change_passphrase(data, "correct horse", "battery staple")
    assert unlock(changed, "battery staple") == keys
    assert json.loads(changed)["kdf"]["salt"] != json.loads(data)["kdf"]["salt"]
    with pytest.raises(WrongPassphrase):
        unlock(changed, "correct horse")


def test_changing_the_passphrase_needs_the_old_one(key_file):
    with pytest.raises(WrongPassphrase):
        change_passphrase(key_file[0], "guess", "battery staple")


def test_an_export_imports_back_to_the_same_key_file(key_file):
    export = export_key(key_file[0], REPOSITORY)
    assert export.isascii() and all(len(line) <= 64 for line in export.splitlines()[2:])
    assert REPOSITORY in export
    assert import_key(export, REPOSITORY) == key_file[0]
    assert unlock(import_key("\n  " + export.replace("\n", "\r\n"), REPOSITORY),
                  "correct horse") == key_file[1]


def test_an_export_is_refused_by_another_repository(key_file):
    export = export_key(key_file[0], REPOSITORY)
    with pytest.raises(WrongRepositoryKey, match=REPOSITORY):
        import_key(export, "fedcba9876543210fedcba9876543210")


def test_a_damaged_export_is_refused(key_file):
    export = export_key(key_file[0], REPOSITORY)
    lines = export.splitlines()
    for damaged in ("\n".join(lines[:-1]), "\n".join(lines[:3] + lines[4:]),
                    export.replace(lines[3], lines[3][:-1] + "#")):
        with pytest.raises(KeyFileDamaged):
            import_key(damaged, REPOSITORY)


def test_a_damaged_key_file_is_never_exported():
    with pytest.raises(KeyFileDamaged):
        export_key(b"{}", REPOSITORY)
