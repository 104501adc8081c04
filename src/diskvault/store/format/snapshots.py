"""Snapshot records (one small JSON file each, written last and atomically): their fields,
their JSON with its checksum, and their names under ``snapshots/``."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath

import blake3

from ...errors import CorruptData
from .manifest import BlockRef, layout_problem

RECORD_VERSION = 2  # 2 adds the checksum; version 1 records still load
READABLE_VERSIONS = (1, 2)
CHECKSUM_KEY = "checksum"
ID_HEX_DIGITS = 16
SNAPSHOTS_PREFIX = "snapshots/"
RECORD_SUFFIX = ".json"


@dataclass
class BackupStats:
    bytes_read: int = 0          # data bytes read from the source (holes are not read)
    zero_bytes: int = 0          # bytes recorded as zero runs (holes and all-zero chunks)
    chunks: int = 0              # data chunks in the image
    new_chunks: int = 0          # chunks stored by this backup
    new_bytes: int = 0           # raw bytes of the new chunks
    stored_bytes: int = 0        # bytes the new chunks take in packs, after compression
    manifest_blocks: int = 0
    new_manifest_blocks: int = 0
    duration_s: float = 0.0


@dataclass
class SnapshotRecord:
    id: str
    name: str
    time: datetime
    source: str
    size: int
    host: str
    tags: list[str]
    stats: BackupStats
    blocks: list[BlockRef] = field(default_factory=list)
    base_id: str | None = None  # a change map's base: unchanged data was taken from it
    # Holes were chunked as the zeros they are, so every chunk but the image's last ends
    # at a real cut; False for records made before (their chunks ended at holes).
    holes_as_zeros: bool = False
    # How the image was held still while read (docs/point-in-time.md): "reflink", "lvm",
    # "checked" (read in place, unchanged by the end), "unchecked" (a device read in place).
    consistency: str | None = None
    # The dirty bitmap that counts the source's changes since this snapshot's read began
    # (backup --dirty-bitmap): the next backup with it reads only what it marks.
    dirty_bitmap: str | None = None

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(ID_HEX_DIGITS // 2)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def time_label(self) -> str:
        """Snapshot time as used in mount paths, e.g. 2026-11-22T031500Z."""
        return self.time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")

    def summary(self) -> dict:
        """Everything but the block list: what ``list``/``info --json`` print."""
        body = asdict(self)
        body.pop("blocks")
        if self.base_id is None:
            body.pop("base_id")  # absent unless a change map was used: records as before
        if not self.holes_as_zeros:
            body.pop("holes_as_zeros")  # absent in records made before: they load as ever
        if self.consistency is None:
            body.pop("consistency")  # absent in records made before and from a stream
        if self.dirty_bitmap is None:
            body.pop("dirty_bitmap")  # absent unless a dirty bitmap was named
        body["time"] = self.time.isoformat()
        return body

    def to_json(self) -> bytes:
        body = {"version": RECORD_VERSION, **self.summary(),
                "blocks": [[b.digest.hex(), b.offset] for b in self.blocks]}
        body[CHECKSUM_KEY] = record_checksum(body)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "SnapshotRecord":
        """A record proven whole (version 2: its checksum) and whose block list can describe
        its image (every version); CorruptData naming ``where`` otherwise."""
        try:
            body = json.loads(data)
            version = body.get("version")
            if version not in READABLE_VERSIONS:
                raise ValueError(f"record version {version}")
            record = cls(
                id=body["id"], name=body["name"], time=datetime.fromisoformat(body["time"]),
                source=body["source"], size=int(body["size"]), host=body["host"],
                tags=list(body["tags"]), stats=BackupStats(**body["stats"]),
                blocks=[BlockRef(bytes.fromhex(d), int(o)) for d, o in body["blocks"]],
                base_id=body.get("base_id"),
                holes_as_zeros=body.get("holes_as_zeros", False) is True,
                consistency=body.get("consistency"),
                dirty_bitmap=body.get("dirty_bitmap"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CorruptData(f"snapshot record {where} cannot be read ({error})") from None
        problem = _integrity_problem(body, record)
        if problem:
            raise CorruptData(f"snapshot record {where} is damaged: {problem}; run "
                              f"'diskvault check'")
        return record


@dataclass(frozen=True)
class SnapshotSummary:
    """What choosing a snapshot needs of a record (id, series, time), from the catalogue
    without reading it; select_snapshot takes these as it takes records."""
    id: str
    name: str
    time: datetime

    @property
    def short_id(self) -> str:
        return self.id[:8]


def series_name(source_path, name: str | None) -> str:
    """The series a backup goes into: its --name, else the source's file name."""
    return name or PurePosixPath(str(source_path)).name


def record_checksum(body: dict) -> str:
    """blake3-256 hex of the record's canonical JSON without the checksum field: keys
    sorted, no whitespace, non-ASCII escaped (docs/format.md, "Snapshot records")."""
    unsigned = {key: value for key, value in body.items() if key != CHECKSUM_KEY}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return blake3.blake3(canonical.encode("ascii")).hexdigest()


def _integrity_problem(body: dict, record: SnapshotRecord) -> str | None:
    if body["version"] >= 2:
        stored = body.get(CHECKSUM_KEY)
        expected = record_checksum(body)
        if stored != expected:
            return (f"checksum mismatch (it says {str(stored)[:16]}…, its content hashes to "
                    f"{expected[:16]}…)")
    if record.size < 0:
        return f"its size is {record.size}"
    return layout_problem(record.blocks, record.size)


def record_name(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}{RECORD_SUFFIX}"


def snapshot_id_of(name: str) -> str:
    return name[len(SNAPSHOTS_PREFIX): -len(RECORD_SUFFIX)]


def is_snapshot_id(text: str) -> bool:
    return len(text) == ID_HEX_DIGITS and all(c in "0123456789abcdef" for c in text)
