"""The object-store requests a compaction plan will make when carried out (issue 12:
compaction reports them before it runs, ``compact --dry-run``), from the plan alone.

What compact.py does per pack: a pack to rewrite has its footer read again (a HEAD and a
GET) and its live records read in windows (verify.read_windows: one range GET each); every
pack it deletes has its footer read (HEAD, GET), its size asked (HEAD), then one DELETE. The
copies go up as new packs of about the target size: one PUT each, or a multipart upload
(create, parts, complete) above the store's part size. The fixed costs of any writer (lock,
listing, records) come on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .compact_plan import CompactionPlan

FOOTER_READ = 2     # HEAD for the size, GET of the footer's range
DELETE_COST = 4     # a footer read, a HEAD, the DELETE


@dataclass
class PlannedRequests:
    range_gets: int      # live records read out of packs to rewrite
    footer_reads: int    # each a HEAD and a GET
    new_packs: int       # packs of copies put
    put_requests: int    # their PUTs, or multipart create/part/complete requests
    deletes: int         # packs deleted
    total: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def planned_requests(plan: CompactionPlan, pack_target_bytes: int,
                     part_bytes: int) -> PlannedRequests:
    """The requests carrying out ``plan`` makes, besides a writer's fixed costs."""
    range_gets = sum(fate.range_reads for fate in plan.rewrite)
    deletes = len(plan.delete) + len(plan.rewrite)
    new_packs, put_requests = _uploads(plan.bytes_to_copy, pack_target_bytes, part_bytes)
    footer_reads = len(plan.rewrite) + deletes
    total = (range_gets + FOOTER_READ * len(plan.rewrite) + DELETE_COST * deletes
             + put_requests)
    return PlannedRequests(range_gets, footer_reads, new_packs, put_requests, deletes, total)


def _uploads(copy_bytes: int, pack_target_bytes: int, part_bytes: int) -> tuple[int, int]:
    """Packs of about ``pack_target_bytes`` holding ``copy_bytes``, and their requests."""
    if copy_bytes == 0:
        return 0, 0
    full, rest = divmod(copy_bytes, pack_target_bytes)
    sizes = [pack_target_bytes] * full + ([rest] if rest else [])
    return len(sizes), sum(_put_requests(size, part_bytes) for size in sizes)


def _put_requests(size: int, part_bytes: int) -> int:
    return 1 if size <= part_bytes else -(-size // part_bytes) + 2
