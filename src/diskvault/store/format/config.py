"""Repository config and format version: read, validate, write.

The config is fixed at ``init``: chunker parameters and compression decide chunk
identities, so changing them later would silently defeat deduplication.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from ...errors import BadInput, CorruptData, NotARepository, UnsupportedFormat
from ..backends.protocol import Backend

FORMAT_NAME = "diskvault"
# 2: encryption; 3: encrypted repositories also hide plaintext lengths (keyed chunker,
# sealed pack footers); docs/format.md. Versions 1 and 2 are still read and written.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
HIDES_LENGTHS_FROM_VERSION = 3
CONFIG_FILE = "config"
REPOKEY_MODE = "repokey-aes-256-gcm"
PLAINTEXT_MODE = "none"
ENCRYPTION_MODES = (REPOKEY_MODE, PLAINTEXT_MODE)
MAC_KEY = "mac"

KiB = 1024
MiB = 1024 * KiB


# Ranges a repository may be created with. The chunker's come from fastcdc_cy (which
# asserts min 64.., avg 256.., max 1024..) and from our buffers (max at most 4 x 64 MiB);
# a pack target below 4 KiB would make a pack per chunk.
MIN_CHUNK_BYTES = 64
AVG_CHUNK_RANGE = (256, 64 * MiB)
MAX_CHUNK_RANGE = (1 * KiB, 256 * MiB)
ZSTD_LEVELS = (1, 22)
CODECS = ("zstd", "none")
HASHES = ("blake3-256",)
PACK_TARGET_RANGE = (4 * KiB, 4 * 1024 * MiB)
KIND_NAMES = {int: "a whole number", str: "a text", dict: "an object", bool: "true or false"}
# S3 Object Lock: GOVERNANCE may be shortened or lifted by a user allowed to bypass it;
# COMPLIANCE by nobody until it runs out. Days as S3's own bucket defaults count them.
OBJECT_LOCK_MODES = ("governance", "compliance")
OBJECT_LOCK_DAYS_RANGE = (1, 36500)
# A pack is put while its backup runs, the snapshot's record at the end: a day more keeps
# the packs of a backup shorter than that locked at least as long as its record.
PACK_RETENTION_MARGIN = timedelta(days=1)
LEGAL_HOLD_UNTIL = datetime.max.replace(tzinfo=timezone.utc)  # held until the hold is lifted


def _span(low: int, high: int) -> str:
    return f"{low}..{high}"


@dataclass(frozen=True)
class ChunkerParams:
    min_bytes: int = 16 * KiB
    avg_bytes: int = 64 * KiB
    max_bytes: int = 256 * KiB

    @classmethod
    def from_average(cls, avg_bytes: int) -> "ChunkerParams":
        """FastCDC's usual spread: minimum a quarter, maximum four times the average."""
        return cls(min_bytes=avg_bytes // 4, avg_bytes=avg_bytes, max_bytes=avg_bytes * 4)

    def validate(self) -> None:
        """BadInput naming the first size out of its range (the caller says where)."""
        low, high = AVG_CHUNK_RANGE
        if not low <= self.avg_bytes <= high or self.avg_bytes & (self.avg_bytes - 1):
            raise BadInput(f"average chunk size (avg_bytes) {self.avg_bytes} is not a power "
                           f"of two in {_span(low, high)} (256 B to 64 MiB)")
        if not MIN_CHUNK_BYTES <= self.min_bytes <= self.avg_bytes:
            raise BadInput(f"minimum chunk size (min_bytes) {self.min_bytes} is outside "
                           f"{_span(MIN_CHUNK_BYTES, self.avg_bytes)} (64 B to the average)")
        low, high = max(MAX_CHUNK_RANGE[0], self.avg_bytes), MAX_CHUNK_RANGE[1]
        if not low <= self.max_bytes <= high:
            raise BadInput(f"maximum chunk size (max_bytes) {self.max_bytes} is outside "
                           f"{_span(low, high)} (the average, at least 1 KiB, to 256 MiB)")


@dataclass(frozen=True)
class Compression:
    codec: str = "zstd"
    level: int = 3

    @classmethod
    def parse(cls, text: str) -> "Compression":
        """Parse ``zstd:N`` (or ``none``) as given on the command line."""
        if text == "none":
            return cls(codec="none", level=0)
        codec, _, level = text.partition(":")
        if codec != "zstd":
            raise BadInput(f"unknown compression {text!r}: use zstd:N (N in "
                           f"{_span(*ZSTD_LEVELS)}) or none")
        try:
            compression = cls(codec="zstd", level=int(level) if level else 3)
        except ValueError:
            raise BadInput(f"compression level must be a number, got {level!r}") from None
        compression.validate()
        return compression

    def validate(self) -> None:
        if self.codec not in CODECS:
            raise BadInput(f"compression codec {self.codec!r} is not one of {', '.join(CODECS)}")
        if self.codec == "zstd" and not ZSTD_LEVELS[0] <= self.level <= ZSTD_LEVELS[1]:
            raise BadInput(f"zstd level {self.level} is outside {_span(*ZSTD_LEVELS)}")


@dataclass(frozen=True)
class ObjectLockSettings:
    """The retention every pack and snapshot record is put with (docs/object-lock.md)."""

    mode: str = "governance"
    days: int = 30

    def until(self, now: datetime) -> datetime:
        """The retain-until date of an object put (or extended) at ``now``."""
        return now + timedelta(days=self.days)

    def validate(self) -> None:
        if self.mode not in OBJECT_LOCK_MODES:
            raise BadInput(f"object_lock.mode {self.mode!r} is not one of "
                           f"{', '.join(OBJECT_LOCK_MODES)}")
        if not OBJECT_LOCK_DAYS_RANGE[0] <= self.days <= OBJECT_LOCK_DAYS_RANGE[1]:
            raise BadInput(f"object_lock.days {self.days} is outside "
                           f"{_span(*OBJECT_LOCK_DAYS_RANGE)}")


@dataclass(frozen=True)
class RepositoryConfig:
    repository_id: str = field(default_factory=lambda: secrets.token_hex(16))
    chunker: ChunkerParams = ChunkerParams()
    compression: Compression = Compression()
    hash: str = "blake3-256"
    pack_target_bytes: int = 64 * MiB
    version: int = FORMAT_VERSION
    encryption: str = PLAINTEXT_MODE  # version 1: always none
    mac: str = ""  # version 2, encrypted: hex authenticator of canonical_json()
    # Written only when set, so a config without them reads (and authenticates) as before.
    append_only: bool = False  # clients refuse to delete anything (docs/threat-model.md)
    object_lock: ObjectLockSettings | None = None

    @property
    def encrypted(self) -> bool:
        return self.encryption != PLAINTEXT_MODE

    @property
    def hides_lengths(self) -> bool:
        """Whether chunks are cut by the keyed chunker and pack footers sealed: fixed at
        init, like everything that decides where chunks are cut."""
        return self.encrypted and self.version >= HIDES_LENGTHS_FROM_VERSION

    def body(self) -> dict:
        """The config as JSON values, without its MAC."""
        body = {"format": FORMAT_NAME, **asdict(self)}
        del body["mac"]
        if not self.append_only:
            del body["append_only"]
        if self.object_lock is None:
            del body["object_lock"]
        if self.version == 1:
            del body["encryption"]
        else:
            body["encryption"] = {"mode": self.encryption}
        return body

    def canonical_json(self) -> bytes:
        """What the MAC covers: keys sorted, no whitespace, ASCII (as snapshot records)."""
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode("ascii")

    def to_json(self) -> bytes:
        body = self.body()
        if self.mac:
            body[MAC_KEY] = self.mac
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "RepositoryConfig":
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT_NAME:
                raise ValueError("not a diskvault config")
        except (ValueError, AttributeError):
            raise NotARepository(f"{where} is not a diskvault repository (its config is not "
                                 f"diskvault's)") from None
        version = body.get("version")
        if version not in READABLE_VERSIONS:
            raise UnsupportedFormat(
                f"{where} uses repository format version {version}; this diskvault reads "
                f"versions {READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]} only: upgrade "
                f"diskvault")
        try:
            encryption, mac = PLAINTEXT_MODE, ""
            if version >= 2:
                encryption = _setting(_setting(body, "encryption", dict), "mode", str,
                                      "encryption.")
                if encryption != PLAINTEXT_MODE:
                    mac = _setting(body, MAC_KEY, str)
            config = cls(
                repository_id=_setting(body, "repository_id", str),
                chunker=ChunkerParams(**_settings(body, "chunker", {
                    "min_bytes": int, "avg_bytes": int, "max_bytes": int})),
                compression=Compression(**_settings(body, "compression", {
                    "codec": str, "level": int})),
                hash=_setting(body, "hash", str),
                pack_target_bytes=_setting(body, "pack_target_bytes", int),
                version=version, encryption=encryption, mac=mac,
                append_only=_setting(body, "append_only", bool) if "append_only" in body
                else False,
                object_lock=ObjectLockSettings(**_settings(body, "object_lock", {
                    "mode": str, "days": int})) if "object_lock" in body else None,
            )
            config.validate()
        except BadInput as error:
            raise CorruptData(f"config of repository {where} is invalid: {error}; it was "
                              f"edited or damaged: put back the values it was created with "
                              f"(see docs/format.md)") from None
        return config

    def validate(self) -> None:
        """BadInput naming the first setting out of its range."""
        if not re.fullmatch(r"[0-9a-f]{32}", self.repository_id):
            raise BadInput(f"repository_id {self.repository_id!r} is not 32 hex digits")
        self.chunker.validate()
        self.compression.validate()
        if self.hash not in HASHES:
            raise BadInput(f"hash {self.hash!r} is not one of {', '.join(HASHES)}")
        if not PACK_TARGET_RANGE[0] <= self.pack_target_bytes <= PACK_TARGET_RANGE[1]:
            raise BadInput(f"pack_target_bytes {self.pack_target_bytes} is outside "
                           f"{_span(*PACK_TARGET_RANGE)} (4 KiB to 4 GiB)")
        if self.encryption not in ENCRYPTION_MODES:
            raise BadInput(f"encryption.mode {self.encryption!r} is not one of "
                           f"{', '.join(ENCRYPTION_MODES)}")
        if self.version == 1 and self.encrypted:
            raise BadInput("format version 1 has no encryption")
        if self.object_lock is not None:
            self.object_lock.validate()


def _setting(body: dict, key: str, kind: type, prefix: str = ""):
    """``body[key]``, which must be a ``kind`` (a JSON true is not a number here)."""
    if key not in body:
        raise BadInput(f"{prefix}{key} is missing")
    value = body[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadInput(f"{prefix}{key} is {json.dumps(value)}, not {KIND_NAMES[kind]}")
    return value


def _settings(body: dict, key: str, kinds: dict[str, type]) -> dict:
    """The settings named in ``kinds`` of the group ``body[key]`` (others are ignored)."""
    group = _setting(body, key, dict)
    return {name: _setting(group, name, kind, f"{key}.") for name, kind in kinds.items()}


def read_config(backend: Backend) -> RepositoryConfig:
    where = backend.location
    try:
        data = backend.get(CONFIG_FILE)
    except FileNotFoundError:
        raise NotARepository(f"{where} is not a diskvault repository (no config file); "
                             f"create one with 'diskvault init -r {where}'") from None
    return RepositoryConfig.from_json(data, where)


def write_config(backend: Backend, config: RepositoryConfig) -> None:
    backend.put(CONFIG_FILE, config.to_json())
