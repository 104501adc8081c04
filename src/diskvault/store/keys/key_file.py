"""The repository key file: the master key, sealed under a key derived from the passphrase.

Layout (JSON, UTF-8; the repository will keep it as ``keys/repokey``)::

    {"format": "diskvault-key", "version": 1,
     "kdf": {"algorithm": "argon2id", "time_cost": 4, "memory_kib": 65536,
             "parallelism": 1, "salt": "<base64, 16 bytes>"},
     "cipher": "aes-256-gcm",
     "sealed_master_key": "<base64: nonce | ciphertext | tag>",
     "checksum": "<blake3 hex of the canonical JSON of every other field>"}

The checksum tells a damaged file (KeyFileDamaged) from a wrong passphrase
(WrongPassphrase): without it, both would look like a failed decryption. The KDF
settings are sealed as associated data of the master key. Changing the passphrase
reseals the same master key, so no data is rewritten.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import textwrap
from dataclasses import asdict, dataclass

import blake3
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import KeyFileDamaged, WrongPassphrase, WrongRepositoryKey
from ..format.crypto import CIPHER_NAME, KEY_BYTES, NONCE_BYTES, Keys

KEY_FORMAT = "diskvault-key"
KEY_VERSION = 1
KDF_ALGORITHM = "argon2id"
SALT_BYTES = 16
SEALED_MASTER_BYTES = NONCE_BYTES + KEY_BYTES + 16

# Sized on this machine (2 shared cores): time_cost 4 over 64 MiB with one lane takes about
# 0.5 s (0.39 s at 3, 0.54 s at 4; two lanes were no faster here). See docs/encryption.md.
DEFAULT_TIME_COST = 4
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_PARALLELISM = 1

# Unlocking runs the KDF with the settings found in the file; bounds keep a planted key
# file from asking for 1 TiB of memory or a day of work.
MAX_TIME_COST = 64
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_PARALLELISM = 16

# Set to 1 to make new key files with a cheap KDF (tests that run the CLI in subprocesses);
# never in production: the file records the weak settings and keeps them.
TEST_KDF_VARIABLE = "DISKVAULT_INSECURE_TEST_KDF"

EXPORT_BEGIN = "-----BEGIN DISKVAULT REPOSITORY KEY-----"
EXPORT_END = "-----END DISKVAULT REPOSITORY KEY-----"


@dataclass(frozen=True)
class KdfParams:
    """argon2id settings; ``memory_kib`` in KiB as argon2 counts it."""

    time_cost: int = DEFAULT_TIME_COST
    memory_kib: int = DEFAULT_MEMORY_KIB
    parallelism: int = DEFAULT_PARALLELISM
    algorithm: str = KDF_ALGORITHM

    @classmethod
    def cheap(cls) -> "KdfParams":
        """For tests only: milliseconds, not half a second."""
        return cls(time_cost=1, memory_kib=64, parallelism=1)

    @classmethod
    def for_new_key(cls, environ: dict[str, str] | None = None) -> "KdfParams":
        environ = os.environ if environ is None else environ
        return cls.cheap() if environ.get(TEST_KDF_VARIABLE) == "1" else cls()

    def problem(self) -> str | None:
        """What is wrong with these settings, or None."""
        if not all(type(value) is int for value in (self.time_cost, self.memory_kib,
                                                    self.parallelism)):
            return "its KDF settings are not whole numbers"
        if self.algorithm != KDF_ALGORITHM:
            return f"its KDF {self.algorithm!r} is not {KDF_ALGORITHM}"
        if not 1 <= self.time_cost <= MAX_TIME_COST:
            return f"its KDF time_cost {self.time_cost} is outside 1..{MAX_TIME_COST}"
        if not 1 <= self.parallelism <= MAX_PARALLELISM:
            return f"its KDF parallelism {self.parallelism} is outside 1..{MAX_PARALLELISM}"
        if not 8 * self.parallelism <= self.memory_kib <= MAX_MEMORY_KIB:
            return (f"its KDF memory_kib {self.memory_kib} is outside "
                    f"{8 * self.parallelism}..{MAX_MEMORY_KIB}")
        return None


def derive_passphrase_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    try:
        return hash_secret_raw(passphrase.encode("utf-8"), salt, time_cost=params.time_cost,
                               memory_cost=params.memory_kib, parallelism=params.parallelism,
                               hash_len=KEY_BYTES, type=Type.ID)
    except HashingError as error:  # e.g. out of memory; names no secret
        raise KeyFileDamaged(f"key file's KDF could not run: {error}") from None


def _sealing_context(params: KdfParams, salt: bytes) -> bytes:
    """Associated data of the sealed master key: the settings it was sealed under."""
    return canonical_json({"format": KEY_FORMAT, "version": KEY_VERSION,
                       "kdf": _kdf_fields(params, salt), "cipher": CIPHER_NAME})


def _kdf_fields(params: KdfParams, salt: bytes) -> dict:
    return {**asdict(params), "salt": base64.b64encode(salt).decode("ascii")}


def canonical_json(body: dict) -> bytes:
    """Sorted keys, no spaces: the bytes the checksum and the sealing context cover."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _seal_master(keys: Keys, passphrase: str, params: KdfParams) -> bytes:
    salt = secrets.token_bytes(SALT_BYTES)
    wrapping_key = derive_passphrase_key(passphrase, salt, params)
    nonce = os.urandom(NONCE_BYTES)  # a fresh salt gives a fresh wrapping key anyway
    sealed = nonce + AESGCM(wrapping_key).encrypt(nonce, keys.master_key,
                                                  _sealing_context(params, salt))
    body = {"format": KEY_FORMAT, "version": KEY_VERSION, "kdf": _kdf_fields(params, salt),
            "cipher": CIPHER_NAME,
            "sealed_master_key": base64.b64encode(sealed).decode("ascii")}
    body["checksum"] = blake3.blake3(canonical_json(body)).hexdigest()
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")


def new_key_file(passphrase: str, kdf: KdfParams | None = None) -> tuple[bytes, Keys]:
    """A new random master key and the key file that keeps it under ``passphrase``."""
    keys = Keys.generate()
    return _seal_master(keys, passphrase, kdf or KdfParams.for_new_key()), keys


@dataclass(frozen=True)
class KeyFile:
    """A parsed, checksum-verified key file (nothing secret in it)."""

    params: KdfParams
    salt: bytes
    sealed_master_key: bytes


def parse_key_file(data: bytes) -> KeyFile:
    """KeyFileDamaged naming the first problem; no passphrase needed."""
    def damaged(problem: str) -> KeyFileDamaged:
        return KeyFileDamaged(f"repository key file is damaged: {problem}; restore it from "
                              f"a 'diskvault key export' with 'diskvault key import'")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise damaged("it is not JSON") from None
    if not isinstance(body, dict) or body.get("format") != KEY_FORMAT:
        raise damaged("it is not a diskvault key file")
    if body.get("version") != KEY_VERSION:
        raise damaged(f"its version {body.get('version')!r} is not {KEY_VERSION}; "
                      f"a newer diskvault may read it")
    checksum = body.pop("checksum", None)
    expected = blake3.blake3(canonical_json(body)).hexdigest()
    if not isinstance(checksum, str) or not secrets.compare_digest(checksum, expected):
        raise damaged("its checksum does not match its contents")
    try:
        kdf = dict(body["kdf"])
        salt = base64.b64decode(kdf.pop("salt"), validate=True)
        params = KdfParams(**kdf)
        sealed = base64.b64decode(body["sealed_master_key"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise damaged("a field is missing or malformed") from None
    problem = params.problem()
    if problem is None and body.get("cipher") != CIPHER_NAME:
        problem = f"its cipher {body.get('cipher')!r} is not {CIPHER_NAME}"
    if problem is None and (len(salt) != SALT_BYTES or len(sealed) != SEALED_MASTER_BYTES):
        problem = "its salt or sealed key has the wrong length"
    if problem:
        raise damaged(problem)
    return KeyFile(params=params, salt=salt, sealed_master_key=sealed)


def unlock(key_file: bytes, passphrase: str) -> Keys:
    """The repository's keys; WrongPassphrase if ``passphrase`` does not open the file."""
    parsed = parse_key_file(key_file)
    wrapping_key = derive_passphrase_key(passphrase, parsed.salt, parsed.params)
    sealed = parsed.sealed_master_key
    try:
        master = AESGCM(wrapping_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                              _sealing_context(parsed.params, parsed.salt))
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase for the repository key: check "
                              "DISKVAULT_PASSWORD, DISKVAULT_PASSWORD_FILE or "
                              "DISKVAULT_PASSWORD_COMMAND, or type it again") from None
    return Keys(master)


def change_passphrase(key_file: bytes, old_passphrase: str, new_passphrase: str,
                      kdf: KdfParams | None = None) -> bytes:
    """A key file keeping the same master key under ``new_passphrase`` (fresh salt; the old
    file's KDF settings unless ``kdf`` is given). Data sealed before stays readable."""
    keys = unlock(key_file, old_passphrase)
    return _seal_master(keys, new_passphrase, kdf or parse_key_file(key_file).params)


def export_key(key_file: bytes, repository_id: str) -> str:
    """A printable export: the key file (base64, 64 columns) and the repository it opens.

    The export is as safe as the key file (it still needs the passphrase); keep it
    somewhere other than the repository."""
    parse_key_file(key_file)  # never export a damaged file
    lines = textwrap.wrap(base64.b64encode(key_file).decode("ascii"), 64)
    return "\n".join([EXPORT_BEGIN, f"Repository: {repository_id}", "", *lines,
                      EXPORT_END]) + "\n"


def import_key(export: str, repository_id: str) -> bytes:
    """The key file bytes from an export; WrongRepositoryKey if it is another repository's,
    KeyFileDamaged if the export is not whole."""
    match = re.search(re.escape(EXPORT_BEGIN) + r"\s*Repository:\s*([0-9a-f]+)\s*\n(.*?)"
                      + re.escape(EXPORT_END), export, re.DOTALL)
    if match is None:
        raise KeyFileDamaged("key export is not whole: its BEGIN, Repository or END line "
                             "is missing")
    exported_id, payload = match.group(1), match.group(2)
    if exported_id != repository_id:
        raise WrongRepositoryKey(f"key export is for repository {exported_id}, not "
                                 f"{repository_id}: import the export of this repository")
    try:
        key_file = base64.b64decode("".join(payload.split()), validate=True)
    except binascii.Error:
        raise KeyFileDamaged("key export is damaged: its key lines are not base64") from None
    parse_key_file(key_file)
    return key_file
