"""Sorting more fixed-size records than memory should hold, and the set of digests built on
it: records are sorted RUN_RECORDS at a time in memory, written to unlinked temporary files
(runs), and merged back in order. Runs are merged MERGE_FAN_IN at a time as they pile up
(level by level, so each record is rewritten only log_64 of the run count times), so the
memory held is one run and MERGE_FAN_IN read buffers, whatever the count: about 20 MiB.
The files vanish with the process, even a killed one."""

from __future__ import annotations

import heapq
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path
from typing import BinaryIO

RUN_RECORDS = 1 << 17   # records sorted in memory at once (13 MiB of 65-byte records)
MERGE_FAN_IN = 64       # runs merged at once: that many read buffers and open files
READ_BYTES = 1 << 16    # per run being merged
HELD_KEYS = 1 << 13     # keys a KeyedSums sums in memory before it writes them to runs


class SortedRuns:
    """Records of ``record_size`` bytes, added in any order, read back in byte order
    (duplicates kept). Files go to ``folder`` (a private one: O_TMPFILE, mode 0600). A
    caller that fills several at once says how many (``sharing``): each then sorts that
    share of RUN_RECORDS in memory, and the runs are that much shorter."""

    def __init__(self, record_size: int, folder: Path, sharing: int = 1):
        self.record_size = record_size
        self.folder = folder
        self.sharing = sharing
        self._buffer: list[bytes] = []
        self._levels: list[list[BinaryIO]] = []  # runs by how many merges made them

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for runs in self._levels:
            for run in runs:
                run.close()
        self._levels, self._buffer = [], []

    def add(self, record: bytes) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= max(1, RUN_RECORDS // self.sharing):
            self._spill()

    def _spill(self) -> None:
        self._buffer.sort()
        self._push(0, self._write(self._buffer))
        self._buffer = []

    def _push(self, level: int, run: BinaryIO) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(run)
        if len(self._levels[level]) == MERGE_FAN_IN:
            runs, self._levels[level] = self._levels[level], []
            merged = self._write(heapq.merge(*map(self._records, runs)))
            for run in runs:
                run.close()
            self._push(level + 1, merged)

    def _write(self, records: Iterable[bytes]) -> BinaryIO:
        run = tempfile.TemporaryFile(dir=self.folder)  # O_TMPFILE: no name, 0600
        pending: list[bytes] = []
        for record in records:
            pending.append(record)
            if len(pending) * self.record_size >= READ_BYTES:
                run.write(b"".join(pending))
                pending = []
        run.write(b"".join(pending))
        return run

    def _records(self, run: BinaryIO) -> Iterator[bytes]:
        run.flush()
        size = self.record_size
        step = READ_BYTES - READ_BYTES % size
        offset = 0
        while block := os.pread(run.fileno(), step, offset):  # no shared file position
            offset += len(block)
            for start in range(0, len(block), size):
                yield block[start:start + size]

    def __iter__(self) -> Iterator[bytes]:
        """Every record added so far, in order, from one merge of every run."""
        self._buffer.sort()
        runs = [run for level in self._levels for run in level]
        return heapq.merge(*map(self._records, runs), iter(self._buffer))


def first_of_each(records: Iterable[bytes], key_size: int) -> Iterator[bytes]:
    """The first of each group of ordered records whose first ``key_size`` bytes agree."""
    last = None
    for record in records:
        key = record[:key_size]
        if key != last:
            last = key
            yield record


class KeyedSums:
    """A few integers summed per key (per pack: its chunks, their bytes), for more keys
    than memory should hold: summed in a dict of at most HELD_KEYS keys, written to sorted
    runs whenever it fills, and read back in key order with each key's parts added up. So
    few keys cost a dict update per ``add``, and many keys a fixed amount of memory. Sums
    are kept modulo 2**64 (counts and bytes never come near; fingerprints are such sums).
    """

    def __init__(self, key_size: int, values: int, folder: Path, sharing: int = 1):
        self._row = struct.Struct(f"<{key_size}s{values}Q")
        self._key_size = key_size
        self._runs = SortedRuns(self._row.size, folder, sharing)
        self._sums: dict[bytes, list[int]] = {}

    def __enter__(self) -> KeyedSums:
        return self

    def __exit__(self, *exc) -> None:
        self._runs.close()
        self._sums = {}

    def add(self, key: bytes, *values: int) -> None:
        sums = self._sums.get(key)
        if sums is None:
            if len(self._sums) >= HELD_KEYS:
                self._spill()
            self._sums[key] = list(values)
        else:
            for number, value in enumerate(values):
                sums[number] += value

    def _spill(self) -> None:
        mask, pack = (1 << 64) - 1, self._row.pack
        for key, sums in self._sums.items():
            self._runs.add(pack(key, *(value & mask for value in sums)))
        self._sums = {}

    def __iter__(self) -> Iterator[tuple[bytes, tuple[int, ...]]]:
        """(key, its sums) in key order; what was added after a read is read next time."""
        self._spill()
        unpack, key_size, mask = self._row.unpack, self._key_size, (1 << 64) - 1
        for key, rows in groupby(self._runs, key=lambda row: row[:key_size]):
            parts = [unpack(row)[1:] for row in rows]
            yield key, tuple(sum(column) & mask for column in zip(*parts))


def joined(*streams: Iterator[tuple]) -> Iterator[tuple[object, list]]:
    """Key-ordered streams of (key, value) walked together: each key of any of them, with
    each stream's value for it (None where a stream lacks the key)."""
    heads = [next(stream, None) for stream in streams]
    numbers = range(len(streams))
    while True:
        keys = [head[0] for head in heads if head is not None]
        if not keys:
            return
        key = min(keys)
        values = [None] * len(heads)
        for number in numbers:
            head = heads[number]
            if head is not None and head[0] == key:
                values[number] = head[1]
                heads[number] = next(streams[number], None)
        yield key, values


class DigestSet:
    """A set of digests kept in sorted runs on disk (see the module docstring): a walk over
    millions of chunks holds a fixed amount of them in memory. Use it in a ``with`` block."""

    DIGEST_BYTES = 32

    def __init__(self, parent: Path, sharing: int = 1):
        self._runs = SortedRuns(self.DIGEST_BYTES, parent, sharing)
        self._count: int | None = 0

    def __enter__(self) -> DigestSet:
        return self

    def __exit__(self, *exc) -> None:
        self._runs.close()

    def add(self, digest: bytes) -> None:
        self._runs.add(digest)
        self._count = None

    def __len__(self) -> int:
        if self._count is None:
            for _ in self:
                pass
        return self._count

    def __iter__(self) -> Iterator[bytes]:
        """The digests in order, each once (counted on the way for len)."""
        count = 0
        for digest in first_of_each(self._runs, self.DIGEST_BYTES):
            count += 1
            yield digest
        self._count = count
