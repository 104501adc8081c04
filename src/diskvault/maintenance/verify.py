"""Reading stored records back and proving them: open (encrypted repository), decompress,
then compare the chunk id. Shared by check --read-data, repair (which records survive) and compaction
(nothing damaged is copied into a new pack)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor

from ..errors import CorruptData
from ..store.format.codec import Codec
from ..store.format.packs import PackEntry, PackStore
from ..store.pipeline import ordered_map, worker_count

WINDOW_BYTES = 8 * 1024 * 1024  # one pread per window of neighbouring records


def record_problem(codec: Codec, entry: PackEntry, stored) -> str | None:
    """Why ``stored`` is not the chunk ``entry`` names, or None when it is."""
    return codec.problem(stored, entry, entry.digest)[1]


def read_verified(backend: PackStore, codec: Codec, pack_id: str,
                  entry: PackEntry) -> bytes:
    """The stored bytes of one record, proven to be its chunk; CorruptData otherwise."""
    stored = backend.read(pack_id, entry.offset, entry.stored_size)
    problem = record_problem(codec, entry, stored)
    if problem:
        raise CorruptData(f"chunk {entry.digest.hex()[:16]} in pack {pack_id} {problem}")
    return stored


def read_windows(entries: Sequence[PackEntry]) -> Iterator[list[PackEntry]]:
    """Records in offset order, grouped so that each group is read with one pread."""
    window: list[PackEntry] = []
    for entry in sorted(entries, key=lambda e: e.offset):
        if window and entry.offset + entry.stored_size - window[0].offset > WINDOW_BYTES:
            yield window
            window = []
        window.append(entry)
    if window:
        yield window


Checked = tuple[PackEntry, memoryview, str | None]  # a record, its bytes, its problem


def verify_pack(backend: PackStore, codec: Codec, pack_id: str,
                entries: Sequence[PackEntry], pool: Executor) -> Iterator[Checked]:
    """Every record of ``entries`` with its stored bytes and its problem (None if sound),
    in offset order; windows are read and verified in parallel on ``pool``."""

    def verify_window(window: list[PackEntry]) -> list[Checked]:
        start = window[0].offset
        end = max(e.offset + e.stored_size for e in window)
        data = memoryview(backend.read(pack_id, start, end - start))
        results = []
        for entry in window:
            stored = data[entry.offset - start: entry.offset - start + entry.stored_size]
            results.append((entry, stored, record_problem(codec, entry, stored)))
        return results

    for _, results in ordered_map(pool, verify_window, read_windows(entries),
                                  window=2 * worker_count()):
        yield from results
