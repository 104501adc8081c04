"""Repository config and format version: read, validate, write.

The config is fixed at ``init``: chunker parameters and compression decide chunk
identities, so changing them later would silently defeat deduplication.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .durable import write_atomic
from .errors import BadInput, NotARepository, UnsupportedFormat

FORMAT_NAME = "diskvault"
FORMAT_VERSION = 1
CONFIG_FILE = "config"

KiB = 1024
MiB = 1024 * KiB


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
        if not (256 <= self.avg_bytes <= 64 * MiB) or self.avg_bytes & (self.avg_bytes - 1):
            raise BadInput(f"chunk size must be a power of two between 256 B and 64 MiB, "
                           f"got {self.avg_bytes}")
        if not (64 <= self.min_bytes <= self.avg_bytes <= self.max_bytes):
            raise BadInput("chunker sizes must satisfy 64 <= min <= avg <= max")


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
            raise BadInput(f"unknown compression {text!r}: use zstd:N (1-22) or none")
        try:
            value = int(level) if level else 3
        except ValueError:
            raise BadInput(f"compression level must be a number, got {level!r}") from None
        if not 1 <= value <= 22:
            raise BadInput(f"zstd level must be between 1 and 22, got {value}")
        return cls(codec="zstd", level=value)


@dataclass(frozen=True)
class RepositoryConfig:
    repository_id: str = field(default_factory=lambda: secrets.token_hex(16))
    chunker: ChunkerParams = ChunkerParams()
    compression: Compression = Compression()
    hash: str = "blake3-256"
    pack_target_bytes: int = 64 * MiB
    version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        body = {"format": FORMAT_NAME, **asdict(self)}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> "RepositoryConfig":
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT_NAME:
                raise ValueError("not a diskvault config")
        except (ValueError, AttributeError):
            raise NotARepository(f"{where} is not a diskvault repository (its config is not "
                                 f"diskvault's)") from None
        version = body.get("version")
        if version != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"{where} uses repository format version {version}; this diskvault reads "
                f"version {FORMAT_VERSION} only: upgrade diskvault")
        try:
            return cls(
                repository_id=body["repository_id"],
                chunker=ChunkerParams(**body["chunker"]),
                compression=Compression(**body["compression"]),
                hash=body["hash"],
                pack_target_bytes=int(body["pack_target_bytes"]),
                version=version,
            )
        except (KeyError, TypeError, ValueError):
            raise NotARepository(f"{where}: config is damaged or incomplete") from None


def read_config(root: Path) -> RepositoryConfig:
    path = root / CONFIG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotARepository(f"{root} is not a diskvault repository (no config file); "
                             f"create one with 'diskvault init -r {root}'") from None
    return RepositoryConfig.from_json(data, root)


def write_config(root: Path, config: RepositoryConfig) -> None:
    write_atomic(root / CONFIG_FILE, config.to_json())
