"""Keyed chunk ids and sealed records: round trips, and every tampering refused."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import AuthenticationFailed, CorruptData
from diskvault.store.format.crypto import (SEAL_OVERHEAD_BYTES, Encrypted, Keys, NoEncryption,
                                           RecordKind, associated_data, chunk_id, open_sealed, seal)

REPOSITORY = "0123456789abcdef0123456789abcdef"
OTHER_REPOSITORY = "fedcba9876543210fedcba9876543210"
KEYS = Keys.generate()


def chunk_ad(data: bytes, repository: str = REPOSITORY,
             kind: RecordKind = RecordKind.CHUNK) -> bytes:
    return associated_data(kind, repository, chunk_id(KEYS, data))


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=4096), kind=st.sampled_from(RecordKind),
       subject=st.binary(max_size=64))
def test_sealed_record_opens_to_its_plaintext(plaintext, kind, subject):
    associated = associated_data(kind, REPOSITORY, subject)
    sealed = seal(KEYS, plaintext, associated)
    assert len(sealed) == len(plaintext) + SEAL_OVERHEAD_BYTES
    assert open_sealed(KEYS, sealed, associated) == plaintext


@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(max_size=1024))
def test_both_ciphers_round_trip_through_one_interface(plaintext):
    for cipher in (Encrypted(KEYS), NoEncryption()):
        associated = associated_data(RecordKind.CHUNK, REPOSITORY, cipher.chunk_id(plaintext))
        sealed = cipher.seal(memoryview(plaintext), associated)
        assert len(sealed) == len(plaintext) + cipher.overhead_bytes
        assert cipher.open_sealed(sealed, associated) == plaintext


def test_sealing_the_same_plaintext_twice_gives_different_records():
    associated = chunk_ad(b"same")
    assert seal(KEYS, b"same", associated) != seal(KEYS, b"same", associated)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=512), data=st.data())
def test_a_flipped_bit_anywhere_in_a_sealed_record_is_refused(plaintext, data):
    associated = chunk_ad(plaintext)
    sealed = bytearray(seal(KEYS, plaintext, associated))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(AuthenticationFailed):
        open_sealed(KEYS, bytes(sealed), associated)


def test_a_truncated_or_empty_record_is_refused():
    associated = chunk_ad(b"data")
    sealed = seal(KEYS, b"data", associated)
    for short in (sealed[:-1], sealed[:SEAL_OVERHEAD_BYTES - 1], b""):
        with pytest.raises(AuthenticationFailed):
            open_sealed(KEYS, short, associated)


def test_a_record_swapped_with_another_chunk_of_the_same_length_is_refused():
    first, second = b"A" * 100, b"B" * 100
    sealed_second = seal(KEYS, second, chunk_ad(second))
    with pytest.raises(AuthenticationFailed):
        open_sealed(KEYS, sealed_second, chunk_ad(first))


def test_a_record_of_another_kind_is_refused():
    sealed = seal(KEYS, b"{}", chunk_ad(b"{}", kind=RecordKind.MANIFEST_BLOCK))
    with pytest.raises(AuthenticationFailed):
        open_sealed(KEYS, sealed, chunk_ad(b"{}", kind=RecordKind.SNAPSHOT_RECORD))


def test_a_record_from_another_repository_is_refused():
    sealed = seal(KEYS, b"chunk", chunk_ad(b"chunk", repository=OTHER_REPOSITORY))
    with pytest.raises(AuthenticationFailed):
        open_sealed(KEYS, sealed, chunk_ad(b"chunk"))


def test_a_record_sealed_under_another_key_is_refused():
    associated = chunk_ad(b"chunk")
    with pytest.raises(AuthenticationFailed):
        open_sealed(Keys.generate(), seal(KEYS, b"chunk", associated), associated)


def test_authentication_failure_is_corrupt_data_and_names_no_secret():
    associated = chunk_ad(b"secret plaintext")
    sealed = bytearray(seal(KEYS, b"secret plaintext", associated))
    sealed[-1] ^= 1
    with pytest.raises(CorruptData) as caught:
        open_sealed(KEYS, bytes(sealed), associated)
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert KEYS.master_key.hex() not in message and KEYS.encryption_key.hex() not in message


def test_keyed_chunk_ids_differ_from_plain_blake3_and_between_keys():
    data = b"a known block of a known file" * 100
    keyed = chunk_id(KEYS, data)
    assert len(keyed) == 32
    assert keyed == chunk_id(KEYS, bytearray(data)) == chunk_id(KEYS, memoryview(data))
    assert keyed != blake3.blake3(data).digest()
    assert keyed != chunk_id(Keys.generate(), data)
    assert NoEncryption().chunk_id(data) == blake3.blake3(data).digest()


def test_subkeys_are_distinct_and_fixed_by_the_master_key():
    again = Keys(KEYS.master_key)
    assert again == KEYS and again.chunk_id_key == KEYS.chunk_id_key
    assert len({KEYS.master_key, KEYS.chunk_id_key, KEYS.encryption_key}) == 3
    assert Keys.generate() != KEYS


def test_keys_repr_names_no_secret():
    assert repr(KEYS) == str(KEYS) == "Keys(<secret>)"
    assert KEYS.master_key.hex() not in repr(Encrypted(KEYS))


def test_associated_data_tells_every_field_apart():
    samples = {associated_data(kind, repository, subject)
               for kind in RecordKind for repository in (REPOSITORY, OTHER_REPOSITORY)
               for subject in (b"", b"\x00", b"\x00" * 32, b"\x01" * 32)}
    assert len(samples) == len(RecordKind) * 2 * 4


@pytest.mark.parametrize("repository", ["", "abc", "0123456789abcdef", "zz" * 16])
def test_associated_data_refuses_a_malformed_repository_id(repository):
    with pytest.raises(ValueError):
        associated_data(RecordKind.CONFIG, repository)
