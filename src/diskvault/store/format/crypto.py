"""Keyed chunk ids and authenticated encryption of records: the primitives an encrypted
repository calls, with a plaintext counterpart of the same shape.

A repository holds one object that does both jobs — ``Encrypted(keys)`` or
``NoEncryption()`` — so the chunk writer, the readers and maintenance never branch on
whether the repository is encrypted. Everything here is pure: bytes in, bytes out, no
files; ``store/keys/key_file.py`` turns a passphrase and a key file into ``Keys``.

Sealed layout: nonce (12 bytes, random) | ciphertext | tag (16 bytes), AES-256-GCM.
See docs/encryption.md for the reasons, the figures and the threat model.
"""

from __future__ import annotations

import enum
import os
import secrets
from dataclasses import dataclass, field
from typing import Protocol

import blake3

from ...errors import AuthenticationFailed

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
REPOSITORY_ID_BYTES = 16
CIPHER_NAME = "aes-256-gcm"

# blake3 derive_key contexts: globally unique, hard-coded, never reused for another purpose
# (blake3's own rule). Changing one changes every chunk id or every sealed record: it
# would be a new format version.
CHUNK_ID_CONTEXT = "diskvault 2026-11-30 chunk id key v1"
ENCRYPTION_CONTEXT = "diskvault 2026-11-30 record encryption key v1"
MAC_CONTEXT = "diskvault 2026-11-30 authentication key v1"  # pack footers, the config
CHUNKER_CONTEXT = "diskvault 2026-12-07 chunker byte permutation key v1"  # format version 3

# Random 96-bit nonces, and why they are safe here. AES-GCM breaks if a nonce ever repeats
# under one key (the two plaintexts' XOR and the authentication key leak). With n messages
# under random nonces the chance of any repeat is below n^2 / 2^97 (the birthday bound).
# NIST SP 800-38D caps random-nonce use at 2^32 messages per key, where that chance is
# 2^-33. One message here is one *new* chunk (after dedup) or one manifest block, snapshot
# record, pack footer or config: at the 64 KiB average chunk, 2^32 messages is 256 TiB of
# unique compressed data in one repository, far beyond a disk-image store; at 10^9
# messages (about 60 TiB) the chance is about 10^-11. Random nonces need no counter kept
# in the repository, so many hosts may write in turn (and a restored or copied client)
# without any risk of two writers reusing a counter value, which a counter scheme has.
# A repository that could approach 2^32 records should get a new key (a rekey is future
# work); a 192-bit-nonce construction (XChaCha20-Poly1305) is not in `cryptography`.


class RecordKind(enum.IntEnum):
    """What a sealed record is; bound into its associated data so that a record of one
    kind is never accepted as another (a chunk passed off as a snapshot record, say)."""

    CHUNK = 1
    MANIFEST_BLOCK = 2
    SNAPSHOT_RECORD = 3
    PACK_FOOTER = 4
    CONFIG = 5
    LEASE = 6  # who holds a lock or reader registration; subject: the object's name
    GENERATION = 7  # a generations/<n> object; subject: its name


AD_PREFIX = b"diskvault-ad-v1"


def associated_data(kind: RecordKind, repository_id: str, subject: bytes = b"") -> bytes:
    """The associated data to seal and open a record with.

    ``repository_id`` is the config's 32 hex digits, so a record copied in from another
    repository is refused. ``subject`` names the record where it is looked up by name:
    the chunk id for a chunk or manifest block (so a record swapped with another, or
    moved under another id, is refused), the snapshot id for a snapshot record, the
    pack's name for a pack footer; empty for the config. Each field is length-prefixed
    (one byte each; a subject is at most 255 bytes), so no two different inputs encode
    alike. Callers may rely on this encoding staying fixed within format version 2.
    """
    try:
        repository = bytes.fromhex(repository_id)
    except ValueError:
        repository = b""
    if len(repository) != REPOSITORY_ID_BYTES:
        raise ValueError(f"repository id must be {REPOSITORY_ID_BYTES * 2} hex digits")
    if len(subject) > 255:
        raise ValueError("an associated-data subject is at most 255 bytes")
    return b"".join((AD_PREFIX, bytes((int(RecordKind(kind)), len(repository))), repository,
                     bytes((len(subject),)), subject))


def derive_subkey(master_key: bytes, context: str) -> bytes:
    """blake3's key derivation mode: independent 32-byte keys from one secret."""
    return blake3.blake3(master_key, derive_key_context=context).digest()


@dataclass(frozen=True, repr=False, eq=False)
class Keys:
    """A repository's secrets, all derived from the one master key that the key file keeps.

    ``repr`` names no secret, so a Keys in a log line or a traceback leaks nothing."""

    master_key: bytes
    chunk_id_key: bytes = field(init=False)
    encryption_key: bytes = field(init=False)
    mac_key: bytes = field(init=False)
    aead: object = field(init=False)  # an AESGCM: one key schedule, reused for every record

    def __post_init__(self) -> None:
        if len(self.master_key) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes")
        object.__setattr__(self, "chunk_id_key",
                           derive_subkey(self.master_key, CHUNK_ID_CONTEXT))
        object.__setattr__(self, "encryption_key",
                           derive_subkey(self.master_key, ENCRYPTION_CONTEXT))
        object.__setattr__(self, "mac_key", derive_subkey(self.master_key, MAC_CONTEXT))
        # cryptography is loaded here, by the first keys: a plaintext repository never does.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        object.__setattr__(self, "aead", AESGCM(self.encryption_key))

    @classmethod
    def generate(cls) -> "Keys":
        return cls(secrets.token_bytes(KEY_BYTES))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keys) and secrets.compare_digest(self.master_key,
                                                                  other.master_key)

    def __hash__(self) -> int:
        return hash(self.chunk_id_key)

    def __repr__(self) -> str:
        return "Keys(<secret>)"


def chunker_permutation(keys: Keys) -> bytes:
    """The keyed chunker's table (format version 3): the chunker cuts ``data.translate(table)``,
    which is FastCDC with its gear table permuted by the key. Byte values ranked by the
    keyed blake3 of the one byte: without the key, a uniformly random permutation."""
    key = derive_subkey(keys.master_key, CHUNKER_CONTEXT)
    order = sorted(range(256), key=lambda value: blake3.blake3(bytes((value,)), key=key).digest())
    table = bytearray(256)
    for rank, value in enumerate(order):
        table[value] = rank
    return bytes(table)


def chunk_id(keys: Keys, data: bytes | memoryview) -> bytes:
    """blake3 keyed with the chunk-id key: 32 bytes that reveal nothing about ``data``
    without the key, and equal for equal data under one key (so dedup works as before).
    Releases the GIL for large inputs, as plain blake3 does."""
    return blake3.blake3(data, key=keys.chunk_id_key).digest()


def seal(keys: Keys, plaintext: bytes | memoryview, associated: bytes) -> bytes:
    """nonce | AES-256-GCM(plaintext, associated) | tag, under a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + keys.aead.encrypt(nonce, plaintext, associated)


def open_sealed(keys: Keys, sealed: bytes | memoryview, associated: bytes) -> bytes:
    """The plaintext of a sealed record, or AuthenticationFailed if a single bit of it, of
    its associated data or of the key differs. The caller adds where (snapshot, offset)."""
    from cryptography.exceptions import InvalidTag  # loaded already, with the keys

    view = memoryview(sealed)
    if len(view) < SEAL_OVERHEAD_BYTES:
        raise AuthenticationFailed(f"sealed record is {len(view)} bytes, shorter than its "
                                   f"{SEAL_OVERHEAD_BYTES}-byte nonce and tag")
    try:
        return keys.aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], associated)
    except InvalidTag:
        raise AuthenticationFailed("sealed record failed authentication: it was damaged or "
                                   "altered, moved from elsewhere, or sealed under another "
                                   "key") from None


class RecordCipher(Protocol):
    """What a repository holds: chunk ids and record sealing, encrypted or not."""

    name: str
    overhead_bytes: int
    encrypted: bool
    hides_lengths: bool  # format version 3, encrypted: keyed chunker and sealed pack footers
    chunk_permutation: bytes | None  # the keyed chunker's table, None: FastCDC as published

    def chunk_id(self, data: bytes | memoryview) -> bytes: ...

    def seal(self, plaintext: bytes | memoryview, associated: bytes) -> bytes: ...

    def open_sealed(self, sealed: bytes | memoryview, associated: bytes) -> bytes: ...

    def authenticator(self, associated: bytes, data: bytes | memoryview) -> bytes: ...


class Encrypted:
    """Keyed blake3 ids and AES-256-GCM records under one repository's keys; with
    ``hides_lengths`` (format version 3) also the keyed chunker and sealed pack footers."""

    name = CIPHER_NAME
    overhead_bytes = SEAL_OVERHEAD_BYTES
    encrypted = True

    def __init__(self, keys: Keys, hides_lengths: bool = False):
        self.keys = keys
        self.hides_lengths = hides_lengths
        self.chunk_permutation = chunker_permutation(keys) if hides_lengths else None

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return chunk_id(self.keys, data)

    def seal(self, plaintext: bytes | memoryview, associated: bytes) -> bytes:
        return seal(self.keys, plaintext, associated)

    def open_sealed(self, sealed: bytes | memoryview, associated: bytes) -> bytes:
        return open_sealed(self.keys, sealed, associated)

    def authenticator(self, associated: bytes, data: bytes | memoryview) -> bytes:
        """32 bytes proving ``data`` (and ``associated``, length-prefixed, so the two never
        run into each other) unchanged: keyed blake3 under the MAC subkey."""
        hasher = blake3.blake3(associated, key=self.keys.mac_key)
        hasher.update(data)
        return hasher.digest()

    def __repr__(self) -> str:
        return f"Encrypted({CIPHER_NAME})"


class NoEncryption:
    """A plaintext repository (format version 1, or ``--encryption none``): plain blake3
    ids; sealing is the identity. Integrity then rests on the chunk digests and on the
    checksums of footers and records, as in format version 1."""

    name = "none"
    overhead_bytes = 0
    encrypted = False
    hides_lengths = False
    chunk_permutation = None

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data).digest()

    def seal(self, plaintext: bytes | memoryview, associated: bytes) -> bytes:
        return bytes(plaintext)

    def open_sealed(self, sealed: bytes | memoryview, associated: bytes) -> bytes:
        return bytes(sealed)

    def authenticator(self, associated: bytes, data: bytes | memoryview) -> bytes:
        """A plain checksum (blake3 of ``data``, as format version 1 writes): it detects
        damage, not a deliberate change."""
        return blake3.blake3(data).digest()

    def __repr__(self) -> str:
        return "NoEncryption()"
