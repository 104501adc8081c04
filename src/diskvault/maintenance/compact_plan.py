"""Compaction's plan: which packs go as they are, which are rewritten, what that frees.

Planning reads (pack footers, the index, the reference counts) and writes nothing, so the
same plan serves ``compact --dry-run`` and the compaction that carries it out
(compact.py). A pack under review is

- deleted when nothing in it is in use (no copy needed),
- rewritten when more of it than the threshold is unused, or it was doomed by an earlier
  run and a backup reused a chunk of it since: its live records are copied to new packs,
  then it is deleted,
- kept otherwise, its unused and total bytes remembered so that it is not reviewed again
  until one of its chunks dies.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import BadInput, CorruptData
from ..store.format.packs import ENTRY, PackEntry, read_footer
from ..store.storage import Storage
from .verify import read_windows

log = logging.getLogger(__name__)

# Rewrite a pack once more than this share of it is unused. A record counts with its footer
# entry, so after compact: pack bytes <= a fresh repository's / (1 - threshold) + 52 per pack.
DEFAULT_THRESHOLD = 0.2


class LivenessView(Protocol):
    """What planning asks of the reference counts: Liveness (reconciled) or its preview."""

    def used(self, digests: Sequence[bytes]) -> list[bool]: ...

    def doomed(self) -> set[str]: ...

    def packs_to_review(self, known_packs: Collection[str], threshold: float) -> list[str]: ...


@dataclass(frozen=True)
class PackFate:
    pack_id: str
    file_size: int
    live_records: int = 0
    live_bytes: int = 0  # what the live records take: stored bytes and footer entries
    range_reads: int = 0  # reads that copying the live records out takes


@dataclass
class CompactionPlan:
    threshold: float
    packs_reviewed: int = 0
    delete: list[PackFate] = field(default_factory=list)   # nothing in use
    rewrite: list[PackFate] = field(default_factory=list)  # live records copied, then deleted
    keep: dict[str, tuple[int, int]] = field(default_factory=dict)  # unused, total bytes
    vanished: list[str] = field(default_factory=list)  # deleted by a stopped compact
    damaged: list[str] = field(default_factory=list)   # footer unreadable: left alone

    @property
    def records_to_copy(self) -> int:
        return sum(p.live_records for p in self.rewrite)

    @property
    def bytes_to_copy(self) -> int:
        """Bytes of the copies, without each new pack's 52 bytes of head and trailer."""
        return sum(p.live_bytes for p in self.rewrite)

    @property
    def bytes_to_delete(self) -> int:
        """File bytes of the packs to delete (once no reader runs)."""
        return sum(p.file_size for p in self.delete + self.rewrite)

    @property
    def bytes_to_free(self) -> int:
        return self.bytes_to_delete - self.bytes_to_copy


def record_cost(entry: PackEntry) -> int:
    """What a record takes in its pack: its bytes and its footer entry."""
    return entry.stored_size + ENTRY.size


def validate_threshold(threshold: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise BadInput(f"compaction threshold must be at least 0 % and below 100 %, "
                       f"got {threshold * 100:g} %")


def plan_compaction(storage: Storage, liveness: LivenessView,
                    threshold: float) -> CompactionPlan:
    """Review the packs that may hold unused data; see the module docstring."""
    validate_threshold(threshold)
    plan = CompactionPlan(threshold)
    doomed = liveness.doomed()
    plan.vanished = [p for p in sorted(doomed) if not pack_exists(storage, p)]
    known = storage.index.known_packs() - set(plan.vanished)
    for pack_id in liveness.packs_to_review(known, threshold):
        entries = pack_footer(storage, pack_id)
        if entries is None:
            plan.damaged.append(pack_id)
            continue
        plan.packs_reviewed += 1
        live = live_records(storage, liveness, pack_id, entries)
        total = sum(record_cost(e) for e in entries)
        unused = total - sum(record_cost(e) for e in live)
        if live and pack_id not in doomed and unused <= threshold * total:
            plan.keep[pack_id] = (unused, total)
            continue
        fate = PackFate(pack_id, storage.packs.size(pack_id), len(live),
                        total - unused, sum(1 for _ in read_windows(live)))
        (plan.rewrite if live else plan.delete).append(fate)
    return plan


def pack_footer(storage: Storage, pack_id: str) -> list[PackEntry] | None:
    """The pack's entries, or None for a damaged or missing pack (left alone)."""
    try:
        return read_footer(storage.packs, pack_id)
    except (CorruptData, FileNotFoundError) as error:
        log.warning("pack %s was left as it is: %s; run 'diskvault check'", pack_id,
                    error if isinstance(error, CorruptData) else "it is missing")
        return None


def live_records(storage: Storage, liveness: LivenessView, pack_id: str,
                 entries: list[PackEntry]) -> list[PackEntry]:
    """The records that are the indexed copy of their chunk, a chunk some snapshot uses."""
    used = liveness.used([entry.digest for entry in entries])
    in_use = [entry for entry, is_used in zip(entries, used) if is_used]
    # Only a record in use is looked up in the index: a chunk freed costs one lookup here.
    here = storage.index.indexed_here(pack_id, in_use)
    return [entry for entry, indexed in zip(in_use, here) if indexed]


def pack_exists(storage: Storage, pack_id: str) -> bool:
    try:
        storage.packs.size(pack_id)
        return True
    except FileNotFoundError:
        return False
