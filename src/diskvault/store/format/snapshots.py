"""Snapshot records (one small JSON file each, written last and atomically): their fields,
their JSON with its checksum, and their names under ``snapshots/``."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import PurePosixPath

import blake3

from ...errors import CorruptData
from .manifest import DIGEST_BYTES, BlockList, layout_problem

RECORD_VERSION = 2  # 2 adds the checksum; version 1 records still load
READABLE_VERSIONS = (1, 2)
CHECKSUM_KEY = "checksum"
BLOCKS_KEY = b'"blocks":'
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
    # A list of BlockRef is packed; None in a header (``header()``), which has none.
    blocks: BlockList | None = field(default_factory=BlockList)
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

    def __post_init__(self):
        if self.blocks is not None and not isinstance(self.blocks, BlockList):
            self.blocks = BlockList(self.blocks)

    def header(self) -> "SnapshotRecord":
        """The record without its block list: what a command holds of every record, at a
        few hundred bytes each, where the list is ~40 B a manifest block (~2 MB a record of
        a 1 TB image). Its blocks are read again when needed (SnapshotRecords)."""
        return replace(self, blocks=None)

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
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "blocks"}
        body["tags"], body["stats"] = list(self.tags), asdict(self.stats)
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
        """The record's JSON: the block list's text written straight from its packed form
        where a placeholder stands in the body (the checksum covers the text as it is)."""
        placeholder = _placeholder()
        body = {"version": RECORD_VERSION, **self.summary(), "blocks": placeholder}
        blocks = self.blocks.json_text()
        body[CHECKSUM_KEY] = record_checksum(body, placeholder, blocks)
        before, after = json.dumps(body, separators=(",", ":")).encode().split(
            json.dumps(placeholder).encode())
        return before + blocks + after

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "SnapshotRecord":
        """A record proven whole (version 2: its checksum) and whose block list can describe
        its image (every version); CorruptData naming ``where`` otherwise."""
        try:
            body, blocks, checksum = _decoded(data)
            version = body.get("version")
            if version not in READABLE_VERSIONS:
                raise ValueError(f"record version {version}")
            record = cls(
                id=body["id"], name=body["name"], time=datetime.fromisoformat(body["time"]),
                source=body["source"], size=int(body["size"]), host=body["host"],
                tags=list(body["tags"]), stats=BackupStats(**body["stats"]),
                base_id=body.get("base_id"),
                holes_as_zeros=body.get("holes_as_zeros", False) is True,
                consistency=body.get("consistency"),
                dirty_bitmap=body.get("dirty_bitmap"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CorruptData(f"snapshot record {where} cannot be read ({error})") from None
        problem = _integrity_problem(body, checksum, record, blocks)
        if problem:
            raise CorruptData(f"snapshot record {where} is damaged: {problem}; run "
                              f"'diskvault check'")
        record.blocks = blocks
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


def record_checksum(body: dict, placeholder: str | None = None,
                    blocks: bytes | memoryview = b"") -> str:
    """blake3-256 hex of the record's canonical JSON without the checksum field: keys
    sorted, no whitespace, non-ASCII escaped (docs/format.md, "Snapshot records"). Where
    the body holds ``placeholder`` for its block list, ``blocks`` (that list's canonical
    text) is hashed in its place."""
    unsigned = {key: value for key, value in body.items() if key != CHECKSUM_KEY}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    hasher = blake3.blake3()
    parts = canonical.encode("ascii").split(json.dumps(placeholder).encode()) \
        if placeholder is not None else [canonical.encode("ascii")]
    for index, part in enumerate(parts):
        if index:
            hasher.update(blocks)
        hasher.update(part)
    return hasher.hexdigest()


def _placeholder() -> str:
    """A string no other value of a record holds: it stands for the block list's text."""
    return f"blocks-{secrets.token_hex(16)}"


def _decoded(data: bytes) -> tuple[dict, BlockList | str, str]:
    """The record's body, its block list (or why its list cannot be one) and the checksum
    its content hashes to. A list in the canonical form the encoder writes goes from the
    text straight into a BlockList, without a Python object per block; any other form is
    read the general way, so every record reads and verifies as it always has."""
    position = data.rfind(BLOCKS_KEY)
    found = BlockList.from_json_text(data, position + len(BLOCKS_KEY)) \
        if position >= 0 else None
    if found is not None:
        blocks, end = found
        placeholder = _placeholder()
        start = position + len(BLOCKS_KEY)
        body = json.loads(data[:start] + json.dumps(placeholder).encode() + data[end:])
        if isinstance(body, dict) and body.get("blocks") == placeholder:
            return body, blocks, record_checksum(body, placeholder,
                                                 memoryview(data)[start:end])
    body = json.loads(data)
    if not isinstance(body, dict):
        raise TypeError("a record is a JSON object")
    return body, _packed(body["blocks"]), record_checksum(body)


def _packed(pairs: list) -> BlockList | str:
    """``[[digest hex, offset], ...]`` as a BlockList, or why it cannot describe an image
    (ValueError where it is not even that list)."""
    blocks = BlockList()
    for digest, offset in pairs:
        digest, offset = bytes.fromhex(digest), int(offset)
        if len(digest) != DIGEST_BYTES:
            return f"the manifest block at byte offset {offset} has no valid digest"
        if not 0 <= offset < 1 << 64:
            return f"the manifest block at byte offset {offset} is outside any image"
        blocks.append(digest, offset)
    return blocks


def _integrity_problem(body: dict, checksum: str, record: SnapshotRecord,
                       blocks: BlockList | str) -> str | None:
    if body["version"] >= 2:
        stored = body.get(CHECKSUM_KEY)
        if stored != checksum:
            return (f"checksum mismatch (it says {str(stored)[:16]}…, its content hashes to "
                    f"{checksum[:16]}…)")
    if record.size < 0:
        return f"its size is {record.size}"
    if isinstance(blocks, str):
        return blocks
    return layout_problem(blocks, record.size)


def record_name(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}{RECORD_SUFFIX}"


def snapshot_id_of(name: str) -> str:
    return name[len(SNAPSHOTS_PREFIX): -len(RECORD_SUFFIX)]


def is_snapshot_id(text: str) -> bool:
    return len(text) == ID_HEX_DIGITS and all(c in "0123456789abcdef" for c in text)
